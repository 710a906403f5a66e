"""The classic tools, ctispy, ctisave and ctistat HOST: thin wrappers that parse
the classic options, start the pipeline of stage processes joined by pipes,
and wait for it as if it were one command."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from ctipipe.core import cli
from ctipipe.core import paths
from ctipipe.stages import split
from ctipipe.stages import stats as stat
from ctipipe.stages import strip

# How often the wrapper looks at its stages: it only waits, so this costs
# nothing, and a dead stage is noticed within a tenth of a second.
POLL_INTERVAL = 0.05
# How often a Ctrl-C is passed on again to a relay that has not yet acted on it.
RESEND_INTERVAL = 0.5

SPY_EXAMPLE = """\
ctispy xivo-new --pretty-print --strip timenow --include class=getlist
ctispy xivo-new --no-client --exclude function=updatestatus --loop
"""
SAVE_EXAMPLE = """\
ctisave xivo-new /tmp/cti-client /tmp/cti-server --strip timenow --strip commandid --strip replyid
"""
STAT_EXAMPLE = """\
ctistat xivo-new           # messages by class when the session ends
ctistat xivo-new -n        # bytes, packets and rates
"""


def _filter_options(parser: argparse.ArgumentParser, exclude: bool = True) -> None:
    parser.add_argument("-s", "--strip", action="append", default=[], metavar="FIELD",
                        help="remove this field from every message (repeatable; dotted paths)")
    parser.add_argument("-i", "--include", action="append", default=[], metavar="KEY=VALUE",
                        help="show only messages matching (repeatable: any of them)")
    if exclude:
        parser.add_argument("-e", "--exclude", action="append", default=[], metavar="KEY=VALUE",
                            help="hide messages matching (repeatable)")
    strip.add_redact_options(parser)


def _check_filters(parser: cli.Parser, args: argparse.Namespace) -> None:
    """Check expressions and field paths with the stages' own parser, so that a
    mistake is a usage error now, before anything listens."""
    try:
        for text in args.include + getattr(args, "exclude", []):
            paths.Expression(text)
        for field in args.strip:
            paths.field_path(field)
    except paths.ExpressionError as error:
        parser.error(str(error))


def _filter_stages(args: argparse.Namespace, side: str | None) -> list[list[str]]:
    stages = []
    if args.include or side:
        stages.append(["ctiinclude", *args.include, *(["--from", side] if side else [])])
    if getattr(args, "exclude", None):
        stages.append(["ctiexclude", *args.exclude])
    secrets = strip.secret_fields(args)
    if args.strip or secrets:
        stages.append(["ctistrip", *args.strip,
                       *(["--redact"] if secrets else []),
                       *[arg for name in args.redact_field for arg in ("--redact-field", name)]])
    return stages


# --- the relay's options, passed on whatever they are --------------------------

def add_relay_options(parser: argparse.ArgumentParser, **kwargs) -> list[argparse.Action]:
    """Add the relay's own options to a wrapper's parser; return their actions,
    from which relay_argv rebuilds the relay's command line. A new relay
    option reaches the relay without any change here."""
    from ctipipe.relay import command as relay  # here, not above: `ctistat FILE` never loads trio
    before = len(parser._actions)
    relay.add_relay_options(parser, **kwargs)
    return parser._actions[before:]


def check_relay_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The relay's own checks of its options, made by the wrapper's parser (exit 2)."""
    from ctipipe.relay import command as relay
    relay.check_relay_options(parser, args)


def relay_argv(actions: list[argparse.Action], args: argparse.Namespace) -> list[str]:
    """The relay's arguments, rebuilt from the parsed values of its options."""
    argv: list[str] = []
    for action in actions:
        value = getattr(args, action.dest)
        if not action.option_strings:  # a positional: HOST
            argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
            continue
        option = max(action.option_strings, key=len)
        if action.nargs == 0:  # a flag: store_true, store_const, count
            if isinstance(action, argparse._CountAction):
                argv += [option] * (value or 0)
            elif value != action.default:
                argv.append(option)
        elif isinstance(action, argparse._AppendAction):
            for item in value or []:
                argv += [option, str(item)]
        elif value != action.default and value is not None:
            if isinstance(value, (list, tuple)):
                argv += [option, *map(str, value)]
            else:
                argv += [option, str(value)]
    return argv


def _resolve(host: str, port: int, hint: str = "") -> None:
    """Fail in one line, before anything is created or listens, when HOST does not resolve."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        why = error.strerror if isinstance(error, socket.gaierror) else "not a host name"
        raise cli.CommandError(f"cannot resolve HOST {host!r}: {why}{hint}") from None


def run_pipeline(prog: str, stages: list[list[str]]) -> int:
    """Start `stage0 | stage1 | ...` (each `python -m ctipipe ...`), wait for all.

    The first stage is the relay. Ctrl-C from the terminal reaches every
    process of our group; a SIGINT or SIGTERM sent to the wrapper alone is
    passed on to the relay. Either way the relay closes its sessions and the
    stages downstream finish their work, so however often Ctrl-C is pressed
    the output is complete and we exit 0. The stages start with SIGINT
    ignored, so that one arriving while a stage is still starting cannot kill
    it; each sets its own rule once it runs (docs/stream.md, stage behaviour).
    If a stage (the relay included) dies, we say which, stop the others and
    exit 3; one that failed and said why (exit 1 or 2) ends us with its status.
    """
    procs: list[subprocess.Popen] = []
    # Signals received (caught from the wrapper's first lines), to pass on to the relay.
    pending = _stop_signals
    if pending:  # asked to stop before anything started: nothing to stop
        return cli.Exit.OK
    # Errors of the stages are said in the name of the command the user typed.
    env = {**os.environ, cli.COMMAND_ENV: prog}
    upstream = None
    for index, argv in enumerate(stages):
        last = index == len(stages) - 1
        proc = subprocess.Popen(cli.command_argv(*argv),
                                stdin=upstream if upstream is not None else subprocess.DEVNULL,
                                stdout=None if last else subprocess.PIPE,
                                env=env, preexec_fn=_ignore_sigint)
        if upstream is not None:
            upstream.close()  # only the stages hold the pipe ends now
        upstream = proc.stdout
        procs.append(proc)
    relay_proc = procs[0]
    names = [argv[0] for argv in stages]
    last_sent = None
    sink_failed = 0  # the status of a stage after the relay that failed and said why
    while True:
        if pending and relay_proc.poll() is None:
            # A relay still starting ignores SIGINT until it can act on it:
            # repeat the request until it is gone (each repeat is harmless).
            now = time.monotonic()
            if last_sent is None or now - last_sent > RESEND_INTERVAL:
                _send(relay_proc, pending[-1])
                last_sent = now
        states = [proc.poll() for proc in procs]
        # A stage that a stop signal ended, once we were asked to stop, stopped
        # as asked (one still starting has the default action for SIGTERM).
        stopped = {-signum for signum in pending}
        failed = [i for i, code in enumerate(states) if code not in (None, 0) and code not in stopped]
        if not sink_failed and failed and failed[0] > 0 and states[failed[0]] in (
                cli.Exit.ERROR, cli.Exit.USAGE) and states[0] is None:
            # A stage after the relay failed and said why (a full disk): the
            # sessions must not be cut for it. The relay finds its output
            # closed and goes on relaying, unrecorded, until they end.
            sink_failed = states[failed[0]]
            cli.report(prog, f"{names[failed[0]]} failed: nothing more is recorded; the relay "
                             f"goes on until its sessions end"
                             + (" (Ctrl-C to stop it)" if "--loop" in stages[0] else ""))
        if sink_failed:
            failed = [i for i in failed if i == 0 and states[0] not in (cli.Exit.ERROR,)
                      or i > 0 and states[i] not in (cli.Exit.ERROR, cli.Exit.USAGE)]
        if failed:
            i = failed[0]
            _stop_all(procs)
            if states[i] in (cli.Exit.ERROR, cli.Exit.USAGE):
                # It failed and said why (the server cannot be reached, the
                # port is taken): the pipeline failed, with the same status.
                return states[i]
            cli.report(prog, f"error: {names[i]} stopped ({_describe(states[i])}); "
                             f"stopping the pipeline")
            return cli.Exit.STAGE_FAILED
        if all(code is not None for code in states):
            return sink_failed or cli.Exit.OK
        time.sleep(POLL_INTERVAL)


# SIGINT and SIGTERM received by a wrapper, noted from its first lines on so
# that one arriving while it still parses its arguments is acted on, not fatal.
_stop_signals: list[int] = []


def _note_stop(signum, frame) -> None:
    _stop_signals.append(signum)


def _catch_stop_signals() -> None:
    signal.signal(signal.SIGINT, _note_stop)
    signal.signal(signal.SIGTERM, _note_stop)


def _ignore_sigint() -> None:  # runs in the child, before exec
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _send(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 5
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _display_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretty-print", action="store_true", help="indent each message")
    parser.add_argument("--compact", action="store_true",
                        help="each message on one line (the default; accepted for habit)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colours: auto (default) when writing to a terminal and NO_COLOR "
                             "is not set")


def main_spy(argv: list[str] | None = None) -> int:
    _catch_stop_signals()
    prog = "ctispy"
    parser = cli.Parser(prog, "Show a CTI session live: clients connect here and are relayed "
                        "to HOST. Runs ctirelay | [filters] | ctipretty.", SPY_EXAMPLE)
    relay_actions = add_relay_options(parser)
    _display_options(parser)
    sides = parser.add_mutually_exclusive_group()
    sides.add_argument("--no-client", action="store_true", help="hide what the client sends")
    sides.add_argument("--no-server", action="store_true", help="hide what the server sends")
    _filter_options(parser)
    args = parser.parse_args(argv)
    check_relay_options(parser, args)
    _check_filters(parser, args)
    if args.raw and (args.strip or args.include or args.exclude or strip.secret_fields(args)):
        parser.error("--raw shows the traffic undecoded: it cannot be used with "
                     "--strip, --include, --exclude or --redact")
    if args.pretty_print and args.compact:
        parser.error("--pretty-print and --compact: choose one")
    side = "server" if args.no_client else "client" if args.no_server else None
    stages = [["ctirelay", *relay_argv(relay_actions, args)], *_filter_stages(args, side),
              ["ctipretty", "--color", args.color, *([] if args.pretty_print else ["--compact"]),
               *(["--tag-sessions"] if args.loop else [])]]

    def body() -> int:
        _resolve(args.host, args.port)
        return run_pipeline(prog, stages)

    return cli.guarded(prog, body, debug=args.debug)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def main_save(argv: list[str] | None = None) -> int:
    _catch_stop_signals()
    prog = "ctisave"
    parser = cli.Parser(prog, "Save a CTI session: the client's messages to CLIENTFILE, the "
                        "server's to SERVERFILE (mode 0600). Runs ctirelay | [filters] | ctisplit. "
                        "The files are written only once a session starts.", SAVE_EXAMPLE)
    relay_actions = add_relay_options(parser, raw=False)
    parser.add_argument("client_file", metavar="CLIENTFILE")
    parser.add_argument("server_file", metavar="SERVERFILE")
    parser.add_argument("--jsonl", action="store_true",
                        help="save the tagged records themselves (for ctidiff and ctireplay)")
    _filter_options(parser)
    args = parser.parse_args(argv)
    check_relay_options(parser, args)
    _check_filters(parser, args)
    if _same_file(args.client_file, args.server_file):
        parser.error(f"CLIENTFILE and SERVERFILE are the same file ({args.server_file}); "
                     f"give two paths")

    def body() -> int:
        # Find a bad path or host now, in one line, before anything listens
        # and without touching the files.
        for path in (args.client_file, args.server_file):
            split.check_writable(path)
        _resolve(args.host, args.port, " (usage: ctisave HOST CLIENTFILE SERVERFILE)")
        stages = [["ctirelay", *relay_argv(relay_actions, args)], *_filter_stages(args, None),
                  ["ctisplit", args.client_file, args.server_file, *(["--jsonl"] if args.jsonl else [])]]
        return run_pipeline(prog, stages)

    return cli.guarded(prog, body, debug=args.debug)


def _stat_parser() -> tuple[cli.Parser, list[argparse.Action]]:
    parser = cli.Parser("ctistat", "Relay a CTI session to HOST and print its statistics when it "
                        "ends. Runs ctirelay | ctistat. Given no HOST, or files that exist, "
                        "ctistat reads tagged streams instead (ctistat - --help).", STAT_EXAMPLE)
    relay_actions = add_relay_options(parser, raw=False)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-m", "--msg", action="store_true", help="messages by class (default)")
    mode.add_argument("-n", "--network", action="store_true", help="bytes, packets and rates")
    mode.add_argument("--samples", action="store_true",
                      help="one JSON line per request instead (conn, class, latency...)")
    parser.add_argument("--csv", action="store_true", help="the samples as CSV")
    parser.add_argument("--json", action="store_true", help="one JSON object per session")
    parser.add_argument("--totals", "--total", action="store_true",
                        help="only the totals over all sessions (with --loop)")
    return parser, relay_actions


def main_stat(argv: list[str] | None = None) -> int:
    _catch_stop_signals()
    prog = "ctistat"
    parser, relay_actions = _stat_parser()
    args = parser.parse_args(argv)
    check_relay_options(parser, args)
    sink = ["ctistat", *[option for option, given in (
        ("-n", args.network), ("--samples", args.samples), ("--csv", args.csv),
        ("--json", args.json), ("--totals", args.totals)) if given]]
    if args.csv and args.network or (args.samples or args.csv) and (args.json or args.totals):
        parser.error("--samples and --csv write one line per request: not with -n, --json "
                     "or --totals")
    stages = [["ctirelay", *relay_argv(relay_actions, args)], sink]

    def body() -> int:
        _resolve(args.host, args.port, " (and no such file: to read a saved stream, "
                 "give a file that exists, or use < FILE)")
        return run_pipeline(prog, stages)

    return cli.guarded(prog, body, debug=args.debug)


def main_ctistat(argv: list[str] | None = None) -> int:
    """`ctistat`: the classic tool given a HOST; the sink given none, or only
    FILEs (README, ctistat). The values of the relay's options are not words here."""
    argv = sys.argv[1:] if argv is None else argv
    # The sink's usual words (none, or saved streams) need no relay options
    # parsed: building the relay's parser costs the sink trio's import time.
    if not stat.names_a_host([arg for arg in argv if arg == "-" or not arg.startswith("-")]):
        return stat.main(argv)
    _, relay_actions = _stat_parser()
    takes_value = {option for action in relay_actions if action.nargs != 0
                   for option in action.option_strings}
    words, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-") and arg != "-":
            skip = arg in takes_value
        else:
            words.append(arg)
    if stat.names_a_host(words):
        return main_stat(argv)
    return stat.main(argv)

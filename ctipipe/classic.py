"""The classic tools, ctispy, ctisave and ctistat HOST: thin wrappers that parse
the classic options, start the pipeline of stage processes joined by pipes,
and wait for it as if it were one command."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from . import cli, relay, split, strip

# How often the wrapper looks at its stages: it only waits, so this costs
# nothing, and a dead stage is noticed within a tenth of a second.
POLL_INTERVAL = 0.05

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


def _check_expressions(parser: cli.Parser, texts: list[str]) -> None:
    for text in texts:
        if "=" not in text or text.startswith("="):
            parser.error(f"not a KEY=VALUE expression: {text!r}")


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


def run_pipeline(prog: str, stages: list[list[str]]) -> int:
    """Start `stage0 | stage1 | ...` (each `python -m ctipipe ...`), wait for all.

    The first stage is the relay. Ctrl-C from the terminal reaches every stage
    (they share our process group); a SIGINT or SIGTERM sent to the wrapper
    alone is passed to the relay, which closes its sessions so the stages
    downstream finish their work. If a stage dies, we say which, stop the
    others and exit non-zero; otherwise the exit status is the relay's.
    """
    procs: list[subprocess.Popen] = []
    relay_pid = []

    def forward(signum, frame):
        if relay_pid:
            try:
                os.kill(relay_pid[0], signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    upstream = None
    for index, argv in enumerate(stages):
        last = index == len(stages) - 1
        proc = subprocess.Popen([sys.executable, "-m", "ctipipe", *argv],
                                stdin=upstream if upstream is not None else subprocess.DEVNULL,
                                stdout=None if last else subprocess.PIPE)
        if upstream is not None:
            upstream.close()  # only the stages hold the pipe ends now
        upstream = proc.stdout
        procs.append(proc)
        if index == 0:
            relay_pid.append(proc.pid)
    names = [argv[0] for argv in stages]
    while True:
        states = [proc.poll() for proc in procs]
        failed = [i for i, code in enumerate(states) if code not in (None, 0) and i > 0]
        if failed:
            i = failed[0]
            cli.report(prog, f"error: {names[i]} stopped ({_describe(states[i])}); "
                             f"stopping the pipeline")
            _stop_all(procs)
            return cli.Exit.STAGE_FAILED
        if all(code is not None for code in states):
            return states[0]
        time.sleep(POLL_INTERVAL)


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


def main_spy(argv: list[str] | None = None) -> int:
    prog = "ctispy"
    parser = cli.Parser(prog, "Show a CTI session live: clients connect here and are relayed "
                        "to HOST. Runs ctirelay | [filters] | ctipretty.", SPY_EXAMPLE)
    relay.add_relay_options(parser)
    parser.add_argument("--pretty-print", action="store_true", help="indent each message")
    sides = parser.add_mutually_exclusive_group()
    sides.add_argument("--no-client", action="store_true", help="hide what the client sends")
    sides.add_argument("--no-server", action="store_true", help="hide what the server sends")
    _filter_options(parser)
    args = parser.parse_args(argv)
    _check_expressions(parser, args.include + args.exclude)
    if args.raw and (args.strip or args.include or args.exclude or strip.secret_fields(args)):
        parser.error("--raw shows the traffic undecoded: it cannot be used with "
                     "--strip, --include, --exclude or --redact")
    side = "server" if args.no_client else "client" if args.no_server else None
    stages = [["ctirelay", *relay.relay_argv(args)], *_filter_stages(args, side),
              ["ctipretty", *([] if args.pretty_print else ["--compact"]),
               *(["--tag-sessions"] if args.loop else [])]]
    return cli.guarded(prog, lambda: run_pipeline(prog, stages), debug=args.debug)


def main_save(argv: list[str] | None = None) -> int:
    prog = "ctisave"
    parser = cli.Parser(prog, "Save a CTI session: the client's messages to CLIENTFILE, the "
                        "server's to SERVERFILE (mode 0600). Runs ctirelay | [filters] | ctisplit.",
                        SAVE_EXAMPLE)
    relay.add_relay_options(parser, raw=False)
    parser.add_argument("client_file", metavar="CLIENTFILE")
    parser.add_argument("server_file", metavar="SERVERFILE")
    _filter_options(parser)
    args = parser.parse_args(argv)
    _check_expressions(parser, args.include + args.exclude)

    def body() -> int:
        # Find a bad path now, in one line, before anything listens.
        for path in (args.client_file, args.server_file):
            os.close(split.open_private(path))
        stages = [["ctirelay", *relay.relay_argv(args)], *_filter_stages(args, None),
                  ["ctisplit", args.client_file, args.server_file]]
        return run_pipeline(prog, stages)

    return cli.guarded(prog, body, debug=args.debug)


def main_stat(argv: list[str] | None = None) -> int:
    prog = "ctistat"
    parser = cli.Parser(prog, "Relay a CTI session to HOST and print its statistics when it "
                        "ends. Runs ctirelay | ctistat. Without HOST, ctistat reads a tagged "
                        "stream on standard input.", STAT_EXAMPLE)
    relay.add_relay_options(parser, raw=False)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-m", "--msg", action="store_true", help="messages by class (default)")
    mode.add_argument("-n", "--network", action="store_true", help="bytes, packets and rates")
    parser.add_argument("--json", action="store_true", help="one JSON object per session")
    args = parser.parse_args(argv)
    sink = ["ctistat", *(["-n"] if args.network else []), *(["--json"] if args.json else [])]
    stages = [["ctirelay", *relay.relay_argv(args)], sink]
    return cli.guarded(prog, lambda: run_pipeline(prog, stages), debug=args.debug)

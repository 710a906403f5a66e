"""ctireplay: a saved session becomes a live CTI server (a mock) or a crowd of
live clients (a load), writing the tagged stream of the live sessions.

The recording is read into two scripts (script.py). As a server (mock.py),
each client gets the recorded server side: a reply once the live client has
sent its request (replyid rewritten to the live commandid), unsolicited
messages after their recorded pause. As clients (crowd.py), the recorded
client side, each request once the replies recorded before it have come
(matched by the fresh commandids), with the recorded think time. Every wait
is bounded by --timeout, so every session, and the command, ends by itself.
At the end (report.py) a line per diverged session says how it differed from
the recording, the sessions that followed it are counted, and a summary line
ends the report. This module holds the options and runs one or the other.
"""
from __future__ import annotations

import argparse
import resource
import signal
import socket

import trio

from ctipipe.core import cli, descriptors, stream
from ctipipe.core.notices import Notices
from ctipipe.relay import certs as tls
from ctipipe.relay.tap import Tap
from ctipipe.replay import report
from ctipipe.replay import script as scripts
from ctipipe.replay.crowd import Crowd
from ctipipe.replay.mock import Mock

PROG = "ctireplay"

# How long a session waits for a message the recording says comes next (a
# reply, a request, the peer's close) before it reports it and goes on.
DEFAULT_TIMEOUT = 10.0

# At shutdown, how long to keep trying to write the last records.
FLUSH_TIMEOUT = 5.0

# Descriptors the process holds besides its sessions' sockets (standard
# streams, trio's own, listeners): what --clients N needs on top of N.
DESCRIPTORS_SPARE = 16

EXAMPLE = """\
ctireplay session.jsonl --listen-port 5003 | ctipretty      # a mock server playing the recording
ctireplay session.jsonl --loop --pace asap                  # serve every client, no pauses
ctireplay session.jsonl --to xivo-test --clients 50 --ramp 5 --password s3cret | ctistat
"""


def _pace(text: str) -> float:
    """--pace: a speed factor; recorded is 1, asap is infinite (every pause becomes 0)."""
    if text == "recorded":
        return 1.0
    if text == "asap":
        return float("inf")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not asap, recorded or a speed factor: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"a speed factor must be a number above 0 and finite "
                                         f"(asap: no pauses at all): {text}")
    return value



def _parser() -> cli.Parser:
    parser = cli.Parser(PROG, "Replay a saved tagged stream: as a mock CTI server (default) or, with "
                        "--to, as live clients of a real server. Writes the tagged stream of the "
                        "live sessions on standard output and, at the end, on standard error, one "
                        "line per session saying how it differed from the recording (those that "
                        f"followed it past the first {report.FOLLOWERS_SHOWN} only counted) and "
                        "a summary line.", EXAMPLE)
    parser.add_argument("recording", metavar="SESSION.jsonl", help="a saved tagged stream")
    parser.add_argument("--conn", type=cli.count, default=None, metavar="N",
                        help="which session of the recording (default: the first)")
    parser.add_argument("--pace", type=_pace, default=1.0, metavar="asap|recorded|FACTOR",
                        help="keep the recorded pauses (recorded, the default), none (asap), "
                             "or go FACTOR times faster")
    parser.add_argument("--timeout", type=cli.seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the server to accept, and for a message the "
                             "recording says comes next (default "
                             f"{DEFAULT_TIMEOUT:g}): reported, then the session goes on")
    parser.add_argument("--max-line", type=cli.positive, default=16 << 20, metavar="BYTES",
                        help="longer live lines are recorded in pieces (default 16 MiB)")
    mock = parser.add_argument_group("as a server (without --to)")
    mock.add_argument("--listen-addr", type=cli.host, metavar="ADDR", default=None,
                      help="listen on this address only (default: every address)")
    mock.add_argument("--listen-port", type=cli.port, default=None,
                      help="where clients connect (default 5003)")
    mock.add_argument("--loop", action="store_true",
                      help="serve every client (default: one, then exit)")
    mock.add_argument("--no-starttls", action="store_true",
                      help="do not offer STARTTLS even if the recorded server did")
    mock.add_argument("--cert", metavar="FILE", default=None,
                      help="the certificate to present over STARTTLS (default: the relay's own)")
    mock.add_argument("--key", metavar="FILE", default=None, help="the private key of --cert")
    crowd = parser.add_argument_group("as clients (--to HOST)")
    crowd.add_argument("--to", type=cli.server_host, metavar="HOST", default=None,
                       help="play the client side against HOST (HOST:PORT sets --port too)")
    crowd.add_argument("--port", type=cli.server_port, default=None, help="the server's port (default 5003)")
    crowd.add_argument("--clients", type=cli.count, default=None, metavar="N",
                       help="N sessions at once (default 1)")
    crowd.add_argument("--ramp", type=cli.duration, default=None, metavar="SECONDS",
                       help="spread the sessions' starts over this long")
    crowd.add_argument("--password", metavar="SECRET", default=None,
                       help="log in with this password (recomputes hashedpassword with the live "
                            "sessionid, or fills password)")
    crowd.add_argument("--server-ca", metavar="FILE", default=None,
                       help="verify the server's certificate chain against these CAs (not the name "
                            "in it; default: not verified, as the XiVO client does)")
    return parser


_MOCK_ONLY = ("listen_addr", "listen_port", "loop", "no_starttls", "cert", "key")
_CROWD_ONLY = ("port", "clients", "ramp", "password", "server_ca")


def _check(parser: cli.Parser, args: argparse.Namespace) -> None:
    cli.take_port(parser, args, "to", default=None)
    given = lambda name: getattr(args, name) not in (None, False)
    if args.to is None:
        wrong = [name for name in _CROWD_ONLY if given(name)]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} needs --to HOST (it is for live clients)")
    else:
        wrong = [name for name in _MOCK_ONLY if given(name)]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} is for the mock server, not with --to")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")


def _load(args: argparse.Namespace) -> scripts.Script:
    path = args.recording
    try:
        with open(path, "rb") as file:
            data = _read_bounded(file, path)
    except OSError as error:
        raise scripts.ScriptError(f"cannot read {path}: {error.strerror}") from None
    script = scripts.load(data, args.conn, path)
    if args.to is not None and not script.client:
        raise scripts.ScriptError(f"{path}: session {script.conn} has no client messages: "
                                  f"nothing to send")
    return script


def _read_bounded(file, path: str) -> bytes:
    """The whole recording, refused as soon as one line passes stream.MAX_LINE
    (a file with no newline, such as /dev/zero, would fill the memory)."""
    chunks, unfinished = [], 0  # the bytes since the last newline
    while chunk := file.read(1 << 20):
        chunks.append(chunk)
        newline = chunk.rfind(b"\n")
        unfinished = len(chunk) - newline - 1 if newline >= 0 else unfinished + len(chunk)
        if unfinished > stream.MAX_LINE:
            raise scripts.ScriptError(f"{path}: a line longer than {stream.MAX_LINE >> 20} MiB: "
                                      f"not a recording")
    return b"".join(chunks)


class _NotResolved(scripts.ScriptError):
    """--to HOST does not resolve: exit 1, as in every command (README)."""


def _resolve(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise _NotResolved(f"cannot resolve {host}: {error.strerror}") from None


def _tls_context(args: argparse.Namespace, script: scripts.Script):
    """The TLS context a session may need: the mock's (only if the recording went
    through STARTTLS), or the clients' (always: a server may answer STARTTLS)."""
    if args.to is not None:
        if not any(line.cls == "starttls" for line in script.client):
            return None
        return tls.server_leg_context(args.server_ca)
    if not script.starttls or args.no_starttls:
        return None
    if args.cert is not None:
        return tls.client_leg_context(args.cert, args.key)
    cert, key, made = tls.relay_certificate()
    if made:
        cli.report(PROG, f"made the relay's certificate {cert} (SHA-256 {tls.fingerprint(cert)})")
    return tls.client_leg_context(cert, key)


def _allow_descriptors(args: argparse.Namespace, notices: Notices) -> None:
    """Raise the soft limit on open files (each session holds a socket); say
    in one line when even the hard limit cannot hold --clients N at once."""
    clients = args.clients or 1
    soft, hard = descriptors.raise_limit(max(descriptors.UNLIMITED_SOFT, clients + DESCRIPTORS_SPARE))
    if args.to is None or soft == resource.RLIM_INFINITY or soft >= clients + DESCRIPTORS_SPARE:
        return
    notices.say(f"warning: the hard limit on open files ({hard}) is too low for --clients "
                f"{clients}: about {max(soft - DESCRIPTORS_SPARE, 0)} sessions can be open at "
                f"once, the others will fail with \"Too many open files\" (raise it: ulimit -Hn)")


async def _run(args: argparse.Namespace, script: scripts.Script, context,
               notices: Notices) -> tuple[int, list[str]]:
    """Play the recording; the exit status and the report's lines."""
    tap = Tap(1, raw=False, max_line=args.max_line, notify=notices.say,
              flush_timeout=FLUSH_TIMEOUT)
    source = f"replay:{args.recording}#{script.conn}"
    if args.to is None:
        producer = Mock(script, source=source, tap=tap, pace=args.pace, timeout=args.timeout,
                        max_line=args.max_line, loop=args.loop, listen_addr=args.listen_addr,
                        listen_port=5003 if args.listen_port is None else args.listen_port,
                        notices=notices, tls_context=context)
        body = producer.serve
    else:
        producer = Crowd(script, host=args.to, port=args.port or 5003, clients=args.clients or 1,
                         ramp=args.ramp or 0.0, password=args.password, tap=tap, pace=args.pace,
                         timeout=args.timeout, max_line=args.max_line, tls_context=context)
        body = lambda: producer.run(args.recording)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as root:
            root.start_soon(tap.run)
            try:
                async with trio.open_nursery() as working:
                    async def stop_on_signal() -> None:
                        async for _ in signals:
                            working.cancel_scope.cancel()
                            return
                    working.start_soon(stop_on_signal)
                    await body()
                    working.cancel_scope.cancel()
            finally:
                tap.close()  # the tap writes what it holds, for at most FLUSH_TIMEOUT
                await tap.finished.wait()
    lines = report.run_report(producer.results)
    if tap.unwritten:
        lines.insert(0, f"{tap.unwritten} records were not written: standard output was not being read")
    diverged = bool(tap.unwritten) or any(d.diverged for _, d in producer.results)
    return cli.Exit.ERROR if diverged else cli.Exit.OK, lines


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    try:
        script = _load(args)
        if args.no_starttls:
            script = script.without_starttls()
        if args.to is not None:
            _resolve(args.to, args.port or 5003)
        context = _tls_context(args, script)
    except (scripts.ScriptError, cli.CommandError) as error:
        cli.report(PROG, f"error: {error}")
        return cli.Exit.ERROR if isinstance(error, _NotResolved) else cli.Exit.USAGE
    notices = Notices(prog=PROG)
    _allow_descriptors(args, notices)

    def body() -> int:
        try:
            status, lines = trio.run(_run, args, script, context, notices)
            # Written whole: each line waits for room, none is counted away.
            notices.say_all(lines, FLUSH_TIMEOUT)
            return status
        finally:
            notices.flush(FLUSH_TIMEOUT)  # before a final error line, in order
    return cli.guarded(PROG, body, debug=args.debug)

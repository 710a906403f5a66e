"""ctidemo: a CTI server and client that behave like XiVO's, to see the tools at work.

`ctidemo` alone starts the demo server, the classic `ctispy` between them, and
the demo client, and shows the session live. `ctidemo server` and
`ctidemo client` run each part alone (`server.py`, `client.py`); this module
parses the arguments and starts the parts as processes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from functools import partial

import trio

from ctipipe.core import cli
from ctipipe.demo.client import run_client
from ctipipe.demo.server import PASSWORD, demo_files, serve

PROG = "ctidemo"

# How long a process the demo started may take to end once asked (a loaded
# machine can be slow to run even that); past it, it is killed.
STOP_PATIENCE = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    """Wait until the demo server accepts connections (a probe it simply sees close)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    cli.report(PROG, f"error: the demo server did not start on port {port}")
    return False


def _whole_demo(args: argparse.Namespace) -> int:
    """Server, classic ctispy and client, each its own process, as a user would run them."""
    server_port = args.server_port or _free_port()
    listen_port = args.listen_port or _free_port()
    me = cli.command_argv()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([*me, "ctidemo", "server", "--port", str(server_port),
                                       *_no_starttls(args)]))
        if not _wait_listening(server_port, procs[0]):
            return cli.Exit.ERROR
        # The demo server's certificate is known here: ctispy verifies it.
        server_ca = ([] if args.no_starttls else
                     ["--server-ca", str(demo_files()[0])])
        spy = subprocess.Popen([*me, "ctispy", "127.0.0.1", "--port", str(server_port),
                                "--listen-addr", "127.0.0.1", "--listen-port", str(listen_port),
                                *server_ca, *(["--pretty-print"] if not args.compact else [])])
        procs.append(spy)
        client = subprocess.Popen([*me, "ctidemo", "client", "--port", str(listen_port),
                                   "--pause", str(args.pause), *_no_starttls(args)])
        procs.append(client)
        while client.poll() is None:
            if spy.poll() is not None:  # ctispy could not start: it said why
                return cli.Exit.ERROR
            time.sleep(0.05)
        spy_status = spy.wait(30)
        if client.returncode or spy_status:
            cli.report(PROG, f"error: the demo did not complete (client {client.returncode}, "
                             f"ctispy {spy_status})")
            return cli.Exit.ERROR
        return cli.Exit.OK
    finally:
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    """End what the demo started, the last started first; one that has not
    ended STOP_PATIENCE seconds after SIGTERM is killed."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_PATIENCE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _no_starttls(args: argparse.Namespace) -> list[str]:
    """A plain demo: the server offers no STARTTLS and the client waits for none."""
    return ["--no-starttls"] if args.no_starttls else []


def _replay_demo(args: argparse.Namespace) -> int:
    """Record a demo session through ctirelay, then replay it with ctireplay as the
    server, watched through ctispy, to a demo client with its own commandids."""
    me = cli.command_argv()
    procs: list[subprocess.Popen] = []

    def start(*argv: str, **popen) -> subprocess.Popen:
        procs.append(subprocess.Popen([*me, *argv], **popen))
        return procs[-1]

    def client(port: int) -> int:
        return start("ctidemo", "client", "--port", str(port), "--pause", str(args.pause),
                     *_no_starttls(args)).wait()

    with tempfile.TemporaryDirectory(prefix="ctidemo-") as tmp:
        recording = os.path.join(tmp, "session.jsonl")
        try:
            server_port, relay_port = _free_port(), _free_port()
            # With STARTTLS (the relay decrypts it; the mock offers it in turn) unless told not to.
            server = start("ctidemo", "server", "--port", str(server_port), *_no_starttls(args))
            if not _wait_listening(server_port, server):
                return cli.Exit.ERROR
            with open(recording, "wb") as out:
                relay = start("ctirelay", "127.0.0.1", "--port", str(server_port), "--listen-addr",
                              "127.0.0.1", "--listen-port", str(relay_port), stdout=out)
                if client(relay_port) or relay.wait(30):
                    cli.report(PROG, "error: the demo session could not be recorded")
                    return cli.Exit.ERROR
            cli.report(PROG, "recorded a demo session through ctirelay; replaying it with "
                             "ctireplay as the server, watched through ctispy")
            mock = start("ctireplay", recording, "--listen-addr", "127.0.0.1", "--listen-port", "0",
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            first = mock.stderr.readline()  # where it listens, or why it could not start
            sys.stderr.write(first)
            if "listening on" not in first:
                return cli.Exit.ERROR
            threading.Thread(target=shutil.copyfileobj, args=(mock.stderr, sys.stderr),
                             daemon=True).start()
            mock_port = first.split("listening on ")[1].split(":")[1]
            spy_port = args.listen_port or _free_port()
            spy = start("ctispy", "127.0.0.1", "--port", mock_port, "--listen-addr", "127.0.0.1",
                        "--listen-port", str(spy_port),
                        *(["--pretty-print"] if not args.compact else []))
            if client(spy_port) or spy.wait(30) or mock.wait(30):
                cli.report(PROG, "error: the replayed session did not complete")
                return cli.Exit.ERROR
            return cli.Exit.OK
        finally:
            _stop(procs)


DESCRIPTION = """\
A demo CTI server and client that behave like XiVO's, to see the tools at work.
Alone, ctidemo runs the demo server, the classic ctispy between it and the demo
client, and shows the session live. The server offers STARTTLS as XiVO 15.20 to
Wazo 19.03 do (its own certificate, TLS 1.0 allowed); the client takes the offer
and logs in with protocol 2.x, whose password travels in clear inside TLS."""


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, DESCRIPTION,
                        "ctidemo                                # watch a demo session through ctispy\n"
                        "ctidemo server --port 5003             # a stand-in CTI server for your own tests\n"
                        "ctidemo server --port 5003 --no-starttls\n"
                        "ctidemo client --port 50030            # one scripted session (password: demo)\n"
                        "ctidemo replay                         # record a session, replay it with ctireplay")
    parser.add_argument("--listen-port", type=cli.port, default=0,
                        help="where ctispy listens (default: any free port)")
    parser.add_argument("--server-port", type=cli.port, default=0,
                        help="the demo server's port (default: any free one)")
    parser.add_argument("--compact", action="store_true", help="one line per message")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds between client steps (default 0.05)")
    parser.add_argument("--no-starttls", action="store_true",
                        help="the demo server does not offer STARTTLS (a plain session)")
    parts = parser.add_subparsers(dest="part", metavar="{server,client,replay}")
    server = parts.add_parser(
        "server", help="run the demo CTI server",
        description=textwrap.fill("A CTI server that answers the login, getlist and ipbxcommand requests as a "
                    "XiVO does, sends status updates, and offers STARTTLS (TLS 1.0 to 1.3, with "
                    "its own certificate kept in the data directory) unless told not to. "
                    f"Every user's password is {PASSWORD!r}. Runs until Ctrl-C."),
        example="ctidemo server --port 5003 &\nctirelay 127.0.0.1 --port 5003 | ctipretty")
    server.add_argument("--listen-addr", type=cli.host, default="127.0.0.1", metavar="ADDR",
                        help="the address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=cli.port, default=5003, help="the port to listen on (default 5003)")
    server.add_argument("--no-starttls", action="store_true",
                        help="do not offer STARTTLS (a server before XiVO 15.20, or with TLS off)")
    client = parts.add_parser(
        "client", help="run one scripted client session",
        description=textwrap.fill("One scripted CTI client session: STARTTLS when the server offers it (any "
                    "certificate accepted, as the XiVO client does), login (protocol 2.x with a "
                    "clear password inside TLS, 1.x with a hashed one without), the configuration "
                    "lists, a dial and a hangup, then logout."),
        example="ctidemo client --port 50030 --user alice")
    client.add_argument("--host", type=cli.host, default="127.0.0.1", help="the server or relay (default 127.0.0.1)")
    client.add_argument("--port", type=cli.server_port, default=50030, help="its port (default 50030)")
    client.add_argument("--user", default="alice", help="the login (default alice)")
    client.add_argument("--pause", type=float, default=0.05,
                        help="seconds between steps (default 0.05)")
    client.add_argument("--no-starttls", action="store_true",
                        help="log in at once, without waiting for a STARTTLS offer "
                             "(a client of before XiVO 15.20: protocol 1.x, hashed password)")
    replay = parts.add_parser(
        "replay", help="record a demo session, then replay it with ctireplay "
                       "as the server, watched through ctispy",
        description=textwrap.fill("Record a demo session through ctirelay, then replay it with "
                    "ctireplay as the server, watched through ctispy, to a demo client with "
                    "commandids of its own."),
        example="ctidemo replay --compact")
    # The whole demo's options, also after `replay` (SUPPRESS: not given here,
    # the value given before `replay`, or its default, stays).
    replay.add_argument("--listen-port", type=cli.port, default=argparse.SUPPRESS,
                        help="where ctispy listens (default: any free port)")
    replay.add_argument("--compact", action="store_true", default=argparse.SUPPRESS,
                        help="one line per message")
    replay.add_argument("--pause", type=float, default=argparse.SUPPRESS,
                        help="seconds between client steps (default 0.05)")
    replay.add_argument("--no-starttls", action="store_true", default=argparse.SUPPRESS,
                        help="record a plain session (the demo server offers no STARTTLS)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.part == "server":
            try:
                trio.run(partial(serve, args.listen_addr, args.port,
                                 starttls=not args.no_starttls))
            except KeyboardInterrupt:
                pass
            return cli.Exit.OK
        if args.part == "client":
            trio.run(partial(run_client, args.host, args.port, args.user, args.pause,
                             starttls=not args.no_starttls))
            return cli.Exit.OK
        if args.part == "replay":
            return _replay_demo(args)
        return _whole_demo(args)

    return cli.guarded(PROG, body, debug=args.debug)

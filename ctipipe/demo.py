"""ctidemo: a CTI server and client that behave like XiVO's, to see the tools at work.

`ctidemo` alone starts the demo server, the classic `ctispy` between them, and
the demo client, and shows the session live. `ctidemo server` and
`ctidemo client` run each part alone. Messages follow the public CTI protocol
documentation: the login_id / login_pass / login_capas handshake, getlist
listid and updateconfig answers, ipbxcommand replies whose replyid is the
request's commandid, and unsolicited status updates.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import orjson
import trio

from . import cli

PROG = "ctidemo"
IPBX = "xivo"
PASSWORD = "demo"  # every demo user's password

USERS = {
    "1": ("Alice", "Bouzat", "1001"), "2": ("Björn", "Lindström", "1002"),
    "3": ("Zoé", "Müller", "1003"), "4": ("José", "Núñez", "1004"),
    "5": ("Ingrid", "Åkesson", "1005"), "6": ("Hélène", "Gauthier", "1006"),
}
AGENTS = {"1": "2001", "2": "2002", "3": "2003"}
QUEUES = {"1": ("blue", "3001"), "2": ("yellow", "3002"), "3": ("red", "3003")}
AVAILABILITY = ("available", "away", "on_call_acd", "on_call_non_acd_incoming_external", "logged_out")

# Unsolicited status updates while a client is logged in, as a live switch sends them.
STATUS_INTERVAL = 0.25


def _now() -> float:
    return round(time.time(), 2)


# --- the server ------------------------------------------------------------

def user_config(tid: str) -> dict:
    first, last, number = USERS[tid]
    return {"enablednd": False, "destrna": "", "enablerna": False, "enableunc": False,
            "destunc": "", "destbusy": "", "enablebusy": False, "enablexfer": True,
            "firstname": first, "lastname": last, "fullname": f"{first} {last}",
            "voicemailid": None, "incallfilter": False, "enablevoicemail": False,
            "profileclient": None, "agentid": int(tid) if tid in AGENTS else None,
            "enableclient": True, "linelist": [tid], "mobilephonenumber": "",
            "context": "default", "number": number}


def answer(request: dict, session: dict) -> list[dict]:
    """What the demo server says to one client message."""
    kind = request.get("class")
    commandid = request.get("commandid")
    now = _now()
    if kind == "login_id":
        session["sessionid"] = "".join(random.choice("abcdefghijkmnpqrstuvwxyzABCDEFGH23456789")
                                       for _ in range(10))
        session["user"] = request.get("userlogin")
        return [{"class": "login_id", "sessionid": session["sessionid"], "timenow": now,
                 "xivoversion": "1.2"}]
    if kind == "login_pass":
        expected = hashlib.sha1(f"{session.get('sessionid')}:{PASSWORD}".encode()).hexdigest()
        if request.get("hashedpassword") != expected:
            return [{"class": "login_pass", "error_string": "login_password", "replyid": commandid,
                     "timenow": now}]
        return [{"capalist": [2], "class": "login_pass", "replyid": commandid, "timenow": now}]
    if kind == "login_capas":
        session["logged_in"] = True
        return [{"class": "login_capas", "userid": "1", "ipbxid": IPBX, "appliname": "Client",
                 "capas": {"regcommands": {}, "preferences": False,
                           "userstatus": {"available": {"color": "#08FD20", "longname": "Disponible"},
                                          "away": {"color": "#FDE50A", "longname": "Absent"}},
                           "phonestatus": {"0": {"color": "#0DFF25", "longname": "Disponible"}},
                           "services": ["enablednd", "fwdunc", "fwdbusy", "fwdrna"],
                           "ipbxcommands": ["dial", "hangup", "transfer"]},
                 "presence": request.get("state", "available"), "replyid": commandid,
                 "timenow": now}]
    if kind == "getlist":
        listname = request.get("listname")
        table = {"users": USERS, "phones": USERS, "agents": AGENTS, "queues": QUEUES}.get(listname, {})
        if request.get("function") == "listid":
            return [{"class": "getlist", "function": "listid", "listname": listname,
                     "list": list(table), "tipbxid": IPBX, "timenow": now, "replyid": commandid}]
        if request.get("function") == "updateconfig":
            tid = str(request.get("tid"))
            if listname == "users" and tid in USERS:
                config = user_config(tid)
            elif listname == "phones" and tid in USERS:
                config = {"allowtransfer": None, "context": "default", "identity": f"SIP/demo{tid}",
                          "iduserfeatures": int(tid), "initialized": None,
                          "number": USERS[tid][2], "protocol": "sip"}
            elif listname == "queues" and tid in QUEUES:
                config = {"displayname": QUEUES[tid][0], "name": QUEUES[tid][0],
                          "context": "default", "number": QUEUES[tid][1]}
            else:
                config = {}
            return [{"class": "getlist", "function": "updateconfig", "listname": listname,
                     "tid": tid, "tipbxid": IPBX, "timenow": now, "config": config,
                     "replyid": commandid}]
    if kind == "ipbxcommand":
        command = request.get("command")
        replies = [{"class": "ipbxcommand", "command": command, "ipbxreply": 1,
                    "replyid": commandid, "timenow": now}]
        if command == "dial":
            exten = str(request.get("destination", "")).rpartition("/")[2]
            replies.append({"class": "dial_success", "exten": exten, "timenow": now})
        return replies
    if kind == "keepalive":
        return [{"class": "keepalive", "replyid": commandid, "timenow": now}]
    if kind == "logout":
        return []
    return [{"class": kind, "error_string": "unknown_class", "replyid": commandid, "timenow": now}]


def status_update(counter: int) -> dict:
    """An unsolicited status message, cycling through agents and phones."""
    now = _now()
    if counter % 2:
        tid = str(counter % len(AGENTS) + 1)
        return {"class": "getlist", "function": "updatestatus", "listname": "agents",
                "tipbxid": IPBX, "tid": int(tid), "timenow": now,
                "status": {"availability": AVAILABILITY[counter % len(AVAILABILITY)],
                           "availability_since": now, "queues": ["1", "2"], "groups": [],
                           "on_call": counter % 3 == 0, "phonenumber": AGENTS[tid],
                           "channel": None}}
    tid = str(counter % len(USERS) + 1)
    return {"class": "getlist", "function": "updatestatus", "listname": "phones",
            "tipbxid": IPBX, "tid": tid, "timenow": now,
            "status": {"hintstatus": str(counter % 4), "channels": [], "queues": [], "groups": []}}


async def serve(listen_addr: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(port, host=listen_addr)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_serve_client, listeners)


async def _serve_client(client: trio.SocketStream) -> None:
    session: dict = {}
    async with client, trio.open_nursery() as nursery:
        send_lock = trio.Lock()

        async def send(message: dict) -> None:
            async with send_lock:
                await client.send_all(orjson.dumps(message) + b"\n")

        async def updates() -> None:
            for counter in itertools.count():
                await trio.sleep(STATUS_INTERVAL)
                if session.get("logged_in"):
                    await send(status_update(counter))

        nursery.start_soon(updates)
        try:
            async for line in _lines(client):
                try:
                    request = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(request, dict):
                    continue
                for reply in answer(request, session):
                    await send(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()


async def _lines(stream_: trio.abc.ReceiveStream):
    buffer = b""
    while data := await stream_.receive_some(1 << 16):
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line


# --- the client --------------------------------------------------------------

class _Client:
    def __init__(self, stream_: trio.SocketStream) -> None:
        self.stream = stream_
        self.commandids = itertools.count(random.randrange(10**8, 10**9))
        self.lines = _lines(stream_)

    async def send(self, message: dict) -> int:
        commandid = next(self.commandids)
        await self.stream.send_all(orjson.dumps({**message, "commandid": commandid}) + b"\n")
        return commandid

    async def ask(self, message: dict) -> dict:
        """Send a request and wait for its reply (status updates in between are skipped)."""
        commandid = await self.send(message)
        while True:
            line = await self.lines.__anext__()
            reply = orjson.loads(line)
            if reply.get("replyid") == commandid or (message["class"] == "login_id"
                                                      and reply.get("class") == "login_id"):
                return reply


async def run_client(host: str, port: int, user: str, pause: float) -> None:
    """A realistic session: log in, load the configuration, dial, hang up, log out."""
    deadline = trio.current_time() + 10
    while True:  # the relay may still be starting
        try:
            stream_ = await trio.open_tcp_stream(host, port)
            break
        except OSError:
            if trio.current_time() > deadline:
                raise cli.CommandError(f"cannot connect to {host}:{port}") from None
            await trio.sleep(0.05)
    async with stream_:
        client = _Client(stream_)
        reply = await client.ask({"class": "login_id", "company": "default", "ident": "X11-LE-24079",
                                  "lastlogout-datetime": "2026-11-26T18:02:11",
                                  "lastlogout-stopper": "disconnect", "userlogin": user,
                                  "version": "9999", "xivoversion": "1.2"})
        hashed = hashlib.sha1(f"{reply['sessionid']}:{PASSWORD}".encode()).hexdigest()
        reply = await client.ask({"class": "login_pass", "hashedpassword": hashed})
        capaid = reply.get("capalist", [0])[0]
        await client.ask({"class": "login_capas", "capaid": capaid, "lastconnwins": False,
                          "loginkind": "agent", "state": "available"})
        for listname in ("users", "phones", "queues"):
            ids = await client.ask({"class": "getlist", "function": "listid", "listname": listname,
                                    "tipbxid": IPBX})
            for tid in ids.get("list", [])[:4]:
                await client.ask({"class": "getlist", "function": "updateconfig",
                                  "listname": listname, "tid": tid, "tipbxid": IPBX})
                await trio.sleep(pause)
        await client.ask({"class": "ipbxcommand", "command": "agentlogin", "agentphonenumber": "1001"})
        await trio.sleep(pause * 4)
        await client.ask({"class": "ipbxcommand", "command": "dial",
                          "destination": "exten:xivo/1202"})
        await trio.sleep(pause * 8)
        await client.ask({"class": "ipbxcommand", "command": "hangup",
                          "channelids": "chan:xivo/SIP/im2p7kzr-00000003"})
        await client.ask({"class": "ipbxcommand", "command": "queuepause", "member": "agent:xivo/1",
                          "queue": "queue:xivo/all"})
        await trio.sleep(pause * 4)
        await client.send({"class": "logout", "stopper": "disconnect"})
        await stream_.send_eof()


# --- ctidemo -------------------------------------------------------------------

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
    me = [sys.executable, "-m", "ctipipe"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([*me, "ctidemo", "server", "--port", str(server_port)]))
        if not _wait_listening(server_port, procs[0]):
            return cli.Exit.ERROR
        spy = subprocess.Popen([*me, "ctispy", "127.0.0.1", "--port", str(server_port),
                                "--listen-addr", "127.0.0.1", "--listen-port", str(listen_port),
                                *(["--pretty-print"] if not args.compact else [])])
        procs.append(spy)
        client = subprocess.Popen([*me, "ctidemo", "client", "--port", str(listen_port),
                                   "--pause", str(args.pause)])
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
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def _replay_demo(args: argparse.Namespace) -> int:
    """Record a demo session through ctirelay, then replay it with ctireplay as the
    server, watched through ctispy, to a demo client with its own commandids."""
    me = [sys.executable, "-m", "ctipipe"]
    procs: list[subprocess.Popen] = []

    def start(*argv: str, **popen) -> subprocess.Popen:
        procs.append(subprocess.Popen([*me, *argv], **popen))
        return procs[-1]

    def client(port: int) -> int:
        return start("ctidemo", "client", "--port", str(port), "--pause", str(args.pause)).wait()

    with tempfile.TemporaryDirectory(prefix="ctidemo-") as tmp:
        recording = os.path.join(tmp, "session.jsonl")
        try:
            server_port, relay_port = _free_port(), _free_port()
            server = start("ctidemo", "server", "--port", str(server_port))
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
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "A demo CTI server and client; alone, runs both with the classic "
                        "ctispy between them so you can watch a session.",
                        "ctidemo                      # watch a demo session through ctispy\n"
                        "ctidemo server --port 5003   # a stand-in CTI server for your own tests\n"
                        "ctidemo client --port 50030  # a scripted client session\n"
                        "ctidemo replay               # record a session, replay it with ctireplay")
    parser.add_argument("--listen-port", type=int, default=0,
                        help="where ctispy listens (default: any free port)")
    parser.add_argument("--server-port", type=int, default=0,
                        help="the demo server's port (default: any free one)")
    parser.add_argument("--compact", action="store_true", help="one line per message")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between client steps")
    parts = parser.add_subparsers(dest="part")
    server = parts.add_parser("server", help="run the demo CTI server")
    server.add_argument("--listen-addr", default="127.0.0.1")
    server.add_argument("--port", type=int, default=5003)
    client = parts.add_parser("client", help="run one scripted client session")
    client.add_argument("--host", default="127.0.0.1")
    client.add_argument("--port", type=int, default=50030)
    client.add_argument("--user", default="alice")
    client.add_argument("--pause", type=float, default=0.05)
    parts.add_parser("replay", help="record a demo session, then replay it with ctireplay "
                                    "as the server, watched through ctispy")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.part == "server":
            try:
                trio.run(serve, args.listen_addr, args.port)
            except KeyboardInterrupt:
                pass
            return cli.Exit.OK
        if args.part == "client":
            trio.run(run_client, args.host, args.port, args.user, args.pause)
            return cli.Exit.OK
        if args.part == "replay":
            return _replay_demo(args)
        return _whole_demo(args)

    return cli.guarded(PROG, body, debug=args.debug)

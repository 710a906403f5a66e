"""ctireplay --to as a load: sessions per second and the replay's peak memory with
--clients 1, 10 and 100 against the demo server and against a server that
answers every request at once, for the recorded demo session (login to logout)
and for its login sequence alone. Then the mock's start-up on a long
recording with and without --no-starttls, and the mock's peak memory against
a client that sends only unexpected messages with 1 MiB class names.

    .venv/bin/python tests/bench/replay_bench.py [--clients 1 10 100] [--reps 1]
                                                 [--only load|startup|hostile]

Targets: 100 concurrent sessions of the login sequence against the instant
server in under 5 s, the replay process under 100 MB; --no-starttls on
20k+20k messages starts about as fast as without it (linear); the mock under
50 MB whatever the class names it is sent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
LOCALHOST = "127.0.0.1"


def command(name: str, *args: str) -> list[str]:
    return [PYTHON, "-P", "-m", "ctipipe", name, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


# --- a server that answers at once -------------------------------------------------

def instant_server(port: int) -> None:
    """Answer every request at once: a replyid reply, login replies as the protocol has them."""
    import orjson
    import trio

    async def client(stream) -> None:
        buffer = b""
        try:
            async with stream:
                while data := await stream.receive_some(1 << 16):
                    *lines, buffer = (buffer + data).split(b"\n")
                    out = []
                    for line in lines:
                        try:
                            request = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            continue
                        if not isinstance(request, dict) or request.get("class") == "logout":
                            continue
                        reply = {"class": request.get("class"), "replyid": request.get("commandid")}
                        if request.get("class") == "login_id":
                            reply = {"class": "login_id", "sessionid": "abcdefghij"}
                        out.append(orjson.dumps(reply) + b"\n")
                    if out:
                        await stream.send_all(b"".join(out))
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        await trio.serve_tcp(client, port, host=LOCALHOST)

    trio.run(main)


# --- recordings ----------------------------------------------------------------------

def record_demo(tmp: Path) -> tuple[Path, Path]:
    """The demo session recorded through ctirelay, and its login sequence alone."""
    server_port, relay_port = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(command("ctidemo", "server", "--port", str(server_port),
                                              "--no-starttls")))
        wait_listening(server_port, procs[0])
        full = tmp / "session.jsonl"
        with open(full, "wb") as out:
            relay = subprocess.Popen(command("ctirelay", LOCALHOST, "--port", str(server_port),
                                             "--listen-addr", LOCALHOST, "--listen-port",
                                             str(relay_port)), stdout=out)
            procs.append(relay)
            subprocess.run(command("ctidemo", "client", "--port", str(relay_port), "--pause", "0.01"),
                           check=True)
            relay.wait(30)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    login = tmp / "login.jsonl"
    kept = []
    for line in full.read_bytes().splitlines(keepends=True):
        kept.append(line)
        record = json.loads(line)
        if record.get("from") == "server" and record.get("msg", {}).get("class") == "login_capas":
            break
    login.write_bytes(b"".join(kept))
    return full, login


def messages(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if b'"from":' in line)


# --- the mock's start-up and its memory against a hostile client -------------------

def long_recording(path: Path, pairs: int) -> Path:
    """A recording that went through STARTTLS, then `pairs` requests and replies."""
    records = [{"ts": 0.0, "conn": 1, "event": "open", "client": "c:1", "server": "s:2"},
               {"ts": 0.1, "conn": 1, "from": "server", "size": 0, "msg": {"class": "starttls"}},
               {"ts": 0.2, "conn": 1, "from": "client", "size": 0,
                "msg": {"class": "starttls", "status": 1}},
               {"ts": 0.3, "conn": 1, "from": "server", "size": 0,
                "msg": {"class": "starttls", "starttls": True}},
               {"ts": 0.4, "conn": 1, "event": "tls", "how": "starttls", "intercepted": True}]
    for n in range(pairs):
        records.append({"ts": 1.0 + n, "conn": 1, "from": "client", "size": 0,
                        "msg": {"class": "getlist", "commandid": n}})
        records.append({"ts": 1.5 + n, "conn": 1, "from": "server", "size": 0,
                        "msg": {"class": "getlist", "replyid": n, "list": []}})
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    return path


def seconds_to_listen(recording: Path, *args: str) -> float:
    """From start to the mock's "listening on" line."""
    started = time.monotonic()
    proc = subprocess.Popen(command("ctireplay", str(recording), "--listen-addr", LOCALHOST,
                                    "--listen-port", "0", *args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for line in proc.stderr:
            if b"listening on" in line:
                return time.monotonic() - started
        raise SystemExit(f"the mock did not listen (exit {proc.wait()})")
    finally:
        proc.kill()
        proc.wait()


def startup(tmp: Path, pairs: int = 20_000) -> None:
    recording = long_recording(tmp / "long.jsonl", pairs)
    print(f"\nmock start-up on {pairs:,}+{pairs:,} messages (to \"listening on\"):\n")
    print("| options | seconds |")
    print("|---|---:|")
    for args in ((), ("--no-starttls",)):
        print(f"| {' '.join(args) or '(none)'} | {seconds_to_listen(recording, *args):.2f} |",
              flush=True)


def hostile(tmp: Path, messages: int = 600, name: int = 1 << 20) -> None:
    """The mock's peak memory and standard error against unexpected messages
    whose class names are `name` bytes each."""
    recording = tmp / "login.jsonl"
    recording.write_bytes(
        b'{"ts":1.0,"conn":1,"from":"client","size":0,"msg":{"class":"login_id","commandid":1}}\n'
        b'{"ts":1.1,"conn":1,"from":"server","size":0,"msg":{"class":"login_id","sessionid":"a"}}\n')
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command("ctireplay", str(recording), "--listen-addr", LOCALHOST,
                                        "--listen-port", "0", "--pace", "asap", "--timeout", "120"),
                                stdout=subprocess.DEVNULL, stderr=err)
        port = None
        deadline = time.monotonic() + 10
        while port is None and time.monotonic() < deadline:
            err.seek(0)
            text = err.read().decode()
            if "listening on" in text:
                port = int(text.split("listening on ")[1].split(":")[1])
            time.sleep(0.02)
        started = time.monotonic()
        with socket.create_connection((LOCALHOST, port)) as sock:
            for n in range(messages):
                sock.sendall(b'{"class":"%d%s","commandid":%d}\n' % (n, b"x" * name, n))
            sock.sendall(b'{"class":"login_id","commandid":7}\n')
            sock.makefile("rb").readline()  # answered: every line before it was read
            seconds = time.monotonic() - started
        _, status, usage = os.wait4(proc.pid, 0)
        written = err.tell()
    print(f"\nmock against {messages} unexpected messages with {name >> 20} MiB class names: "
          f"{seconds:.1f} s, peak RSS {usage.ru_maxrss / 1024:.1f} MB, "
          f"{written:,} bytes on standard error, exit {os.waitstatus_to_exitcode(status)}")


# --- one run ---------------------------------------------------------------------------

def run_replay(recording: Path, port: int, clients: int, password: str | None) -> dict:
    argv = command("ctireplay", str(recording), "--to", LOCALHOST, "--port", str(port),
                   "--clients", str(clients), "--pace", "asap")
    if password:
        argv += ["--password", password]
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode().splitlines()
    # The summary line, last: "97 of 100 sessions followed the recording; ..."
    summary = next((line for line in reversed(lines) if " followed the recording" in line
                    and not line.startswith("ctireplay: session ")), "")
    followed = int(summary.split(": ", 1)[-1].split(" of ")[0].replace(",", "") or 0) if summary else 0
    return {"clients": clients, "seconds": elapsed, "status": proc.returncode,
            "followed": followed, "rss_mb": usage.ru_maxrss / 1024,
            "problem": next((line for line in lines if ": diverged: " in line or "error" in line), "")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--only", choices=("load", "startup", "hostile"))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        instant_server(args.serve)
        return 0
    os.chdir(ROOT)
    if args.only in (None, "load"):
        load(args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "startup"):
            startup(Path(tmp))
        if args.only in (None, "hostile"):
            hostile(Path(tmp))
    return 0


def load(args) -> None:
    servers = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            full, login = record_demo(Path(tmp))
            demo_port, instant_port = free_port(), free_port()
            servers.append(subprocess.Popen(command("ctidemo", "server", "--port", str(demo_port),
                                                    "--no-starttls")))
            servers.append(subprocess.Popen([PYTHON, __file__, "--serve", str(instant_port)]))
            wait_listening(demo_port, servers[0])
            wait_listening(instant_port, servers[1])
            print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}; wall time includes start-up "
                  f"(python -m ctipipe ctireplay)")
            print("| server | recording | clients | seconds | sessions/s | followed | peak RSS |")
            print("|---|---|---:|---:|---:|---:|---:|")
            for server_name, port, password in (("demo", demo_port, "demo"),
                                                ("instant", instant_port, None)):
                for name, recording in ((f"full ({messages(full)} msgs)", full),
                                        (f"login ({messages(login)} msgs)", login)):
                    for clients in args.clients:
                        for _ in range(args.reps):
                            r = run_replay(recording, port, clients, password)
                            print(f"| {server_name} | {name} | {clients} | {r['seconds']:.2f} | "
                                  f"{clients / r['seconds']:.0f} | {r['followed']}/{clients} | "
                                  f"{r['rss_mb']:.1f} MB |"
                                  + (f" exit {r['status']}: {r['problem']}" if r["status"] else ""),
                                  flush=True)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())

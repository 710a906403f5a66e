"""ctireplay --to as a load: sessions per second and the replay's peak memory with
--clients 1, 10 and 100 against the demo server and against a server that
answers every request at once, for the recorded demo session (login to logout)
and for its login sequence alone.

    .venv/bin/python tests/bench/replay_bench.py [--clients 1 10 100] [--reps 1]

Target: 100 concurrent sessions of the login sequence against the instant
server in under 5 s, the replay process under 100 MB.
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
    return [PYTHON, "-m", "ctipipe", name, *args]


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
    followed = sum("followed the recording" in line for line in lines)
    return {"clients": clients, "seconds": elapsed, "status": proc.returncode,
            "followed": followed, "rss_mb": usage.ru_maxrss / 1024,
            "problem": next((line for line in lines if "followed" not in line), "")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        instant_server(args.serve)
        return 0
    os.chdir(ROOT)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

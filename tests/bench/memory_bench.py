"""The relay's memory under what peers can do: parked TLS clients, a long line of
control bytes, thousands of sessions, and nobody reading the stream.

    .venv/bin/python tests/bench/memory_bench.py [--case NAME] [--clients N]

Every figure is the relay process's resident memory read from /proc (VmHWM,
the peak; VmRSS, now), as tests/test_memory.py reads it. Each case starts a
fresh relay; the servers run in their own process (trio), the clients in this one.
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

PYTHON = sys.executable
LOCALHOST = "127.0.0.1"
LOGIN = b'{"class":"login_id","company":"default","ident":"bench","userlogin":"alice","version":"9999"}\n'
REPLY = b'{"class":"login_id","sessionid":"21UaGDfst7","timenow":1364994093.38,"xivoversion":"13.07"}\n'
OFFER = b'{"class": "starttls", "timenow": 1795857223.964011}\n'
ANSWER = b'{"class": "starttls", "timenow": 1795857223.964377, "starttls": true}\n'
STARTTLS = b'{"class":"starttls","commandid":1534986799,"status":true}\n'


def status(pid: int, field: str) -> float:
    """A memory figure of a process from /proc, in MB (VmHWM: its peak, VmRSS: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def raise_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


# --- the server (its own process) ---------------------------------------------------

def serve(mode: str, cert: str | None, key: str | None) -> None:
    """plain: answer each line with REPLY. tls: complete the handshake, then as plain.
    starttls: offer, answer a request, upgrade, then as plain."""
    import ssl
    import trio
    from ctipipe.relay import certs

    context = None
    if mode != "plain":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

    async def answer(stream) -> None:
        buffer = b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                _, buffer = buffer.split(b"\n", 1)
                await stream.send_all(REPLY)

    async def handler(stream) -> None:
        try:
            if mode == "tls":
                stream = trio.SSLStream(stream, context, server_side=True)
                await stream.do_handshake()
            elif mode == "starttls":
                await stream.send_all(OFFER)
                buffer = b""
                while not buffer.endswith(b"\n"):
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    buffer += data
                await stream.send_all(ANSWER)
                stream = trio.SSLStream(stream, context, server_side=True)
                await stream.do_handshake()
            await answer(stream)
        except (trio.BrokenResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def main() -> None:
        raise_descriptor_limit()
        listeners = await trio.open_tcp_listeners(0, host=LOCALHOST, backlog=4096)
        print(listeners[0].socket.getsockname()[1], flush=True)
        await trio.serve_listeners(handler, listeners)

    del certs
    trio.run(main)


class Server:
    def __init__(self, mode: str, cert: str | None = None, key: str | None = None) -> None:
        argv = [PYTHON, "-P", __file__, "--serve", mode, cert or "-", key or "-"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- the relay ---------------------------------------------------------------------

class Relay:
    """ctirelay --loop; its stream read and counted (or not read at all)."""

    def __init__(self, server_port: int, *options: str, read: bool = True, env=None) -> None:
        self.port = free_port()
        argv = [PYTHON, "-P", "-m", "ctipipe", "ctirelay", LOCALHOST, "--port", str(server_port),
                "--listen-addr", LOCALHOST, "--listen-port", str(self.port), "--loop", *options]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.ends = 0  # close and error records seen
        self.err = b""
        threading.Thread(target=self._stderr, daemon=True).start()
        if read:
            threading.Thread(target=self._stdout, daemon=True).start()
        deadline = time.monotonic() + 30
        while b"listening on" not in self.err:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the relay did not start: {self.err!r}")
            time.sleep(0.02)

    def _stdout(self) -> None:
        fd = self.proc.stdout.fileno()
        tail = b""
        while chunk := os.read(fd, 1 << 20):
            text = tail + chunk
            self.ends += text.count(b'"event":"close"') + text.count(b'"event":"error"')
            tail = text[-14:]  # (shorter than either: never counted twice)

    def _stderr(self) -> None:
        for line in self.proc.stderr:
            self.err += line

    def peak(self) -> float:
        return status(self.proc.pid, "VmHWM")

    def now(self) -> float:
        return status(self.proc.pid, "VmRSS")

    def wait_ends(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.ends < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.ends} of {count} sessions ended")
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def connect_many(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        clients.append(socket.create_connection((LOCALHOST, port), timeout=60))
    return clients


def read_line(sock: socket.socket) -> bytes:
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed")
        got += chunk
    return got


# --- the cases ---------------------------------------------------------------------

def parked_tls(clients: int, cert: str, key: str, env) -> dict:
    """--tls clients that connect and never begin their handshake, then leave."""
    server = Server("tls", cert, key)
    relay = Relay(server.port, "--tls", env=env)
    try:
        parked = connect_many(relay.port, clients)
        time.sleep(2)  # the relay takes in what it will
        peak = relay.peak()
        for sock in parked:
            sock.close()
        relay.wait_ends(clients, timeout=300)
        time.sleep(1)
        return {"peak": peak, "after": relay.now(), "max": relay.peak()}
    finally:
        relay.close()
        server.close()


def long_line(size: int, byte: bytes) -> dict:
    """One line of `size` bytes of `byte` from the client; the stream read as it comes."""
    server = Server("plain")
    relay = Relay(server.port)
    try:
        client = socket.create_connection((LOCALHOST, relay.port), timeout=60)
        client.sendall(byte * size + b"\n")
        read_line(client)
        client.close()
        relay.wait_ends(1)
        return {"peak": relay.peak(), "after": relay.now()}
    finally:
        relay.close()
        server.close()


def active_sessions(clients: int, mode: str, read: bool, cert=None, key=None, env=None) -> dict:
    """Sessions that each log in (a request, a reply) and stay open."""
    import ssl
    server = Server(mode, cert, key)
    relay = Relay(server.port, read=read, env=env)
    context = None
    if mode == "starttls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        socks = []
        for _ in range(clients):
            sock = socket.create_connection((LOCALHOST, relay.port), timeout=60)
            if context is not None:
                read_line(sock)  # the offer
                sock.sendall(STARTTLS)
                read_line(sock)  # the answer
                sock = context.wrap_socket(sock)
            sock.sendall(LOGIN)
            read_line(sock)
            socks.append(sock)
        peak = relay.peak()
        for sock in socks:
            sock.close()
        if read:
            relay.wait_ends(clients)
            time.sleep(1)
        return {"peak": peak, "after": relay.now() if read else float("nan")}
    finally:
        relay.close()
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("parked", "line", "active", "unread"), action="append")
    parser.add_argument("--clients", type=int, default=0, help="instead of each case's default")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        mode, cert, key = args.serve
        serve(mode, cert, key)
        return 0
    raise_descriptor_limit()
    cases = args.case or ["parked", "line", "active", "unread"]
    print("| case | relay peak RSS | after the clients left |")
    print("|---|---:|---:|")

    def row(label: str, figures: dict) -> None:
        after = figures["after"]
        print(f"| {label} | {figures['peak']:.0f} MB | "
              f"{'-' if after != after else f'{after:.0f} MB'} |", flush=True)

    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "XDG_DATA_HOME": data}
        from ctipipe.relay import certs
        cert, key, _ = certs.relay_certificate(Path(data) / "bench-server")
        if "parked" in cases:
            n = args.clients or 4000
            row(f"{n:,} `--tls` clients that never begin their handshake",
                parked_tls(n, str(cert), str(key), env))
        if "line" in cases:
            row("one 15 MiB line of `\\x01` (stream read)", long_line(15 << 20, b"\x01"))
        if "active" in cases:
            n = args.clients or 5000
            row(f"{n:,} plain sessions open at once (stream read)", active_sessions(n, "plain", True))
        if "unread" in cases:
            n = args.clients or 600
            row(f"{n:,} plain sessions, nobody reading the stream",
                active_sessions(n, "plain", False))
            row(f"{n:,} STARTTLS sessions, nobody reading the stream",
                active_sessions(n, "starttls", False, str(cert), str(key), env))
    return 0


if __name__ == "__main__":
    sys.exit(main())

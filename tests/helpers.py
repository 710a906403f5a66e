"""Real processes and real sockets on 127.0.0.1 for the tests, always killed by pid."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

LOCALHOST = "127.0.0.1"
PYTHON = sys.executable
WAIT = 10.0  # no single wait in a test lasts longer than this

# Every process a test starts, so that the test's teardown kills (by pid) whatever
# is still running, even when an assertion ended the test early.
STARTED: list = []


def kill_started() -> None:
    while STARTED:
        proc = STARTED.pop()
        for child in children(proc.pid):
            _kill(child)
        proc.kill()


def children(pid: int) -> list[int]:
    """The pids of a process's children, from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def command(name: str, *args: str) -> list[str]:
    """How the tests start a command: the same entry point as bin/ and the wrappers."""
    return [PYTHON, "-P", "-m", "ctipipe", name, *args]


class Collecting:
    """Output collected by a reading thread: `out` so far, and waits for a condition
    on it. A subclass sets `_out` and `_cond`, and says what `err` is."""

    _out: bytearray
    _cond: threading.Condition

    def _read_into_out(self, fd: int) -> None:
        while data := os.read(fd, 1 << 16):
            with self._cond:
                self._out += data
                self._cond.notify_all()

    @property
    def out(self) -> bytes:
        with self._cond:
            return bytes(self._out)

    def wait_for(self, predicate, timeout: float = WAIT, what: str = "condition") -> None:
        """Wait until predicate(self) holds, or fail showing what we have."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.err}\n"
                                         f"stdout tail:\n{bytes(self._out[-2000:])!r}")
                self._cond.wait(min(left, 0.1))

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines()]


class Proc(Collecting):
    """A started command whose stdout and stderr are collected by threads."""

    def __init__(self, argv: list[str], *, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 env: dict | None = None, collect: bool = True, **popen) -> None:
        self.popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                      env=env, **popen)
        self.pid = self.popen.pid
        STARTED.append(self)
        self._out = bytearray()
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._read_err, daemon=True)]
        if stdout == subprocess.PIPE and collect:
            self._threads.append(threading.Thread(target=self._read_out, daemon=True))
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        self._read_into_out(self.popen.stdout.fileno())

    def _read_err(self) -> None:
        for line in self.popen.stderr:
            with self._cond:
                self._err.append(line.decode("utf-8", "replace"))
                self._cond.notify_all()

    @property
    def err(self) -> str:
        with self._cond:
            return "".join(self._err)

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signum)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the process to end by itself (killing it if it does not), collect output."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.popen.args} did not exit; stderr:\n{self.err}")
        for thread in self._threads:
            thread.join(WAIT)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(WAIT)


class Relay(Proc):
    """ctirelay on a port the kernel chose, learnt from its -v line."""

    def __init__(self, server_port: int, *args: str, **popen) -> None:
        super().__init__(command("ctirelay", LOCALHOST, "--port", str(server_port),
                                 "--listen-addr", LOCALHOST, "--listen-port", "0", "-v", *args),
                         **popen)
        self.wait_for(lambda p: "listening on" in p.err, what="the relay to listen")
        self.port = int(self.err.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

    def connect(self) -> socket.socket:
        return socket.create_connection((LOCALHOST, self.port), timeout=WAIT)

    def closes(self) -> list[dict]:
        return [r for r in self.records() if r.get("event") == "close"]


class Server:
    """A listening socket on 127.0.0.1 standing in for the CTI server."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(1024)
        self.sock.settimeout(WAIT)
        self.port = self.sock.getsockname()[1]

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(WAIT)
        return conn

    def close(self) -> None:
        self.sock.close()


def recv_all(sock: socket.socket, count: int | None = None) -> bytes:
    """Read until EOF (or until `count` bytes)."""
    data = bytearray()
    while count is None or len(data) < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def send_in_chunks(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    """Send data cut at the given offsets, each piece its own send with TCP_NODELAY."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    last = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        sock.sendall(data[last:cut])
        last = cut


def reset(sock: socket.socket) -> None:
    """Close with RST."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def is_closed(sock: socket.socket) -> bool:
    """True once the peer has closed the connection (with FIN or with RST)."""
    try:
        return recv_all(sock) == b""
    except ConnectionResetError:
        return True


def exchange(client: socket.socket, upstream: socket.socket, up: bytes, down: bytes,
             up_cuts=(), down_cuts=(), timeout: float = WAIT) -> dict:
    """Send both ways at once (cut at the given offsets), half-close both sides,
    read each side to EOF, close; return {"up": what the server got, "down": what
    the client got}."""
    got = {}
    readers = [threading.Thread(target=lambda: got.__setitem__("up", recv_all(upstream))),
               threading.Thread(target=lambda: got.__setitem__("down", recv_all(client)))]
    senders = [threading.Thread(target=send_in_chunks, args=(client, up, list(up_cuts))),
               threading.Thread(target=send_in_chunks, args=(upstream, down, list(down_cuts)))]
    for thread in readers + senders:
        thread.start()
    for thread in senders:
        thread.join(timeout)
    client.shutdown(socket.SHUT_WR)
    upstream.shutdown(socket.SHUT_WR)
    for thread in readers:
        thread.join(timeout)
    client.close()
    upstream.close()
    return got

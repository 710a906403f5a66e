"""The load tool: a fake CTI server and a checking client, on 127.0.0.1.

The server either streams a pre-built buffer of realistic messages in large
writes, or answers each request line with one reply (round-trip mode). The
client checks that every byte arrived unchanged, by length and CRC-32.
"""
from __future__ import annotations

import socket
import threading
import time
import zlib

LOCALHOST = "127.0.0.1"
REPLY = (b'{"class":"ipbxcommand","command":"hangup","ipbxreply":1,"replyid":177773016,'
         b'"timenow":1395756534.64}\n')
REQUEST = (b'{"class":"ipbxcommand","command":"hangup","channelids":"chan:xivo/SIP/im2p7kzr-00000003",'
           b'"commandid":177773016}\n')


class FakeServer:
    """Streams `payload` to every client (stream mode) or answers each line (reply mode)."""

    def __init__(self, payload: bytes = b"", reply: bool = False, rate: int = 0) -> None:
        self.payload = payload
        self.reply = reply
        self.rate = rate  # messages per second; 0: as fast as possible
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                if not self.reply:
                    self._stream(conn)
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                    return
                reader = conn.makefile("rb")
                for _ in reader:
                    conn.sendall(REPLY)
            except OSError:
                pass

    def _stream(self, conn: socket.socket) -> None:
        if not self.rate:
            conn.sendall(self.payload)
            return
        # Paced: a slice every TICK seconds, on a schedule that does not drift.
        lines = self.payload.splitlines(keepends=True)
        per_tick = max(1, int(self.rate * TICK))
        start = time.perf_counter()
        for n, first in enumerate(range(0, len(lines), per_tick)):
            delay = start + n * TICK - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            conn.sendall(b"".join(lines[first:first + per_tick]))

    def close(self) -> None:
        self.sock.close()


TICK = 0.005  # paced streaming sends a slice of messages this often


class ServerProcess:
    """A FakeServer in its own process, so that it never competes with the
    measuring client for one interpreter lock."""

    def __init__(self, count: int = 0, reply: bool = False, rate: int = 0) -> None:
        import subprocess
        import sys
        argv = [sys.executable, __file__, "--reply" if reply else f"--messages={count}",
                f"--rate={rate}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """Connect, retrying while the proxy under test is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((LOCALHOST, port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def receive_stream(port: int, expected_len: int, expected_crc: int,
                   start: float | None = None) -> float:
    """Connect, receive everything until EOF, check it; return seconds taken
    (since `start`, or since connected)."""
    sock = connect(port)
    start = time.perf_counter() if start is None else start
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    total = 0
    crc = 0
    while True:
        n = sock.recv_into(view)
        if not n:
            break
        crc = zlib.crc32(view[:n], crc)
        total += n
    elapsed = time.perf_counter() - start
    sock.close()
    if total != expected_len or crc != expected_crc:
        raise AssertionError(f"stream corrupted: {total} bytes (expected {expected_len}), "
                             f"crc {crc:#x} (expected {expected_crc:#x})")
    return elapsed


def round_trips(port: int, count: int) -> list[float]:
    """Send one request at a time, wait for its reply; return each round trip in seconds."""
    sock = connect(port)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(REQUEST)
        got = b""
        while not got.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise AssertionError("connection closed during round trips")
            got += chunk
        times.append(time.perf_counter() - start)
        if got != REPLY:
            raise AssertionError(f"reply corrupted: {got!r}")
    sock.close()
    return times


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="a fake CTI server for the benchmark")
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--reply", action="store_true")
    parser.add_argument("--rate", type=int, default=0)
    args = parser.parse_args()
    import messages
    payload = b"".join(messages.messages(args.messages)) if args.messages else b""
    server = FakeServer(payload, reply=args.reply, rate=args.rate)
    print(server.port, flush=True)
    threading.Event().wait()

"""The TLS benchmark: a STARTTLS session through ctirelay, intercepted, against
the plain ctirelay in the same run.

The server does what XiVO 15.20-19.03 do (offer, answer, then TLS 1.0), the
client what the XiVO client does (asks, then TLS). After the upgrade the server
streams realistic messages (recorded messages/s: until ctirelay has written
every record) or answers one request at a time (p50 round trip, client, relay
and server on one core, as in run.py). Cases run interleaved so that drift hits
both alike; the targets are ratios per repetition.

    bin/bench --tls [--reps 3] [--messages 100000] [--round-trips 2000]
"""
from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import load  # noqa: E402
import messages  # noqa: E402

PYTHON = sys.executable
LATENCY_CORE = 0
OFFER = b'{"class": "starttls", "timenow": 1795857223.964011}\n'
ANSWER = b'{"class": "starttls", "timenow": 1795857223.964377, "starttls": true}\n'
REQUEST = b'{"class":"starttls","commandid":1534986799,"status":true}\n'


def _context(server: bool, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1  # as the XiVO server and client
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if server:
        context.load_cert_chain(cert, key)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- the server (its own process) -------------------------------------------------

def _serve(payload: bytes, reply: bool, cert: str, key: str) -> None:
    context = _context(True, cert, key)
    listener = socket.socket()
    listener.bind((load.LOCALHOST, 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_session, args=(conn, context, payload, reply), daemon=True).start()


def _session(conn: socket.socket, context, payload: bytes, reply: bool) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        conn.sendall(OFFER)
        got = b""
        while not got.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                return
            got += chunk
        conn.sendall(ANSWER)
        conn.settimeout(0.5)  # the real server's handshake deadline
        tls = context.wrap_socket(conn, server_side=True)
        tls.settimeout(None)
        if not reply:
            tls.sendall(payload)
            tls.close()
            return
        buffered = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            buffered += chunk
            lines = buffered.count(b"\n")
            if lines:
                buffered = buffered[buffered.rfind(b"\n") + 1:]
                tls.sendall(load.REPLY * lines)
        tls.close()
    except OSError:
        pass


class TLSServer:
    def __init__(self, cert: str, key: str, count: int = 0, reply: bool = False) -> None:
        argv = [PYTHON, __file__, "--serve", cert, key, "--reply" if reply else f"--messages={count}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- the client -------------------------------------------------------------------------

def _upgrade(port: int) -> ssl.SSLSocket:
    sock = load.connect(port)
    got = b""
    while not got.endswith(b"\n"):
        got += sock.recv(4096)
    sock.sendall(REQUEST)
    got = b""
    while not got.endswith(b"\n"):
        got += sock.recv(4096)
    return _context(False).wrap_socket(sock)


def _receive(port: int, length: int, crc: int) -> None:
    sock = _upgrade(port)
    total, check = 0, 0
    while chunk := sock.recv(1 << 16):
        check = zlib.crc32(chunk, check)
        total += len(chunk)
    sock.close()
    if (total, check) != (length, crc):
        raise AssertionError(f"stream corrupted: {total} bytes (expected {length})")


def _round_trips(port: int, count: int) -> list[float]:
    sock = _upgrade(port)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(load.REQUEST)
        got = b""
        while not got.endswith(b"\n"):
            got += sock.recv(4096)
        times.append(time.perf_counter() - start)
        if got != load.REPLY:
            raise AssertionError(f"reply corrupted: {got!r}")
    sock.close()
    return times


# --- the measurements --------------------------------------------------------------------

def _relay(server_port: int, env: dict) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen([PYTHON, "-m", "ctipipe", "ctirelay", load.LOCALHOST, "--port",
                             str(server_port), "--listen-addr", load.LOCALHOST, "--listen-port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return proc, port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((load.LOCALHOST, 0))
        return s.getsockname()[1]


def recorded_rate(tls: bool, server_port: int, length: int, crc: int, count: int, env) -> float:
    """Messages per second, from connect until ctirelay has written every record."""
    proc, port = _relay(server_port, env)
    try:
        start = time.perf_counter()
        if tls:
            _receive(port, length, crc)
        else:
            load.receive_stream(port, length, crc, start)
        err = proc.communicate(timeout=300)[1]
        done = time.perf_counter()
        if b"output too slow" in err:
            raise AssertionError("records were lost: " + err.decode())
        return count / (done - start)
    finally:
        proc.kill()


def round_trip(tls: bool, server_port: int | None, count: int, env) -> float:
    """Median round trip in µs on one core; server_port None: straight to the server."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {LATENCY_CORE})
    try:
        proc, port = _relay(server_port[0], env) if server_port[1] else (None, server_port[0])
        try:
            times = (_round_trips if tls else load.round_trips)(port, count)
            return statistics.median(times) * 1e6
        finally:
            if proc is not None:
                proc.kill()
    finally:
        os.sched_setaffinity(0, before)


def run(reps: int, count: int, trips: int) -> dict:
    """Measure and print the TLS table; return the medians (for run.py)."""
    sample = messages.messages(count)
    payload = b"".join(sample)
    length, crc = len(payload), zlib.crc32(payload)
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "XDG_DATA_HOME": data}  # the relay's certificate, made once here
        from ctipipe.relay import certs as tls_module
        cert, key, _ = tls_module.relay_certificate(Path(data) / "bench-server")
        plain_stream = load.ServerProcess(count)
        tls_stream = TLSServer(str(cert), str(key), count)
        everywhere = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {LATENCY_CORE})
        plain_reply = load.ServerProcess(reply=True)
        tls_reply = TLSServer(str(cert), str(key), reply=True)
        os.sched_setaffinity(0, everywhere)
        rates = {"plain": [], "tls": []}
        lat = {"plain direct": [], "plain": [], "tls direct": [], "tls": []}
        try:
            for rep in range(reps):
                rates["plain"].append(recorded_rate(False, plain_stream.port, length, crc, count, env))
                rates["tls"].append(recorded_rate(True, tls_stream.port, length, crc, count, env))
                lat["plain direct"].append(round_trip(False, (plain_reply.port, False), trips, env))
                lat["plain"].append(round_trip(False, (plain_reply.port, True), trips, env))
                lat["tls direct"].append(round_trip(True, (tls_reply.port, False), trips, env))
                lat["tls"].append(round_trip(True, (tls_reply.port, True), trips, env))
                print(f"TLS repetition {rep + 1}: plain {rates['plain'][-1] / 1000:.0f}k msg/s, "
                      f"intercepted {rates['tls'][-1] / 1000:.0f}k msg/s", flush=True)
        finally:
            for server in (plain_stream, tls_stream, plain_reply, tls_reply):
                server.close()
    rate = {k: statistics.median(v) for k, v in rates.items()}
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    print(f"\nTLS: {count} server messages after a STARTTLS upgrade (TLS 1.0 on both legs, as "
          f"XiVO); {reps} repetitions\n")
    print("| ctirelay session | recorded msg/s (all written) | p50 round trip | added p50 |")
    print("|---|---:|---:|---:|")
    print(f"| plain | {rate['plain']:,.0f} | {p50['plain']:.0f} µs | "
          f"{p50['plain'] - p50['plain direct']:.0f} µs |")
    print(f"| STARTTLS intercepted | {rate['tls']:,.0f} | {p50['tls']:.0f} µs | "
          f"{p50['tls'] - p50['tls direct']:.0f} µs |")
    print(f"| no relay (plain / TLS) | | {p50['plain direct']:.0f} / {p50['tls direct']:.0f} µs | |")
    rate_ratios = [t / p for t, p in zip(rates["tls"], rates["plain"])]
    added_ratios = [(t - td) / (p - pd) if p > pd else float("inf")
                    for t, td, p, pd in zip(lat["tls"], lat["tls direct"], lat["plain"],
                                            lat["plain direct"])]
    print("\ntargets (ratios per repetition):")
    for label, ratios, goal, at_least in (
            ("intercepted recorded msg/s >= 0.5x plain ctirelay", rate_ratios, 0.5, True),
            ("intercepted added p50 latency <= 2x plain ctirelay's", added_ratios, 2.0, False)):
        middle = statistics.median(ratios)
        met = middle >= goal if at_least else middle <= goal
        print(f"  {label}: {', '.join(f'{r:.2f}' for r in ratios)} -> {'met' if met else 'NOT met'}")
    return {"rate": rate, "p50": p50}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--reply", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        payload = b"".join(messages.messages(args.messages)) if args.messages else b""
        _serve(payload, args.reply, *args.serve)
        return 0
    run(args.reps, args.messages, args.round_trips)
    return 0


if __name__ == "__main__":
    sys.exit(main())

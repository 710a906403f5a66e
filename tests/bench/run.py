"""The benchmark: throughput, round-trip latency and memory of ctirelay and the
ctispy pipeline against a direct connection and socat, and each stage's speed on
a saved stream. Cases run interleaved (A B C A B C ...) so that the machine's
drift hits them all alike; the table shows medians and per-repetition ratios.

    bin/bench [--reps 3] [--messages 200000]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import load  # noqa: E402
import messages  # noqa: E402

PYTHON = sys.executable
CLASSIC_MSGS = 10_000  # the classic ctispy, measured by the issue on this kind of machine
CLASSIC_LATENCY_US = (430, 700)
STAGES = [["ctistrip", "timenow"], ["ctiinclude", "class=getlist"], ["ctiexclude", "class=getlist"],
          ["ctipretty", "--color", "never"], ["ctipretty", "--compact", "--color", "never"],
          ["ctisplit", "{tmp}/c", "{tmp}/s"], ["ctistat"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((load.LOCALHOST, 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Proxy:
    """One proxy under test, started fresh for each measurement."""

    def __init__(self, name: str, server_port: int) -> None:
        self.name = name
        self.port = free_port()
        relay_args = [load.LOCALHOST, "--port", str(server_port), "--listen-addr", load.LOCALHOST,
                      "--listen-port", str(self.port), "--loop"]
        if name == "direct":
            self.port = server_port
            self.proc = None
            return
        if name == "socat":
            argv = ["socat", f"TCP-LISTEN:{self.port},bind={load.LOCALHOST},reuseaddr,fork,nodelay",
                    f"TCP:{load.LOCALHOST}:{server_port},nodelay"]
        elif name == "ctirelay":
            argv = [PYTHON, "-m", "ctipipe", "ctirelay", *relay_args]
        else:  # the classic ctispy pipeline
            argv = [PYTHON, "-m", "ctipipe", "ctispy", *relay_args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def relay_pid(self) -> int | None:
        if self.proc is None or self.name == "socat":
            return self.proc.pid if self.proc else None
        if self.name == "ctirelay":
            return self.proc.pid
        kids = children(self.proc.pid)
        return kids[0] if kids else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def throughput(name: str, server: load.FakeServer, length: int, crc: int, count: int):
    proxy = Proxy(name, server.port)
    try:
        elapsed = load.receive_stream(proxy.port, length, crc)
        pid = proxy.relay_pid()
        rss = peak_rss_mb(pid) if pid else float("nan")
        return count / elapsed, rss
    finally:
        proxy.stop()


def latency(name: str, server: load.FakeServer, count: int) -> float:
    proxy = Proxy(name, server.port)
    try:
        times = load.round_trips(proxy.port, count)
        return statistics.median(times) * 1e6
    finally:
        proxy.stop()


def stalled_memory(server: load.FakeServer, length: int, crc: int) -> float:
    """ctirelay's peak memory when nobody reads its output at all."""
    port = free_port()
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([PYTHON, "-m", "ctipipe", "ctirelay", load.LOCALHOST, "--port",
                             str(server.port), "--listen-addr", load.LOCALHOST, "--listen-port",
                             str(port)], stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        load.receive_stream(port, length, crc)
        return peak_rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        os.close(read_end)


def stage_speed(argv: list[str], path: str, count: int, tmp: str) -> float:
    argv = [arg.format(tmp=tmp) for arg in argv]
    with open(path, "rb") as data:
        start = time.perf_counter()
        subprocess.run([PYTHON, "-m", "ctipipe", *argv], stdin=data, stdout=subprocess.DEVNULL,
                       check=True)
        return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--stage-records", type=int, default=500_000)
    parser.add_argument("--round-trips", type=int, default=2000)
    args = parser.parse_args()

    sample = messages.messages(args.messages)
    payload = b"".join(sample)
    length, crc = len(payload), zlib.crc32(payload)
    sizes = [len(m) for m in sample]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: {len(sample)} server messages, {min(sizes)}-{max(sizes)} bytes, "
          f"mean {statistics.mean(sizes):.0f}, {length / 1e6:.1f} MB a run; {args.reps} repetitions\n")
    streamer = load.FakeServer(payload)
    replier = load.FakeServer(reply=True)
    proxies = ["direct", *(["socat"] if shutil.which("socat") else []), "ctirelay", "ctispy"]
    if "socat" not in proxies:
        print("(socat not installed: apt-get install socat to compare against it)\n")
    rates = {p: [] for p in proxies}
    rss = {p: [] for p in proxies}
    lat = {p: [] for p in proxies}
    stage_rates = {" ".join(s): [] for s in STAGES}
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "session.jsonl")
        messages.stream_file(saved, args.stage_records)
        for rep in range(args.reps):
            for proxy in proxies:
                rate, peak = throughput(proxy, streamer, length, crc, len(sample))
                rates[proxy].append(rate)
                rss[proxy].append(peak)
                lat[proxy].append(latency(proxy, replier, args.round_trips))
            for stage in STAGES:
                stage_rates[" ".join(stage)].append(stage_speed(stage, saved, args.stage_records, tmp))
            print(f"repetition {rep + 1}: " + ", ".join(f"{p} {rates[p][-1] / 1000:.0f}k msg/s"
                                                      for p in proxies), flush=True)
        stalled = stalled_memory(streamer, length, crc)

    med = {p: statistics.median(v) for p, v in rates.items()}
    med_lat = {p: statistics.median(v) for p, v in lat.items()}
    print("\n| relay | messages/s (median) | p50 round trip | added p50 | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for p in proxies:
        added = med_lat[p] - med_lat["direct"]
        print(f"| {p} | {med[p]:,.0f} | {med_lat[p]:.0f} µs | "
              f"{'-' if p == 'direct' else f'{added:.0f} µs'} | "
              f"{'-' if p == 'direct' else f'{max(rss[p]):.1f} MB'} |")
    print(f"| classic ctispy (reference, not run) | ~{CLASSIC_MSGS:,} | | "
          f"~{CLASSIC_LATENCY_US[0]}–{CLASSIC_LATENCY_US[1]} µs | 16 MB |")

    print("\n| stage on a saved stream | records/s (median) |")
    print("|---|---:|")
    for stage, values in stage_rates.items():
        print(f"| `{stage.replace('{tmp}/', '')} < file > /dev/null` | {statistics.median(values):,.0f} |")

    print("\ntargets (per repetition where both ran in it):")
    checks = []
    relay_vs_classic = [r / CLASSIC_MSGS for r in rates["ctirelay"]]
    checks.append(("ctirelay >= 20x classic ctispy", relay_vs_classic, 20))
    if "socat" in proxies:
        checks.append(("ctirelay >= 0.1x socat", [a / b for a, b in zip(rates["ctirelay"], rates["socat"])], 0.1))
    checks.append(("ctispy pipeline >= 10x classic ctispy", [r / CLASSIC_MSGS for r in rates["ctispy"]], 10))
    for label, ratios, goal in checks:
        verdict = "met" if statistics.median(ratios) >= goal else "NOT met"
        print(f"  {label}: ratios {', '.join(f'{r:.2f}' for r in ratios)} -> {verdict}")
    slowest = min(statistics.median(v) for v in stage_rates.values())
    print(f"  every stage >= 250,000 records/s: slowest {slowest:,.0f} -> "
          f"{'met' if slowest >= 250_000 else 'NOT met'}")
    if "socat" in proxies:
        added = {p: [a - d for a, d in zip(lat[p], lat["direct"])] for p in ("ctirelay", "socat")}
        ratios = [r / s if s > 0 else float("inf") for r, s in zip(added["ctirelay"], added["socat"])]
        print(f"  ctirelay added p50 latency <= 1.5x socat's: ratios "
              f"{', '.join(f'{r:.2f}' for r in ratios)} -> "
              f"{'met' if statistics.median(ratios) <= 1.5 else 'NOT met'}")
    print(f"  ctirelay peak RSS <= 40 MB with one busy session: {max(rss['ctirelay']):.1f} MB -> "
          f"{'met' if max(rss['ctirelay']) <= 40 else 'NOT met'}")
    print(f"  ctirelay peak RSS when nobody reads its output ({length / 1e6:.0f} MB relayed): "
          f"{stalled:.1f} MB (bound: 8 MiB tap buffer + one write batch + the interpreter)")
    streamer.close()
    replier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

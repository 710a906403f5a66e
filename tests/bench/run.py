"""The benchmark: throughput, round-trip latency and memory of ctirelay and the
ctispy pipeline against a direct connection and socat, and each stage's speed on
a saved stream. Cases run interleaved (A B C A B C ...) so that the machine's
drift hits them all alike; the table shows medians and per-repetition ratios.

    bin/bench [--reps 3] [--messages 200000] [--only relay|tls|PART]

The full run ends with the STARTTLS rows (tls_bench.py), then each of PARTS, a
script of its own (PART_bench.py): ctireplay as a load, ctidiff on large
sessions, cticheck on 1,000,000 messages, ctireport's page, ctipcap on a 1 GB
capture, the relay's memory under what peers can do; --only runs one part.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import load  # noqa: E402
import messages  # noqa: E402
import tls_bench  # noqa: E402

# The parts after the relay and TLS rows, each tests/bench/PART_bench.py.
PARTS = ("replay", "diff", "check", "report", "pcap", "memory")

PYTHON = sys.executable
CLASSIC_MSGS = 10_000  # the classic ctispy, measured by the issue on this kind of machine
CLASSIC_LATENCY_US = (430, 700)
LATENCY_CORE = 0
SUSTAIN_RATES = (50_000, 100_000, 150_000, 200_000, 300_000, 400_000)
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
    """One proxy under test, started fresh for each measurement. Ours serve one
    session (no --loop) so that they exit once every record is written."""

    def __init__(self, name: str, server_port: int) -> None:
        self.name = name
        self.port = free_port()
        self.proc = None
        relay_args = [load.LOCALHOST, "--port", str(server_port), "--listen-addr", load.LOCALHOST,
                      "--listen-port", str(self.port)]
        if name == "direct":
            self.port = server_port
            return
        if name == "bare trio":
            argv = [PYTHON, str(HERE / "bare_trio.py"), str(self.port), str(server_port)]
        elif name == "socat":
            argv = ["socat", f"TCP-LISTEN:{self.port},bind={load.LOCALHOST},reuseaddr,fork,nodelay",
                    f"TCP:{load.LOCALHOST}:{server_port},nodelay"]
        elif name == "ctirelay":
            argv = [PYTHON, "-m", "ctipipe", "ctirelay", *relay_args]
        else:  # the classic ctispy pipeline
            argv = [PYTHON, "-m", "ctipipe", "ctispy", *relay_args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.stderr = b""
        self.peak = 0.0
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        """Peak RSS of the relay process, read from /proc while it runs."""
        while self.proc.poll() is None:
            pid = self.relay_pid()
            if pid:
                try:
                    self.peak = max(self.peak, peak_rss_mb(pid))
                except (OSError, ValueError):
                    pass
            time.sleep(0.01)

    def relay_pid(self) -> int | None:
        if self.name == "ctispy":
            kids = children(self.proc.pid)
            return kids[0] if kids else None
        return self.proc.pid

    def finish(self) -> tuple[float, int]:
        """Wait for our relay to exit (all records written); return when, and records lost."""
        if self.name in ("socat", "bare trio"):
            self.stop()
            return time.perf_counter(), 0
        self.stderr = self.proc.communicate(timeout=120)[1]
        done = time.perf_counter()
        lost = sum(int(n) for n in re.findall(rb"output too slow: (\d+) records", self.stderr))
        return done, lost

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def throughput(name: str, server_port: int, length: int, crc: int, count: int) -> dict:
    proxy = Proxy(name, server_port)
    try:
        start = time.perf_counter()
        forwarded = load.receive_stream(proxy.port, length, crc, start)
        if proxy.proc is None:
            return {"forwarded": count / forwarded}
        done, lost = proxy.finish()
        return {"forwarded": count / forwarded, "recorded": (count - lost) / (done - start),
                "lost": lost, "rss": proxy.peak}
    finally:
        if proxy.proc is not None:
            proxy.stop()


def latency(name: str, server_port: int, count: int) -> float:
    """Median round trip, with client, proxy and server all on one core.

    Spread over two cores, a loopback round trip on this kind of machine is
    either about 7 or about 75 µs depending on where the scheduler puts the
    processes, which drowns the proxies' own cost; on one core the added
    latency is the CPU time the proxy spends per round trip, and repeatable.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {LATENCY_CORE})  # the proxy and its stages inherit it
    try:
        proxy = Proxy(name, server_port)
        try:
            times = load.round_trips(proxy.port, count)
            return statistics.median(times) * 1e6
        finally:
            if proxy.proc is not None:
                proxy.stop()
    finally:
        os.sched_setaffinity(0, before)


def stalled_memory(server_port: int, length: int, crc: int) -> float:
    """ctirelay's peak memory when nobody reads its output at all."""
    port = free_port()
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([PYTHON, "-m", "ctipipe", "ctirelay", load.LOCALHOST, "--port",
                             str(server_port), "--listen-addr", load.LOCALHOST, "--listen-port",
                             str(port)], stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        load.receive_stream(port, length, crc)
        return peak_rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        os.close(read_end)


def sustained_rates(seconds: float) -> dict:
    """The highest paced rate each of our relays records without losing a record."""
    result = {}
    for name in ("ctirelay", "ctispy"):
        best = 0
        for rate in SUSTAIN_RATES:
            count = int(rate * seconds)
            sample = b"".join(messages.messages(count))
            server = load.ServerProcess(count, rate=rate)
            try:
                run = throughput(name, server.port, len(sample), zlib.crc32(sample), count)
            finally:
                server.close()
            if run["lost"]:
                break
            best = rate
        result[name] = best
    return result


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
    parser.add_argument("--sustain-seconds", type=float, default=1.0)
    parser.add_argument("--only", choices=("relay", "tls", *PARTS),
                        help="run only this part")
    parser.add_argument("--tls", action="store_const", dest="only", const="tls",
                        help="the same as --only tls")
    args = parser.parse_args()
    if args.only in (None, "relay"):
        relay_part(args)
    if args.only in (None, "tls"):
        print()
        tls_bench.run(args.reps, args.messages, args.round_trips)
    for part in PARTS:
        if args.only in (None, part):
            print()
            subprocess.run([PYTHON, str(HERE / f"{part}_bench.py")], check=True)
    return 0


def relay_part(args) -> None:

    sample = messages.messages(args.messages)
    payload = b"".join(sample)
    length, crc = len(payload), zlib.crc32(payload)
    sizes = [len(m) for m in sample]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: {len(sample)} server messages, {min(sizes)}-{max(sizes)} bytes, "
          f"mean {statistics.mean(sizes):.0f}, {length / 1e6:.1f} MB a run; {args.reps} repetitions\n")
    streamer = load.ServerProcess(args.messages)
    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {LATENCY_CORE})  # the replying server and its threads inherit it
    replier = load.ServerProcess(reply=True)
    os.sched_setaffinity(0, everywhere)
    proxies = ["direct", *(["socat"] if shutil.which("socat") else []), "ctirelay", "ctispy"]
    if "socat" not in proxies:
        print("(socat not installed: apt-get install socat to compare against it)\n")
    runs = {p: [] for p in proxies}
    lat = {p: [] for p in proxies}
    floor = []  # a trio relay that records nothing: how much latency trio itself adds
    stage_rates = {" ".join(s): [] for s in STAGES}
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "session.jsonl")
        messages.stream_file(saved, args.stage_records)
        for rep in range(args.reps):
            for proxy in proxies:
                runs[proxy].append(throughput(proxy, streamer.port, length, crc, len(sample)))
                lat[proxy].append(latency(proxy, replier.port, args.round_trips))
            floor.append(latency("bare trio", replier.port, args.round_trips))
            for stage in STAGES:
                stage_rates[" ".join(stage)].append(stage_speed(stage, saved, args.stage_records, tmp))
            print(f"repetition {rep + 1}: " + ", ".join(
                f"{p} {runs[p][-1]['forwarded'] / 1000:.0f}k msg/s" for p in proxies), flush=True)
        stalled = stalled_memory(streamer.port, length, crc)
        sustained = sustained_rates(args.sustain_seconds)

    def median(proxy: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[proxy])

    med_lat = {p: statistics.median(v) for p, v in lat.items()}
    print("\n| relay | forwarded msg/s | recorded msg/s (all written) | records lost | "
          "p50 round trip | added p50 | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        ours = p in ("ctirelay", "ctispy")
        recorded = f"{median(p, 'recorded'):,.0f}" if ours else "-"
        lost = str(sum(run["lost"] for run in runs[p])) if ours else "-"
        added = "-" if p == "direct" else f"{med_lat[p] - med_lat['direct']:.0f} µs"
        rss = f"{max(run['rss'] for run in runs[p]):.1f} MB" if ours else "-"
        print(f"| {p} | {median(p, 'forwarded'):,.0f} | {recorded} | {lost} | "
              f"{med_lat[p]:.0f} µs | {added} | {rss} |")
    print(f"| bare trio relay (forwards only; latency floor for trio) | | | | "
          f"{statistics.median(floor):.0f} µs | {statistics.median(floor) - med_lat['direct']:.0f} µs | |")
    print(f"| classic ctispy (reference, not run) | ~{CLASSIC_MSGS:,} | | | | "
          f"~{CLASSIC_LATENCY_US[0]}–{CLASSIC_LATENCY_US[1]} µs | 16 MB |")

    print(f"\nsustained with no record lost (server paced, {args.sustain_seconds:g} s per step, "
          f"steps {', '.join(f'{r // 1000}k' for r in SUSTAIN_RATES)} msg/s): "
          + ", ".join(f"{name} {rate:,} msg/s" for name, rate in sustained.items()))
    print("\n| stage on a saved stream | records/s (median) |")
    print("|---|---:|")
    for stage, values in stage_rates.items():
        print(f"| `{stage.replace('{tmp}/', '')} < file > /dev/null` | {statistics.median(values):,.0f} |")

    print("\ntargets (ratios per repetition; the relay's rate counts only what it also recorded):")
    checks = []
    relay = [run["recorded"] for run in runs["ctirelay"]]
    checks.append(("ctirelay >= 20x classic ctispy", [r / CLASSIC_MSGS for r in relay], 20, ">="))
    if "socat" in proxies:
        checks.append(("ctirelay >= 0.1x socat",
                       [a / b["forwarded"] for a, b in zip(relay, runs["socat"])], 0.1, ">="))
    checks.append(("ctispy pipeline >= 10x classic ctispy (sustained, no loss)",
                   [sustained["ctispy"] / CLASSIC_MSGS], 10, ">="))
    if "socat" in proxies:
        added = {p: [a - d for a, d in zip(lat[p], lat["direct"])] for p in ("ctirelay", "socat")}
        checks.append(("ctirelay added p50 latency <= 1.5x socat's",
                       [r / s if s > 0 else float("inf") for r, s in zip(added["ctirelay"], added["socat"])],
                       1.5, "<="))
    for label, ratios, goal, sense in checks:
        met = statistics.median(ratios) >= goal if sense == ">=" else statistics.median(ratios) <= goal
        print(f"  {label}: {', '.join(f'{r:.2f}' for r in ratios)} -> {'met' if met else 'NOT met'}")
    slowest = min(statistics.median(v) for v in stage_rates.values())
    print(f"  every stage >= 250,000 records/s: slowest {slowest:,.0f} -> "
          f"{'met' if slowest >= 250_000 else 'NOT met'}")
    peak = max(run["rss"] for run in runs["ctirelay"])
    print(f"  ctirelay peak RSS <= 40 MB with one busy session: {peak:.1f} MB -> "
          f"{'met' if peak <= 40 else 'NOT met'}")
    print(f"  ctirelay peak RSS when nobody reads its output ({length / 1e6:.0f} MB relayed): "
          f"{stalled:.1f} MB (bound: 1 MiB tap queue + 5 MiB of formatted records + one batch "
          f"+ the interpreter)")
    streamer.close()
    replier.close()


if __name__ == "__main__":
    sys.exit(main())

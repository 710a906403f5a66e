"""ctipcap's speed and memory on a large generated capture, beside tshark's
`-z follow,tcp,raw` on the same file. Target: at least 100,000 packets/s end to
end (read, reassemble, split, write), and a 1 GB capture under 200 MB.

The capture is what tcpdump on a busy CTI server writes: SESSIONS connections
interleaved, each server message one segment answered by a pure ACK, one
client request every CLIENT_EVERY messages, and a retransmission now and then.

    .venv/bin/python tests/bench/pcap_bench.py [--mb 1024] [--tshark-mb 200]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import messages  # noqa: E402

PYTHON = sys.executable
SESSIONS = 50
CLIENT_EVERY = 7
RETRANSMIT_EVERY = 997
REQUEST = b'{"class":"ipbxcommand","command":"queuepause","member":"agent:xivo/1","commandid":123456789}\n'


def _frame(src: int, sport: int, dst: int, dport: int, seq: int, ack: int, flags: int,
           data: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40 + len(data), 0, 0x4000, 64, 6, 0, src, dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50,
                      flags, 1024, 0, 0)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + data


def generate(path: Path, size: int) -> int:
    """Write a capture of about `size` bytes; its number of packets."""
    pool = messages.messages(2000)
    rng = random.Random(5003)
    server = 0x0A000002
    conns = []
    out = open(path, "wb", buffering=1 << 20)
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    written, count, ts = 24, 0, 1764262479.0

    def put(frame: bytes) -> None:
        nonlocal written, count, ts
        ts += 0.00002
        seconds = int(ts)
        out.write(struct.pack("<IIII", seconds, int((ts - seconds) * 1e6), len(frame), len(frame)))
        out.write(frame)
        written += 16 + len(frame)
        count += 1

    for n in range(SESSIONS):
        client, port = 0x0A000100 + n, 40000 + n
        c, s = rng.randrange(1 << 32), rng.randrange(1 << 32)
        put(_frame(client, port, server, 5003, c, 0, 0x02, b""))
        put(_frame(server, 5003, client, port, s, c + 1, 0x12, b""))
        put(_frame(client, port, server, 5003, c + 1, s + 1, 0x10, b""))
        conns.append([client, port, c + 1, s + 1])
    i = 0
    while written < size:
        conn = conns[i % SESSIONS]
        client, port, c, s = conn
        data = pool[i % len(pool)]
        frame = _frame(server, 5003, client, port, s, c, 0x18, data)
        put(frame)
        if i % RETRANSMIT_EVERY == 0:
            put(frame)
        conn[3] = s = s + len(data)
        if i % CLIENT_EVERY == 0:
            put(_frame(client, port, server, 5003, c, s, 0x18, REQUEST))
            conn[2] = c = c + len(REQUEST)
        else:
            put(_frame(client, port, server, 5003, c, s, 0x10, b""))
        i += 1
    for client, port, c, s in conns:
        put(_frame(client, port, server, 5003, c, s, 0x11, b""))
        put(_frame(server, 5003, client, port, s, c + 1, 0x11, b""))
        put(_frame(client, port, server, 5003, c + 1, s + 1, 0x10, b""))
    out.close()
    return count


def measure(argv: list[str]) -> tuple[float, float, float]:
    """Run argv with its output thrown away: (seconds, CPU seconds, peak RSS in MB).
    CPU time is what the run costs whatever else the machine does; wall time
    is what a user waits on an idle machine."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024, help="size of the large capture")
    parser.add_argument("--tshark-mb", type=int, default=200,
                        help="size of the capture both read (tshark holds it in memory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctipcap-bench-") as tmp:
        rows = []
        sizes = sorted({args.tshark_mb, args.mb})
        for mb in sizes:
            path = Path(tmp) / f"{mb}.pcap"
            start = time.perf_counter()
            packets = generate(path, mb << 20)
            made = time.perf_counter() - start
            size = path.stat().st_size
            seconds, cpu, rss = measure([PYTHON, "-P", "-m", "ctipipe", "ctipcap", str(path)])
            rows.append((f"ctipcap, {size / 1e6:,.0f} MB, {packets:,} packets", seconds, cpu,
                         packets, rss))
            if mb == args.tshark_mb and shutil.which("tshark"):
                seconds, cpu, rss = measure(["tshark", "-r", str(path), "-q", "-z", "follow,tcp,raw,0"])
                rows.append((f"tshark -z follow,tcp,raw,0 (1 of {SESSIONS} connections), same file",
                             seconds, cpu, packets, rss))
            print(f"(generated {size / 1e6:,.0f} MB in {made:.1f} s)", file=sys.stderr)
            path.unlink()
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'run':<66} {'wall s':>7} {'pkts/s':>9} {'CPU s':>7} {'pkts/CPU s':>10} {'peak MB':>8}")
        for name, seconds, cpu, packets, rss in rows:
            print(f"{name:<66} {seconds:>7.2f} {packets / seconds:>9,.0f} {cpu:>7.2f} "
                  f"{packets / cpu:>10,.0f} {rss:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

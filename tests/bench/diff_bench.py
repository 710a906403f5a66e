"""ctidiff's speed and memory: two generated sessions of N messages each (client and
server mixed as in a real session), B with 1% differences (a third changed fields,
a third inserted messages, a third deleted ones). Target: 100,000 a side in under
5 s and 500 MB.

Then the worst cases (issue 20): sessions that repeat 150 distinct messages (no
message found once on each side to anchor the alignment), with 1% differences
and with nothing in common; one message of 1 MB whose list differs by one item,
and two of 1 MB whose lists share nothing; a capture of 636,000 lines compared
with itself. Targets: 200,000 messages a side in under 10 s and 500 MB, a 1 MB
message in under 2 s, the file with itself under 300 MB.

    .venv/bin/python tests/bench/diff_bench.py [--sizes 10000 100000] [--worst 200000] [--self-lines 636000]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MESSAGES = [json.loads(line) for line in (REPO / "tests/golden/diff/messages.jsonl").read_text().splitlines()]
DIFFERENCE_RATE = 0.01


def generate(count: int, seed: int) -> tuple[list[dict], list[dict], dict]:
    """A session of `count` records and its altered copy, with what was altered."""
    rng = random.Random(seed)
    a = []
    for n in range(count):
        record = json.loads(json.dumps(rng.choice(MESSAGES)))  # a copy
        message = record.get("msg")
        if isinstance(message, dict):
            # vary the content as a long session does: other ids, other states
            if "tid" in message or message.get("class") == "getlist":
                message["tid"] = str(rng.randrange(500))
            if "timenow" in message:
                message["timenow"] = 1764262479.0 + n * 0.01
            if "commandid" in message:
                message["commandid"] = rng.randrange(2 ** 31)
        a.append(record)
    b = [json.loads(json.dumps(r)) for r in a]
    made = {"changed": 0, "inserted": 0, "deleted": 0}
    for n in sorted(rng.sample(range(count), int(count * DIFFERENCE_RATE)), reverse=True):
        kind = rng.choice(sorted(made))
        if kind == "deleted":
            del b[n]
        elif kind == "inserted":
            b.insert(n, {"from": "server", "msg": {"class": "getlist", "function": "updatestatus",
                                                    "listname": "phones", "tid": str(n),
                                                    "status": {"hintstatus": "8"}}})
        elif isinstance(b[n].get("msg"), dict):
            b[n]["msg"]["bench_changed"] = n
        else:
            b[n] = {"from": b[n]["from"], "raw": f"changed line {n}"}
        made[kind] += 1
    return a, b, made


def write(path: Path, records: list[dict]) -> None:
    with open(path, "w") as out:
        out.write(json.dumps({"ts": 1764262479.0, "conn": 1, "event": "open",
                              "client": "127.0.0.1:50000", "server": "xivo:5003"}) + "\n")
        for n, record in enumerate(records):
            out.write(json.dumps({"ts": round(1764262479.0 + n * 0.01, 6), "conn": 1, **record},
                                 separators=(",", ":")) + "\n")


def measure(a: Path, b: Path, folder: str) -> tuple[float, float, str, float]:
    """Seconds, peak resident MB, what ctidiff counted, and CPU seconds (user and
    system: on a busy machine the wall time says more about the others), for one run."""
    with open(Path(folder) / "out", "w+b") as out, open(Path(folder) / "err", "w+b") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-P", "-m", "ctipipe", "ctidiff", str(a), str(b), "--json"],
                                stdout=out, stderr=err)
        # wait4 gives this child's own peak memory (the kernel's accounting of it)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"ctidiff failed: {err.read().decode()}")
        lines = out.read().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return elapsed, usage.ru_maxrss / 1024, json.dumps(summary.get("sides")), usage.ru_utime + usage.ru_stime


# The worst cases: this many distinct messages, repeated in a random order.
DISTINCT = 150


def repeated(count: int, seed: int, related: bool) -> tuple[list[dict], list[dict]]:
    """Two sessions of `count` messages drawn from DISTINCT ones: B is A with 1%
    of its messages inserted, deleted or changed (related), or drawn on its own."""
    rng = random.Random(seed)
    distinct = [{"from": "server", "msg": {"class": "getlist", "function": "updatestatus",
                                            "listname": "agents", "tid": str(k),
                                            "status": {"availability": "available",
                                                       "queues": [str(k % 7)]}}}
                for k in range(DISTINCT)]
    a = [rng.randrange(DISTINCT) for _ in range(count)]
    if related:
        b = list(a)
        for n in sorted(rng.sample(range(count), count // 100), reverse=True):
            kind = rng.randrange(3)
            if kind == 0:
                del b[n]
            elif kind == 1:
                b.insert(n, rng.randrange(DISTINCT))
            else:
                b[n] = (b[n] + 1) % DISTINCT
    else:
        b = [rng.randrange(DISTINCT) for _ in range(count)]
    return [distinct[k] for k in a], [distinct[k] for k in b]


def large_message(size: int, seed: int, related: bool) -> tuple[list[dict], list[dict]]:
    """One message of about `size` bytes: a list of small repeated objects; B's list
    has one item more (related), or is drawn on its own."""
    rng = random.Random(seed)
    count = size // 40
    items = [{"hintstatus": str(rng.randrange(5)), "queues": [rng.randrange(30)]} for _ in range(count)]
    if related:
        other = list(items)
        other.insert(count // 2, {"hintstatus": "9", "queues": []})
    else:
        other = [{"hintstatus": str(rng.randrange(5)), "queues": [rng.randrange(30)]} for _ in range(count)]

    def message(entries):
        return [{"from": "server", "msg": {"class": "getlist", "function": "updatestatus",
                                           "listname": "phones", "list": entries}}]
    return message(items), message(other)


WORST = {  # name -> (generator, related)
    "repeated-1%": (repeated, True),
    "repeated-unrelated": (repeated, False),
    "1MB-message-1-item": (large_message, True),
    "1MB-message-unrelated": (large_message, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--worst", type=int, default=200_000,
                        help="messages a side in the repeated worst cases (0: none)")
    parser.add_argument("--self-lines", type=int, default=636_000,
                        help="lines of the file compared with itself (0: none)")
    parser.add_argument("--write", nargs=2, metavar=("SIZE", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--write-worst", nargs=3, metavar=("NAME", "SIZE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        # Run as its own process: a child's peak memory as the kernel reports it
        # starts from its parent's size at fork, so the parent stays small.
        size, folder = int(args.write[0]), Path(args.write[1])
        a, b, made = generate(size, seed=size)
        write(folder / "a.jsonl", a)
        write(folder / "b.jsonl", b)
        print(", ".join(f"{v} {k}" for k, v in made.items()))
        return
    if args.write_worst:
        name, size, folder = args.write_worst[0], int(args.write_worst[1]), Path(args.write_worst[2])
        make, related = WORST[name]
        a, b = make(size, size, related)
        write(folder / "a.jsonl", a)
        write(folder / "b.jsonl", b)
        return
    print(f"{'messages a side':>16} {'differences made':>30} {'seconds':>8} {'cpu s':>6} {'peak MB':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            made_text = subprocess.run([sys.executable, __file__, "--write", str(size), folder],
                                       capture_output=True, check=True, text=True).stdout.strip()
            seconds, peak, sides, cpu = measure(Path(folder) / "a.jsonl", Path(folder) / "b.jsonl", folder)
            print(f"{size:>16,} {made_text:>30} {seconds:>8.2f} {cpu:>6.2f} {peak:>8.0f}")
            print(f"{'':>16} found: {sides}")
        worst = [(name, args.worst) for name in WORST if name.startswith("repeated")] if args.worst else []
        worst += [(name, 1_000_000) for name in WORST if name.startswith("1MB")]
        if worst or args.self_lines:
            print(f"\n{'worst case':>24} {'size':>10} {'seconds':>8} {'cpu s':>6} {'peak MB':>8}  target")
        for name, size in worst:
            subprocess.run([sys.executable, __file__, "--write-worst", name, str(size), folder], check=True)
            seconds, peak, sides, cpu = measure(Path(folder) / "a.jsonl", Path(folder) / "b.jsonl", folder)
            goal = (10, 500) if name.startswith("repeated") else (2, 500)
            met = seconds < goal[0] and peak < goal[1]
            print(f"{name:>24} {size:>10,} {seconds:>8.2f} {cpu:>6.2f} {peak:>8.0f}  < {goal[0]} s, "
                  f"< {goal[1]} MB: {'met' if met else 'NOT met'}")
            print(f"{'':>24} found: {sides}")
        if args.self_lines:
            subprocess.run([sys.executable, __file__, "--write", str(args.self_lines), folder],
                           capture_output=True, check=True)
            path = Path(folder) / "a.jsonl"
            seconds, peak, _, cpu = measure(path, path, folder)
            print(f"{'a file with itself':>24} {args.self_lines:>10,} {seconds:>8.2f} {cpu:>6.2f} {peak:>8.0f}  "
                  f"< 300 MB: {'met' if peak < 300 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""cticheck's speed: a saved stream of N messages (default 1,000,000) in sessions of
10,000, each a clean 2.3 login followed by requests, their answers and status
broadcasts in the proportions of a busy client, checked by `cticheck`. Target:
1,000,000 messages in under 10 s.

    .venv/bin/python tests/bench/check_bench.py [--messages 1000000] [--reps 3]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

SESSION = 10_000  # messages per session: a long, busy client
T0 = 1764262479.0


def _login(conn: int) -> list[tuple[str, dict]]:
    return [
        ("server", {"class": "starttls", "timenow": T0}),
        ("client", {"class": "starttls", "commandid": 1, "status": False}),
        ("server", {"class": "starttls", "starttls": False, "timenow": T0}),
        ("client", {"class": "login_id", "commandid": 2, "company": "xivo", "ident": "X11-LE-24079",
                    "lastlogout-datetime": "", "lastlogout-stopper": "", "userlogin": f"u{conn}",
                    "wazoversion": "2.3"}),
        ("server", {"wazoversion": "2.3", "sessionid": "9WcHhnJxU3", "class": "login_id",
                    "timenow": T0}),
        ("client", {"class": "login_pass", "commandid": 3, "password": "secret"}),
        ("server", {"capalist": [3], "class": "login_pass", "timenow": T0}),
        ("client", {"capaid": "3", "class": "login_capas", "commandid": 4, "state": "available"}),
        ("server", {"userid": "3", "ipbxid": "xivo", "class": "login_capas", "appliname": "Client",
                    "capas": {"services": ["enablednd"], "preferences": False}, "capaxlets": [],
                    "timenow": T0}),
    ]


def _busy(n: int) -> list[tuple[str, dict]]:
    """Four messages: a request and its answer, then two broadcasts."""
    tid = str(n % 500)
    return [
        ("client", {"class": "getlist", "commandid": 10 + n, "function": "updateconfig",
                    "listname": "users", "tid": tid, "tipbxid": "xivo"}),
        ("server", {"class": "getlist", "function": "updateconfig", "listname": "users", "tid": tid,
                    "tipbxid": "xivo", "timenow": T0,
                    "config": {"firstname": "Alice", "lastname": "Doe", "enablednd": False,
                               "linelist": ["7"], "voicemailid": None, "agentid": 2}}),
        ("server", {"class": "getlist", "function": "updatestatus", "listname": "agents",
                    "tipbxid": "xivo", "tid": n % 40, "timenow": T0,
                    "status": {"availability": "available", "availability_since": T0,
                               "queues": [], "on_call": False, "phonenumber": "1001"}}),
        ("server", {"class": "getlist", "function": "updatestatus", "listname": "phones",
                    "tipbxid": "xivo", "tid": tid, "timenow": T0,
                    "status": {"hintstatus": "0"}}),
    ]


def write(path: Path, count: int) -> None:
    with path.open("wb") as out:
        written, conn = 0, 0
        while written < count:
            conn += 1
            ts = T0 + conn
            out.write(b'{"ts":%.6f,"conn":%d,"event":"open","client":"10.0.0.1:%d","server":"x:5003"}\n'
                      % (ts, conn, 40000 + conn))
            items = _login(conn)
            n = 0
            while len(items) < min(SESSION, count - written):
                items += _busy(n)
                n += 1
            items = items[:count - written]
            lines = []
            for index, (side, message) in enumerate(items):
                body = orjson.dumps(message)
                lines.append(b'{"ts":%.6f,"conn":%d,"from":"%s","size":%d,"msg":%s}\n'
                             % (ts + index * 0.0001, conn, side.encode(), len(body) + 1, body))
            out.write(b"".join(lines))
            written += len(items)
            out.write(b'{"ts":%.6f,"conn":%d,"event":"close","by":"client","bytes":{"client":1,'
                      b'"server":1},"reads":{"client":1,"server":1},"duration":1.0}\n'
                      % (ts + len(items) * 0.0001, conn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stream.jsonl"
        write(path, args.messages)
        times, cpu = [], []
        for _ in range(args.reps):
            with path.open("rb") as data:
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-P", "-m", "ctipipe", "cticheck"], stdin=data,
                                      capture_output=True)
                times.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
            if done.returncode != 0:
                sys.exit(f"cticheck ended with {done.returncode}: {done.stdout[-500:]!r}")
        best = statistics.median(times)
        print(f"cticheck: {args.messages:,} messages ({path.stat().st_size >> 20} MiB) checked in "
              f"{best:.2f} s (median of {args.reps}: {', '.join(f'{t:.2f}' for t in times)}), "
              f"{args.messages / best:,.0f} messages/s, CPU {statistics.median(cpu):.2f} s; "
              f"target under 10 s for 1,000,000")


if __name__ == "__main__":
    main()

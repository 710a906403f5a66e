"""The stages' CPU time against another version of ctipipe (a clone with its
own .venv), on the same saved stream, interleaved (old, new, old, new ...):

    tests/bench/stages_ab.py --old /work/bench-old [--also NAME=DIR] [--reps 7]

Each run is `python -m ctipipe STAGE ... < FILE > /dev/null` in the version's
directory with its .venv's Python; what is measured is the child's CPU time
(user + sys from getrusage), not wall time, so that other work on the machine
weighs little. The table gives medians and new/old as a ratio of records per
CPU second (above 1: the new version is faster).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import messages  # noqa: E402

STAGES = [["ctistrip", "timenow"], ["ctipretty", "--color", "never"],
          ["ctipretty", "--compact", "--color", "never"], ["ctistat"]]


def python_of(root: Path) -> str:
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def cpu_seconds(root: Path, argv: list[str], path: str) -> float:
    """CPU time (user + sys) of one run of a stage over the file."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "rb") as data:
        subprocess.run([python_of(root), "-m", "ctipipe", *argv], stdin=data,
                       stdout=subprocess.DEVNULL, cwd=root, check=True,
                       env={**os.environ, "PYTHONPATH": str(root)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="the version to compare against")
    parser.add_argument("--new", default=HERE.parent.parent, type=Path,
                        help="the version measured (default: this clone)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                        help="one more version to time alongside (e.g. before=/tmp/clone)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--only", action="append", default=[], metavar="STAGE",
                        help="time only stages whose command line starts with this (ctistat)")
    args = parser.parse_args()
    versions = {"old": args.old.resolve()}
    for item in args.also:
        name, _, root = item.partition("=")
        versions[name] = Path(root).resolve()
    versions["new"] = args.new.resolve()
    stages = [s for s in STAGES if not args.only or any(" ".join(s).startswith(o) for o in args.only)]
    times = {(" ".join(s), v): [] for s in stages for v in versions}
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "session.jsonl")
        messages.stream_file(saved, args.records)
        print(f"{args.records:,} records, {os.path.getsize(saved) / 1e6:.0f} MB; "
              f"{args.reps} repetitions, interleaved; CPU seconds (user + sys), medians",
              flush=True)
        for rep in range(args.reps):
            for argv in stages:
                for name, root in versions.items():
                    times[" ".join(argv), name].append(cpu_seconds(root, argv, saved))
            print(f"repetition {rep + 1} done", file=sys.stderr, flush=True)
    others = [v for v in versions if v not in ("old", "new")]
    print("\n| stage | " + " | ".join(f"{v} CPU s" for v in versions) + " | "
          + " | ".join(f"{v}/old speed" for v in [*others, "new"]) + " |")
    print("|---|" + "---:|" * (2 * len(versions) - 1))
    for argv in stages:
        stage = " ".join(argv)
        med = {v: statistics.median(times[stage, v]) for v in versions}
        # speed ratio per repetition (old time / other time), then its median
        ratios = {v: statistics.median(o / n for o, n in zip(times[stage, "old"], times[stage, v]))
                  for v in [*others, "new"]}
        print(f"| `{stage}` | " + " | ".join(f"{med[v]:.2f}" for v in versions) + " | "
              + " | ".join(f"{ratios[v]:.2f}" for v in [*others, "new"]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

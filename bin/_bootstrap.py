"""Run a ctipipe command from a fresh clone: prepare .venv once, then hand over to it.

Every name in bin/ is a link to `_launch`, a few lines of sh that start python3
on it, whose last line calls launch(NAME); the first run creates
.venv beside bin/, installs the package (editable, with its test extra so the
test command needs nothing more) and notes what it installed, so later runs
start at once. A lock keeps concurrent first runs from installing twice.
"""
import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".ctipipe-installed"
LOG = VENV / "install.log"


def _wanted() -> str:
    # Reinstall whenever the dependencies in pyproject.toml change.
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def _ensure_venv() -> None:
    if STAMP.exists() and STAMP.read_text() == _wanted() and PYTHON.exists():
        return
    VENV.mkdir(exist_ok=True)
    with open(VENV / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text() == _wanted() and PYTHON.exists():
            return
        print("ctipipe: first run: installing into .venv (trio, orjson, test tools); "
              "this happens once", file=sys.stderr, flush=True)
        with open(LOG, "w") as log:
            steps = [
                [sys.executable, "-m", "venv", str(VENV)],
                [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check",
                 "-e", f"{REPO}[test]"],
            ]
            for step in steps:
                if subprocess.call(step, stdout=log, stderr=subprocess.STDOUT) != 0:
                    sys.exit(f"ctipipe: error: installing into {VENV} failed; see {LOG}")
        STAMP.write_text(_wanted())
        print("ctipipe: installed", file=sys.stderr, flush=True)


def _ready() -> None:
    """Install if needed; Ctrl-C during the install is one line, not a
    traceback, and exit status 0 as for any Ctrl-C (README)."""
    try:
        _ensure_venv()
    except KeyboardInterrupt:
        print("ctipipe: first-run install interrupted; the next run installs again",
              file=sys.stderr, flush=True)
        sys.exit(130)  # the command never ran: not 0, which says "done" (ctidiff: "equal")


def run(command: str) -> None:
    """Replace this process with `python -P -m ctipipe COMMAND ARGS...` from .venv.
    `-P`: the working directory is never on the import path, so a `ctipipe/`
    planted there (a shared /tmp, an unpacked archive) is not what runs."""
    _ready()
    os.execv(PYTHON, [str(PYTHON), "-P", "-m", "ctipipe", command, *sys.argv[1:]])


def run_tests() -> None:
    """Replace this process with pytest from .venv, run at the top of the clone.
    `--quick` leaves out the tests marked heavy (load, memory and fault runs)."""
    _ready()
    os.chdir(REPO)
    args = [arg for arg in sys.argv[1:] if arg != "--quick"]
    if len(args) < len(sys.argv) - 1:
        args = ["-m", "not heavy", *args]
    os.execv(PYTHON, [str(PYTHON), "-m", "pytest", *args])


def run_script(relative_path: str) -> None:
    """Replace this process with a script of the clone run by .venv's python."""
    _ready()
    os.execv(PYTHON, [str(PYTHON), str(REPO / relative_path), *sys.argv[1:]])


# bin/ names that are not commands of the package.
SCRIPTS = {"test": run_tests, "bench": lambda: run_script("tests/bench/run.py")}


def launch(name: str) -> None:
    """What bin/NAME runs: the test suite, the benchmark, or the command NAME."""
    SCRIPTS.get(name, lambda: run(name))()

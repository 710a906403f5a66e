"""A command run in the test's own process, as its process would run it: the
entry point of ctipipe.commands.COMMANDS called with argv, standard input,
output and error on descriptors 0, 1 and 2 (and sys.stdin/stdout/stderr over
them), the environment and working directory given. For what a command reads,
writes and exits with; what only a process shows (signals, pipes, a closed
stdout) stays with real processes (helpers.Proc)."""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import sys
import time
from dataclasses import dataclass

from ctipipe.commands import COMMANDS


@dataclass
class Result:
    """As subprocess.CompletedProcess: exit status, standard output and error."""
    returncode: int
    stdout: bytes
    stderr: bytes


def entry(name: str):
    module, func = COMMANDS[name]
    return getattr(importlib.import_module(f"ctipipe.{module}"), func)


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)  # (a memfd takes any size in one write)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _environment(env: dict | None, cwd):
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
            time.tzset()
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(saved_env)
            time.tzset()


def run(name: str, *args: str, data: bytes = b"", stdin: int | None = None,
        stdout: int | None = None, env: dict | None = None, cwd=None) -> Result:
    """Command NAME with ARGS, reading `data` (a regular file, as `< FILE`) or the
    descriptor `stdin`, writing to a file of its own (Result.stdout) or to the
    descriptor `stdout` (a terminal); `env` replaces the environment while it runs."""
    main = entry(name)
    in_fd = _memfd("stdin", data) if stdin is None else stdin
    out_fd = _memfd("stdout") if stdout is None else stdout
    err_fd = _memfd("stderr")
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    saved_sys = sys.stdin, sys.stdout, sys.stderr, sys.argv
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with _environment(env, cwd):
            for fd, target in ((in_fd, 0), (out_fd, 1), (err_fd, 2)):
                os.dup2(fd, target)
            sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                          write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                          errors="backslashreplace", write_through=True)
            sys.argv = [name, *args]
            try:
                status = main(list(args))
            except SystemExit as end:  # argparse: --help, usage errors
                status = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(OSError, ValueError):
                        stream.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved_sys
        for fd, target in zip(saved_fds, (0, 1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        # a command ignores late signals as it ends: not the test run's
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    mine = [fd for fd, given in ((in_fd, stdin), (out_fd, stdout), (err_fd, None)) if given is None]
    try:
        return Result(int(status), b"" if stdout is not None else _read_all(out_fd),
                      _read_all(err_fd))
    finally:
        for fd in mine:
            os.close(fd)

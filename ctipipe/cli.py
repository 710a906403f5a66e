"""What every command shares: argument parsing, exit codes, one-line errors,
and the read-handle-write loop of filters and sinks."""
from __future__ import annotations

import argparse
import enum
import gc
import os
import signal
import sys
import traceback
from typing import Callable

import orjson

from . import stream


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1  # the command could not do its job (unreachable server, bad path, full disk)
    USAGE = 2  # bad arguments, found before anything is read or listened on
    STAGE_FAILED = 3  # a wrapper's pipeline lost a stage
    INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class CommandError(Exception):
    """An error the user can act on; its text becomes the one line we print."""


# A stage warns about this many malformed lines, then only counts them, so
# a stream of garbage cannot bury the rest of standard error.
MAX_WARNINGS = 100


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and examples kept as written."""

    def __init__(self, prog: str, description: str = "", example: str = "", **kwargs) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=("example:\n  " + example.strip().replace("\n", "\n  ")) if example else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        self.add_argument("--debug", action="store_true", help="show a traceback on errors")

    def error(self, message: str):  # type: ignore[override]
        self.exit(Exit.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(convert, low, high, what: str):
    """An argparse type: `convert` the text, then check low <= value <= high."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} out of range {low}-{high:g}: {text}")
        return value
    return parse


port = _number(int, 0, 65535, "a port number")
positive = _number(int, 1, 1 << 40, "a positive number")
seconds = _number(float, 0.001, 1e6, "a number of seconds")


def report(prog: str, message: str) -> None:
    """One line on standard error, prefixed with the command's name."""
    try:
        sys.stderr.write(f"{prog}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # nowhere left to say it


def leaves(error: BaseException) -> list[BaseException]:
    """The real errors inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in leaves(sub)]
    return [error]


def guarded(prog: str, body: Callable[[], int], debug: bool = False) -> int:
    """Run a command's body; turn whatever escapes into one line and an exit status.

    This is the one place tracebacks are stopped. Trio reports errors in
    exception groups, so each group is unwrapped to the error inside it.
    """
    try:
        return int(body())
    except BaseException as error:  # noqa: BLE001 - this is the boundary
        found = leaves(error)
        if any(isinstance(e, SystemExit) for e in found):
            raise
        if all(isinstance(e, KeyboardInterrupt) for e in found):
            return Exit.INTERRUPTED
        if all(isinstance(e, BrokenPipeError) for e in found):
            _silence_stdout()
            return Exit.OK
        if debug:
            traceback.print_exception(error)
        for leaf in found:
            if isinstance(leaf, (KeyboardInterrupt, BrokenPipeError)):
                continue
            if isinstance(leaf, CommandError):
                report(prog, f"error: {leaf}")
            elif isinstance(leaf, OSError) and leaf.strerror:
                where = f" {leaf.filename}" if leaf.filename else ""
                report(prog, f"error:{where}: {leaf.strerror}" if where else f"error: {leaf.strerror}")
            else:
                report(prog, f"error: {type(leaf).__name__}: {leaf} (run with --debug for details)")
        return Exit.ERROR


def _silence_stdout() -> None:
    # After a closed pipe, make sure nothing (not even interpreter shutdown
    # flushing sys.stdout) tries to write there again and complains.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


# --- the filter and sink loop ------------------------------------------------

class Stage:
    """What a filter or sink is to run_stage; only `handle` must be written."""

    def begin_batch(self, block: bytes) -> None:
        """Called with each read's complete lines before they are handled."""

    def handle(self, record: dict, line: bytes) -> bytes | None:
        """Return what to write for this record (without newline), or None."""
        raise NotImplementedError

    def end_of_batch(self) -> bytes | None:
        """Called after each read's lines are handled; may return more to write
        (stages that render a whole batch at once), or write files itself."""
        return None

    def finish(self) -> bytes | None:
        """Called once at end of input (or a stop); may return a summary."""
        return None


class _Stop(Exception):
    """Raised from a signal handler while waiting for input: stop, finish, exit."""


def run_stage(prog: str, stage: Stage, infd: int = 0, outfd: int = 1) -> int:
    """Feed stdin's records to `stage` and write what it returns to stdout.

    One read, the handling of every complete line in it, one write: messages
    flow at once when traffic is slow and in large writes when it is heavy.
    Ctrl-C: reading a pipe we keep going until the producer closes it (it
    writes its close events first); reading a terminal we stop. SIGTERM stops
    us too. A stop never cuts a batch in half: while a batch is being handled
    the signal is only noted, and acted on once it has been written.
    """
    reading_terminal = os.isatty(infd)
    waiting = False
    stop_requested = False

    def on_stop(signum, frame):
        nonlocal stop_requested
        if waiting:
            raise _Stop
        stop_requested = True

    signal.signal(signal.SIGINT, on_stop if reading_terminal else signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_stop)
    loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
    handle = stage.handle
    lineno = 0
    malformed = 0

    def warn(number: int, why: str) -> None:
        nonlocal malformed
        malformed += 1
        if malformed <= MAX_WARNINGS:
            report(prog, f"line {number}: {why}; skipped")
        elif malformed == MAX_WARNINGS + 1:
            report(prog, "more malformed lines; counting them without a message each")

    # Records are trees without cycles, freed as soon as they are handled: the
    # cycle collector would only rescan them (about a tenth of a stage's time).
    gc.disable()
    batches = stream.read_blocks(infd)
    while not stop_requested:
        waiting = True
        try:
            block = next(batches)
        except (StopIteration, _Stop):
            break
        finally:
            waiting = False
        stage.begin_batch(block)
        out = []
        for line in block.split(b"\n"):
            lineno += 1
            try:
                record = loads(line)
            except JSONDecodeError as error:
                warn(lineno, f"not JSON ({error})")
                continue
            if type(record) is not dict:
                warn(lineno, "not a JSON object")
                continue
            result = handle(record, line)
            if result is not None:
                out.append(result)
        rendered = stage.end_of_batch()
        if rendered is not None:
            out.append(rendered)
        if out:
            out.append(b"")
            write_all(outfd, b"\n".join(out))
    summary = stage.finish()
    if summary:
        write_all(outfd, summary)
    if malformed > MAX_WARNINGS:
        report(prog, f"{malformed} malformed lines in all")
    return Exit.OK


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

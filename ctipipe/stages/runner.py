"""The loop every filter and sink shares: read the tagged stream, hand each
record to the stage, write what it returns; input files, bounded lines, signals."""
from __future__ import annotations

import argparse
import gc
import os
import select
import signal
import stat

import orjson

from ctipipe.core import cli
from ctipipe.core import stream

# A stage warns about this many malformed lines, then only counts them, so
# a stream of garbage cannot bury the rest of standard error.
MAX_WARNINGS = 100

# The longest input line a stage holds; a longer one is reported and skipped,
# so that endless input without a newline (`< /dev/zero`) cannot use up memory.
MAX_LINE = stream.MAX_LINE

# A stage asks the kernel for this much per read: large enough that a busy
# stream is handled in big batches, and a read returns at once with whatever a
# slow stream has, so nothing waits for a batch to fill.
READ_SIZE = 1 << 18

# What a stage says once when its standard input is a terminal.
EXPECTS = ("reading a tagged stream from the terminal; pipe ctirelay into this "
           "command, or give a saved stream with < FILE")


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


def add_input_files(parser: argparse.ArgumentParser) -> None:
    """The FILE arguments of a sink that reads saved streams, as cat and jq do."""
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="saved streams to read, in order ('-' is standard input; "
                             "default: standard input)")


class TooLong:
    """Given by Lines in place of a line longer than the bound."""


TOO_LONG = TooLong()


class Lines:
    """Cuts what is read into blocks of complete lines, holding at most
    `max_line` bytes of an unfinished one.

    A line longer than one read is gathered in pieces and joined once, so a
    huge line costs its own size, not its size squared. A line longer than
    `max_line` is dropped as soon as it is known to be too long, and TOO_LONG
    stands in its place (given then, before the line's end is seen).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.pieces: list[bytes] = []  # the start of an unfinished line
        self.held = 0  # bytes in pieces
        self.skipping = False  # inside a line already known to be too long

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        """The blocks (lines joined by newlines, no final newline) `data` completes."""
        out: list[bytes | TooLong] = []
        first = data.find(b"\n")
        if first < 0:
            if not self.skipping:
                self._hold(data, out)
            return out
        last = data.rfind(b"\n")
        start = 0
        if self.skipping or self.held + first > self.max_line:
            # the unfinished line ends in this read, too long: skip to its end
            if not self.skipping:
                out.append(TOO_LONG)
            self.skipping = False
            self.pieces.clear()
            start = first + 1
        if start <= last:
            if self.pieces:
                self.pieces.append(data[:last])
                out.append(b"".join(self.pieces))
                self.pieces.clear()
            else:
                out.append(data[start:last])
        self.held = 0
        if last + 1 < len(data):
            self._hold(data[last + 1:], out)
        return out

    def _hold(self, piece: bytes, out: list) -> None:
        """Keep the start of an unfinished line, unless it is already too long."""
        self.pieces.append(piece)
        self.held += len(piece)
        if self.held > self.max_line:  # said at once, not at the line's far end
            out.append(TOO_LONG)
            self.pieces.clear()
            self.held = 0
            self.skipping = True

    def end(self) -> list[bytes | TooLong]:
        """What is left at end of input: a last line without its newline."""
        self.skipping = False
        if self.pieces:
            block = b"".join(self.pieces)
            self.pieces.clear()
            self.held = 0
            return [block]
        return []


class _Stop(Exception):
    """Raised from the SIGTERM handler while blocked writing: stop at once."""


class _Input:
    """One input: its descriptor, its name for messages, whether Ctrl-C stops it."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise cli.CommandError(f"{name} is a directory, not a tagged stream")
        # An unnamed pipe (or a socket) ends when its writer, the relay
        # upstream, has written its close events: at Ctrl-C we read on until
        # then. Any other input (a terminal, a FIFO whose writer stays, a
        # file still being read) is stopped by Ctrl-C.
        self.ends_by_itself = stat.S_ISSOCK(mode) or (stat.S_ISFIFO(mode) and _unnamed(fd))
        self.terminal = os.isatty(fd)


def _unnamed(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    except OSError:
        return True  # no /proc: take every FIFO for a pipe, as before


def open_inputs(files: list[str] | None) -> list[_Input]:
    """The inputs named (`-` is standard input), opened now so that a bad name
    is reported before anything is read."""
    inputs = []
    for name in files or ["-"]:
        if name == "-":
            try:
                inputs.append(_Input(0, "standard input"))
            except OSError:
                raise cli.CommandError("standard input is closed; give a tagged stream "
                                       "with < FILE or a pipe") from None
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise cli.CommandError(f"cannot read {name}: {error.strerror}") from None
        inputs.append(_Input(fd, name))
    return inputs


def _writable_now(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(0))


def _why_not_json(error: Exception) -> str:
    text = str(error)
    if "UTF-8" in text:
        return "not UTF-8"
    return f"not JSON ({text})"


def run_stage(prog: str, stage: Stage, files: list[str] | None = None, outfd: int = 1) -> int:
    """Feed the records of `files` (default: standard input) to `stage` and
    write what it returns to `outfd`.

    One read, the handling of every complete line in it, one write: messages
    flow at once when traffic is slow and in large writes when it is heavy.
    Signals (docs/stream.md, stage behaviour): Ctrl-C on an unnamed pipe is left to
    the relay upstream, which closes it after its close events; on any other
    input it stops us. SIGTERM always stops us, even while blocked writing.
    A stop never cuts a batch in half: while one is handled the signal is
    only noted, and acted on once the batch is written; then the stage's
    summary is written and we exit 0.
    """
    inputs = open_inputs(files)
    current = inputs[0]
    stop_requested = False
    terminated = False
    writing = False

    def on_interrupt(signum, frame):
        nonlocal stop_requested
        if not current.ends_by_itself:
            stop_requested = True

    def on_terminate(signum, frame):
        nonlocal stop_requested, terminated
        stop_requested = terminated = True
        if writing:
            raise _Stop

    # The wakeup descriptor wakes the wait for input when a signal comes, so
    # a read never has to be interrupted (and its data lost) to stop.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_handlers = (signal.signal(signal.SIGINT, on_interrupt),
                    signal.signal(signal.SIGTERM, on_terminate))

    def write(data: bytes) -> None:
        nonlocal writing
        if terminated and not _writable_now(outfd):
            return  # stopped by SIGTERM, and the reader is not reading: drop it
        writing = True
        try:
            cli.write_all(outfd, data)
        finally:
            writing = False

    loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
    handle = stage.handle
    lineno = 0
    malformed = 0

    def warn(number: int, why: str) -> None:
        nonlocal malformed
        malformed += 1
        if malformed <= MAX_WARNINGS:
            cli.report(prog, f"line {number}: {why}; skipped")
        elif malformed == MAX_WARNINGS + 1:
            cli.report(prog, "more malformed lines; counting them without a message each")

    def input_ready(fd: int) -> bool:
        """Wait until `fd` can be read or a stop is requested; True for the former."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        while not stop_requested:
            ready = dict(poller.poll())
            if wake_r in ready:
                try:
                    while os.read(wake_r, 64):
                        pass
                except BlockingIOError:
                    pass
            if fd in ready:
                return not stop_requested
        return False

    def handle_block(block: bytes | TooLong) -> None:
        nonlocal lineno
        if block is TOO_LONG:
            lineno += 1
            warn(lineno, f"longer than {MAX_LINE >> 20} MiB")
            return
        stage.begin_batch(block)
        out = []
        for line in block.split(b"\n"):
            lineno += 1
            try:
                record = loads(line)
            except JSONDecodeError as error:
                if line.strip():
                    warn(lineno, _why_not_json(error))
                continue  # blank lines are ignored quietly
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
            write(b"\n".join(out))

    # Records are trees without cycles, freed as soon as they are handled: the
    # cycle collector would only rescan them (about a tenth of a stage's time).
    gc.disable()
    try:
        for current in inputs:
            if current.terminal:
                cli.report(prog, EXPECTS)
            lines = Lines()
            while input_ready(current.fd):
                data = os.read(current.fd, READ_SIZE)
                if not data:
                    break
                for block in lines.feed(data):
                    handle_block(block)
            if stop_requested:
                break  # stopped in the middle: the unfinished line is not a line
            for block in lines.end():
                handle_block(block)
        summary = stage.finish()
        if summary:
            write(summary)
    except _Stop:
        pass  # SIGTERM while blocked writing: the reader has stopped; so do we
    finally:
        gc.enable()
        signal.signal(signal.SIGINT, old_handlers[0])
        signal.signal(signal.SIGTERM, old_handlers[1])
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    if malformed > MAX_WARNINGS:
        cli.report(prog, f"{malformed} malformed lines in all")
    return cli.Exit.OK

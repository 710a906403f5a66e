"""The loop every filter and sink shares, in two parts: Runner, pure (bytes of
a tagged stream in; what to write and what to warn about out), and run_stage,
its I/O shell (input files, waiting for input, signals, writes)."""
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

READ_SIZE = stream.READ_SIZE

# An input whose first this many lines (blank ones aside) hold no record is
# not a tagged stream (a classic ctisave file, a binary, /etc/passwd): said
# once, exit 2, instead of a hundred warnings. A few lines, so that a stream
# whose first line was cut still goes through (with its warning).
FIRST_LINES = 5

# What a stage says once when its standard input is a terminal.
EXPECTS = ("reading a tagged stream from the terminal; pipe ctirelay into this "
           "command, or give a saved stream with < FILE")


class Stage:
    """What a filter or sink is to run_stage; only `handle` must be written."""

    malformed = 0  # input lines that were not records, counted by the runner

    # True for a stage that writes or shows messages anew (not only whole
    # lines), or pairs them by their values (a commandid beyond 64 bits must
    # not meet a different one as the same float): its messages must hold
    # integers beyond 64 bits exactly, which costs a look at every batch for
    # long runs of digits.
    rewrites = False

    # Set before finish() when input did not end but the stage was stopped
    # (Ctrl-C on a file, a terminal, a FIFO; SIGTERM): a sink says so.
    stopped = False

    def begin_batch(self, block: bytes) -> None:
        """Called with each read's complete lines before they are handled."""

    def handle(self, record: dict, line: bytes) -> bytes | None:
        """Return what to write for this record (without newline), or None.

        A record the stage cannot use (a known key of the wrong type) raises
        BadRecord, TypeError or ValueError before the stage's state changes:
        the runner skips it with a warning and goes on."""
        raise NotImplementedError

    def end_of_batch(self) -> bytes | None:
        """Called after each read's lines are handled; may return more to write
        (stages that render a whole batch at once), or write files itself."""
        return None

    def finish(self) -> bytes | None:
        """Called once at end of input (or a stop); may return a summary."""
        return None


class BadRecord(ValueError):
    """Raised by a stage for a record it cannot use; the text says why."""


def add_input_files(parser: argparse.ArgumentParser) -> None:
    """The FILE arguments of a sink that reads saved streams, as cat and jq do."""
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="saved streams to read, in order ('-' is standard input; "
                             "default: standard input)")


# What a filter's --help says of the FILEs among its words.
FILE_WORDS = ("a word without '=' that names an existing file (or is '-', holds a '/', or ends "
              "in .jsonl or .json) is a saved stream to read, in order, instead of standard input")


def is_file_word(word: str) -> bool:
    """Does this word of a filter's command line name an input FILE rather than
    one of its own arguments (KEY=VALUE, FIELD)? `-`, an existing file, or a
    word that can only be a path (holds a `/`, ends in .jsonl or .json), as
    for ctistat; never a word with `=`, which is an expression."""
    if "=" in word:
        return False
    return (word == "-" or "/" in word or word.endswith((".jsonl", ".json"))
            or (os.path.exists(word) and not os.path.isdir(word)))


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
            raise cli.CommandError(f"{name} is a directory, not a tagged stream",
                                   cli.Exit.USAGE)  # as `< DIRECTORY` (bin/_launch)
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


def _looks_like(held: list[tuple[int, str, bytes]]) -> str:
    """What an input whose first lines (number, warning, start) hold no
    record is, for the one line that says so."""
    first = held[0][2].strip()
    if any(why == "not UTF-8" or b"\x00" in line for _, why, line in held):
        return "it is binary data"
    if first in (b"{", b"["):
        return ("it looks like a classic ctisave file (one side's messages as indented "
                "JSON), which ctidiff reads (ctidiff old/cti-server new/cti-server)")
    return "its first lines are not JSON records"


class Runner:
    """The pure core of a stage: feed it what is read, get back what to write
    and the warnings to give (each one line, without the command's name).

        runner = Runner(stage)
        output, warnings = runner.feed(data)   # for each read
        output, warnings = runner.end()        # at end of input

    Every complete line is decoded and handed to the stage; the outputs of a
    read are joined into one write. A line that is not a JSON object, is
    longer than `max_line`, or is a record the stage cannot use gets a
    warning with its line number and is skipped; past `MAX_WARNINGS` they are
    only counted, and end() gives the count. An input whose first
    FIRST_LINES lines (blank ones aside) hold no record is not a tagged
    stream: CommandError with exit status 2, saying what it looks like.

    Messages are handed over exactly: one holding an integer beyond 64 bits
    (which orjson reads as a float) is decoded again by the standard library.
    """

    def __init__(self, stage: Stage, name: str = "standard input", max_line: int = MAX_LINE) -> None:
        self.stage = stage
        self.max_line = max_line
        self.lineno = 0  # counted across inputs, as the warnings say them
        self.malformed = 0
        self._warnings: list[str] = []
        self._start(name)

    def _start(self, name: str) -> None:
        self.name = name
        self.lines = Lines(self.max_line)
        self.checking = True  # no record seen yet in this input
        self.held: list[tuple[int, str, bytes]] = []  # its first lines that are not records

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """What to write and what to warn about, for one read of input."""
        out: list[bytes] = []
        for block in self.lines.feed(data):
            self._block(block, out)
        return self._result(out)

    def next_input(self, name: str) -> tuple[bytes, list[str]]:
        """The current input has ended (its last line may lack a newline); the
        next one, called `name`, begins."""
        out: list[bytes] = []
        self._end_input(out)
        self._start(name)
        return self._result(out)

    def end(self, cut: bool = False) -> tuple[bytes, list[str]]:
        """Input has ended (`cut`: stopped in the middle, so an unfinished line
        is not a line): the last line, the stage's summary, the count of
        malformed lines."""
        out: list[bytes] = []
        if cut:
            self.lines = Lines(self.max_line)
            self.stage.stopped = True
        self._end_input(out)
        summary = self.stage.finish()
        if summary:
            out.append(summary)
        if self.malformed > MAX_WARNINGS:
            self._warnings.append(f"{self.malformed} malformed lines in all")
        return self._result(out)

    def _end_input(self, out: list[bytes]) -> None:
        for block in self.lines.end():
            self._block(block, out)
        if self.held:  # the input ended before any record
            self._not_a_stream()

    def _result(self, out: list[bytes]) -> tuple[bytes, list[str]]:
        warnings, self._warnings = self._warnings, []
        return b"".join(out), warnings

    def _warn(self, number: int, why: str) -> None:
        self.malformed += 1
        self.stage.malformed = self.malformed
        if self.malformed <= MAX_WARNINGS:
            self._warnings.append(f"line {number}: {why}; skipped")
        elif self.malformed == MAX_WARNINGS + 1:
            self._warnings.append("more malformed lines; counting them without a message each")

    def _not_a_stream(self) -> None:
        raise cli.CommandError(f"{self.name} is not a tagged stream (as ctirelay writes): "
                               f"{_looks_like(self.held)}",
                               cli.Exit.USAGE)

    def _block(self, block: bytes | TooLong, out: list[bytes]) -> None:
        """Handle one block of complete lines; what to write goes to `out`,
        each piece ending with a newline."""
        if block is TOO_LONG:
            self.lineno += 1
            self._warn(self.lineno, f"longer than {self.max_line >> 20} MiB")
            return
        stage = self.stage
        stage.begin_batch(block)
        lines = block.split(b"\n")
        if self.checking:
            lines = self._first_lines(lines)
        exact = stage.rewrites and stream.may_hold_big_integer(block)
        loads, JSONDecodeError, handle = orjson.loads, orjson.JSONDecodeError, stage.handle
        results = []
        lineno = self.lineno
        try:
            for line in lines:
                lineno += 1
                try:
                    record = loads(line)
                except JSONDecodeError as error:
                    if line.strip():
                        self._warn(lineno, _why_not_json(error))
                    continue  # blank lines are ignored quietly
                if type(record) is not dict:
                    self._warn(lineno, "not a JSON object")
                    continue
                if exact and "msg" in record and stream.may_hold_big_integer(line):
                    record = self._exact(record, line)
                try:
                    result = handle(record, line)
                except (ValueError, TypeError, KeyError, AttributeError, OverflowError,
                        RecursionError) as error:
                    self._warn(lineno, _unusable(record, error))
                    continue
                if result is not None:
                    results.append(result)
        finally:
            self.lineno = lineno
        rendered = stage.end_of_batch()
        if rendered is not None:
            results.append(rendered)
        if results:
            results.append(b"")
            out.append(b"\n".join(results))

    def _first_lines(self, lines: list[bytes]) -> list[bytes]:
        """Read this input's first lines until one is a record; the lines left
        to handle (the first record on). Until then warnings are held: if no
        record comes, they become the one line that says what the input is."""
        for index, line in enumerate(lines):
            if not line.strip():
                self.lineno += 1
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                why = _why_not_json(error)
            else:
                if type(record) is dict:
                    self.checking = False
                    for number, held_why, _ in self.held:
                        self._warn(number, held_why)
                    self.held.clear()
                    return lines[index:]
                why = "not a JSON object"
            self.lineno += 1
            self.held.append((self.lineno, why, line[:1000]))
            if len(self.held) >= FIRST_LINES:
                self._not_a_stream()
        return []

    @staticmethod
    def _exact(record: dict, line: bytes) -> dict:
        """The record with its message decoded again, every integer exact."""
        try:
            again = stream.exact_loads(line)
        except (ValueError, RecursionError):
            return record
        if type(again) is dict and "msg" in again:
            record["msg"] = again["msg"]
        return record


def _unusable(record: dict, error: Exception) -> str:
    """Why a record a stage raised on is skipped: the first known key of the
    wrong type, or else what the stage said."""
    problem = stream.record_problem(record)
    if problem is not None:
        return problem
    if isinstance(error, BadRecord):
        return str(error)
    return f"a record this stage cannot use ({type(error).__name__}: {error})"


def run_stage(prog: str, stage: Stage, files: list[str] | None = None, outfd: int = 1) -> int:
    """Feed the records of `files` (default: standard input) to `stage`
    through a Runner and write what it returns to `outfd`.

    One read, the handling of every complete line in it, one write: messages
    flow at once when traffic is slow and in large writes when it is heavy.
    Signals (docs/stream.md, stage behaviour): Ctrl-C on an unnamed pipe is
    left to the relay upstream, which closes it after its close events; on
    any other input it stops us. SIGTERM always stops us, even while blocked
    writing. A stop never cuts a batch in half: while one is handled the
    signal is only noted, and acted on once the batch is written; then the
    stage's summary is written and we exit 0.
    """
    inputs = open_inputs(files)
    keep_freed_memory()
    shell = _Shell(prog, outfd, inputs[0])
    runner = Runner(stage, inputs[0].name)
    # Records are trees without cycles, freed as soon as they are handled: the
    # cycle collector would only rescan them (about a tenth of a stage's time).
    gc.disable()
    try:
        with shell:
            for index, current in enumerate(inputs):
                shell.current = current
                if index:
                    shell.put(*runner.next_input(current.name))
                if current.terminal:
                    cli.report(prog, EXPECTS)
                while shell.input_ready(current.fd):
                    data = os.read(current.fd, READ_SIZE)
                    if not data:
                        break
                    shell.put(*runner.feed(data))
                if shell.stop_requested:
                    break
            shell.put(*runner.end(cut=shell.stop_requested))
    finally:
        gc.enable()
    return cli.Exit.OK


# glibc's malloc (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD of <malloc.h>): memory
# freed at the top of the heap is given back to the system past the first,
# and blocks past the second are mapped and unmapped one by one.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEPT_FREE = 32 << 20
MAPPED_FROM = 8 << 20


def keep_freed_memory() -> None:
    """Let this process's malloc keep the memory a batch frees for the next one.

    Each read allocates and frees a few blocks of a quarter to a few MiB (the
    read, its lines, what is written). By default glibc gives such memory
    back to the system as soon as it is freed at the top of the heap, and the
    next batch takes it again a page at a time: a page fault every 4 KiB
    written, up to a tenth of a stage's time. Up to KEPT_FREE bytes are now
    kept; blocks of MAPPED_FROM or more (a line of many MiB) are still mapped
    and given back on their own. Nothing is changed where the C library has
    no mallopt (not glibc)."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MAPPED_FROM)
    mallopt(_M_TRIM_THRESHOLD, KEPT_FREE)


class _Shell:
    """run_stage's I/O: waiting for input or a signal, writing, the signal rules."""

    def __init__(self, prog: str, outfd: int, current: _Input) -> None:
        self.prog = prog
        self.outfd = outfd
        self.current = current
        self.stop_requested = False
        self.terminated = False
        self.writing = False

    def __enter__(self) -> "_Shell":
        # The wakeup descriptor wakes the wait for input when a signal comes, so
        # a read never has to be interrupted (and its data lost) to stop.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.old_wakeup = signal.set_wakeup_fd(self.wake_w)
        self.old_handlers = (signal.signal(signal.SIGINT, self._on_interrupt),
                             signal.signal(signal.SIGTERM, self._on_terminate))
        return self

    def __exit__(self, kind, error, trace) -> bool:
        signal.signal(signal.SIGINT, self.old_handlers[0])
        signal.signal(signal.SIGTERM, self.old_handlers[1])
        signal.set_wakeup_fd(self.old_wakeup)
        os.close(self.wake_r)
        os.close(self.wake_w)
        return kind is _Stop  # SIGTERM while blocked writing: the reader has stopped; so do we

    def _on_interrupt(self, signum, frame) -> None:
        if not self.current.ends_by_itself:
            self.stop_requested = True

    def _on_terminate(self, signum, frame) -> None:
        self.stop_requested = self.terminated = True
        if self.writing:
            raise _Stop

    def put(self, output: bytes, warnings: list[str]) -> None:
        """Say the warnings, then write the output."""
        for warning in warnings:
            cli.report(self.prog, warning)
        if not output:
            return
        if self.terminated and not _writable_now(self.outfd):
            return  # stopped by SIGTERM, and the reader is not reading: drop it
        self.writing = True
        try:
            cli.write_all(self.outfd, output)
        finally:
            self.writing = False

    def input_ready(self, fd: int) -> bool:
        """Wait until `fd` can be read or a stop is requested; True for the former."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while not self.stop_requested:
            ready = dict(poller.poll())
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 64):
                        pass
                except BlockingIOError:
                    pass
            if fd in ready:
                return not self.stop_requested
        return False

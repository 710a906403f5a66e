"""What every command shares: argument parsing, exit codes, one-line errors."""
from __future__ import annotations

import argparse
import enum
import os
import signal
import sys
import threading
import traceback
from typing import Callable

from ctipipe import __version__
from ctipipe.core.terminal import safe_text


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1  # the command could not do its job (unreachable server, bad path, full disk)
    USAGE = 2  # bad arguments, found before anything is read or listened on
    STAGE_FAILED = 3  # a wrapper's pipeline lost a stage


class CommandError(Exception):
    """An error the user can act on; its text becomes the one line we print,
    and `status` the exit status (Exit.USAGE for input that is not what the
    command reads, as for bad arguments)."""

    def __init__(self, message: str, status: int = Exit.ERROR) -> None:
        super().__init__(message)
        self.status = status


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
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message: str):  # type: ignore[override]
        self.exit(Exit.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """Options may stand between the words and FILEs
        (`ctiinclude class=getlist --from server capture.jsonl`), as people type them.
        (argparse cannot intermix a parser with sub-commands: those parse as usual.)"""
        try:
            return self.parse_intermixed_args(args, namespace)
        except TypeError:
            return super().parse_args(args, namespace)


def number(convert, low, high, what: str):
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


port = number(int, 0, 65535, "a port number")  # where to listen: 0 lets the kernel choose
server_port = number(int, 1, 65535, "a server's port number")  # where to connect
positive = number(int, 1, 1 << 40, "a positive number")
seconds = number(float, 0.001, 1e6, "a number of seconds")
duration = number(float, 0, 1e6, "a number of seconds")  # 0 allowed: at once
count = number(int, 1, 100_000, "a number")  # of sessions, of clients


# Set by a wrapper for its stages: their messages then name the command the
# user typed (`ctispy: ...`), not a stage the user may not know it runs.
COMMAND_ENV = "CTIPIPE_COMMAND"


def command_name(prog: str) -> str:
    """The name to prefix messages with: the wrapper's, when a wrapper started us."""
    return os.environ.get(COMMAND_ENV) or prog


def one_line(message: str) -> str:
    """A message for standard error with every control escaped: it may quote
    a peer (a class name, an address), who must not drive the terminal."""
    shown = safe_text(message.encode("utf-8", "surrogateescape"), False)
    return shown.decode("utf-8", "backslashreplace")  # a file name's stray bytes as \xNN


def report(prog: str, message: str) -> None:
    """One line on standard error, prefixed with the command's name."""
    prog = command_name(prog)
    try:
        sys.stderr.write(f"{prog}: {one_line(message)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # nowhere left to say it


def host(text: str) -> str:
    """argparse type of a host name or address: a malformed one (an empty
    label as in `a..b`, a label over 63 characters, bytes that are not text)
    is a usage error in one line, not an exception from the resolver."""
    try:
        text.encode("idna")
    except UnicodeError as error:
        why = str(error).rpartition("(UnicodeError: ")[2].rstrip(")")
        raise argparse.ArgumentTypeError(f"not a host name: {text!r} ({why})") from None
    return text


class Host(str):
    """A server's HOST given with its port (HOST:PORT)."""
    port: int


def server_host(text: str) -> str:
    """argparse type of the server to connect to: HOST, HOST:PORT, [IPv6] or
    [IPv6]:PORT (a bare IPv6 address has several colons). A HOST of digits
    only is a port typed in its place (`ctispy 5003` would relay to 0.0.19.139):
    refused. Call `take_port` after parsing to apply a port given with HOST."""
    name, port = text, None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"not a host: {text!r} (an IPv6 address with a "
                                             f"port is written [ADDR]:PORT)")
        name, port = inside, rest[1:] or None
    elif text.count(":") == 1:
        name, port = text.split(":")
    if text.isdigit():
        raise argparse.ArgumentTypeError(f"{text} looks like a port: use --port {text} "
                                         f"(and give the server's HOST)")
    if not name or name.isdigit():
        raise argparse.ArgumentTypeError(f"not a host: {text!r} (HOST or HOST:PORT)")
    if port is None:
        return host(name)
    result = Host(host(name))
    result.port = server_port(port)
    return result


def take_port(parser: argparse.ArgumentParser, args: argparse.Namespace, host_dest: str,
              port_dest: str = "port", default: int | None = 5003) -> None:
    """Apply the port given with HOST (HOST:PORT) to args' port; one that
    disagrees with --port is a usage error."""
    host_value = getattr(args, host_dest)
    given = getattr(host_value, "port", None)
    if given is None:
        return
    port_value = getattr(args, port_dest)
    if port_value not in (None, default, given):
        parser.error(f"the port is given twice: {host_value}:{given} and --port {port_value}")
    setattr(args, port_dest, given)
    setattr(args, host_dest, str(host_value))


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
        return _guarded(prog, body, debug)
    finally:
        ignore_late_signals()


def command_argv(*args: str) -> list[str]:
    """How one of our processes starts another (`python -m ctipipe ARGS...`).
    `-P` keeps the working directory off the import path: a `ctipipe/`
    planted there (a shared /tmp, an unpacked archive) never runs."""
    return [sys.executable, "-P", "-m", "ctipipe", *args]


def ignore_late_signals() -> None:
    """The command has done its work and knows its exit status: a Ctrl-C or
    SIGTERM from now on (the second of a double Ctrl-C, a wrapper repeating
    its request, `timeout` signalling the whole group) must not change it.
    Python gives SIGINT back its default action as it finalizes, and a signal
    then would kill a process that completed (status 130 in a shell, a
    "stopped (killed by SIGTERM)" stage for a wrapper)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _guarded(prog: str, body: Callable[[], int], debug: bool) -> int:
    try:
        return int(body())
    except BaseException as error:  # noqa: BLE001 - this is the boundary
        found = leaves(error)
        if any(isinstance(e, SystemExit) for e in found):
            raise
        if all(isinstance(e, KeyboardInterrupt) for e in found):
            return Exit.OK  # Ctrl-C is how a user ends a command: done
        if all(isinstance(e, BrokenPipeError) for e in found):
            _silence_stdout()
            return Exit.OK
        if debug:
            traceback.print_exception(error)
        status = Exit.ERROR
        for leaf in found:
            if isinstance(leaf, (KeyboardInterrupt, BrokenPipeError)):
                continue
            if isinstance(leaf, CommandError):
                report(prog, f"error: {leaf}")
                status = leaf.status
            elif isinstance(leaf, OSError) and leaf.strerror:
                where = f" {leaf.filename}" if leaf.filename else ""
                report(prog, f"error:{where}: {leaf.strerror}" if where else f"error: {leaf.strerror}")
            else:
                report(prog, f"error: {type(leaf).__name__}: {leaf} (run with --debug for details)")
        return status


def _silence_stdout() -> None:
    # After a closed pipe, make sure nothing (not even interpreter shutdown
    # flushing sys.stdout) tries to write there again and complains.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to a blocking descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

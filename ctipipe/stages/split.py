"""ctisplit: the client's messages to one file, the server's to another (the
classic ctisave layout), so that two sessions compare well with diff."""
from __future__ import annotations

import errno
import os
import stat

from ctipipe.core import cli
from ctipipe.stages import runner as stage
from ctipipe.core import stream

PROG = "ctisplit"

EXAMPLE = """\
ctirelay xivo-new | ctistrip timenow | ctisplit /tmp/cti-client /tmp/cti-server
ctisplit --jsonl client.jsonl server.jsonl < session.jsonl
"""


def check_writable(path: str) -> None:
    """Refuse a path open_private would fail on, without creating or truncating it."""
    if os.path.islink(path):
        raise cli.CommandError(f"{path} is a symbolic link; not writing through it "
                               f"(give the real path)")
    if os.path.isdir(path):
        raise cli.CommandError(f"cannot open {path}: Is a directory")
    if os.path.exists(path):
        _check_kind(path, os.stat(path).st_mode)
        if not os.access(path, os.W_OK):
            raise cli.CommandError(f"cannot open {path}: Permission denied")
        return
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise cli.CommandError(f"cannot open {path}: No such file or directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise cli.CommandError(f"cannot open {path}: Permission denied")


def _check_kind(path: str, mode: int) -> None:
    """A capture goes to a regular file or a character device (/dev/null, a
    terminal); a FIFO would hold the stage in open() and a socket cannot be
    opened at all."""
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise cli.CommandError(f"cannot write a capture to {path}: it is {kind}")


def open_private(paths: dict[str, str]) -> dict[str, int]:
    """Open every capture file for writing, mode 0600 (captures hold
    credentials), never through a symbolic link; then, once all are open,
    truncate the existing ones. A file that cannot be opened leaves every
    other as it was (and removes those this call created)."""
    fds: dict[str, int] = {}
    created: list[str] = []
    try:
        for side, path in paths.items():
            existed = os.path.lexists(path)
            try:
                # O_NONBLOCK: a FIFO put there since the check fails at once
                # (ENXIO) instead of waiting for a reader.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                             | os.O_NONBLOCK, 0o600)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise cli.CommandError(f"{path} is a symbolic link; not writing through it "
                                           f"(give the real path)") from None
                raise cli.CommandError(f"cannot open {path}: {error.strerror}") from None
            fds[side] = fd
            if not existed:
                created.append(path)
            _check_kind(path, os.fstat(fd).st_mode)
            os.set_blocking(fd, True)
    except cli.CommandError:
        for fd in fds.values():
            os.close(fd)
        for path in created:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    for fd in fds.values():
        if stat.S_ISREG(os.fstat(fd).st_mode):  # not /dev/null and the like
            os.ftruncate(fd, 0)
            os.fchmod(fd, 0o600)
    return fds


def same_file(first: str, second: str) -> bool:
    """Do the two paths name one file (the same path, or through a symbolic or
    hard link)? Both sides written to one file would lose one of them."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist yet: then they differ
        return False


class Split(stage.Stage):
    """Per side, consecutive messages are laid out together and widened to an
    indent of 4 in one pass (stream.widen); a raw line ends such a run first,
    so its text is written exactly as it came."""

    rewrites = True  # messages are encoded anew: integers beyond 64 bits kept exact

    def __init__(self, client_path: str, server_path: str, jsonl: bool) -> None:
        self.paths = {"client": client_path, "server": server_path}
        for path in self.paths.values():
            check_writable(path)  # a bad path is an error now, before any input
        # The files are opened (and an existing one truncated) only once a
        # session starts: a pipeline that never got one leaves them as they were.
        self.fds: dict[str, int] = {}
        self.jsonl = jsonl
        self.chunks: dict[str, list[bytes]] = {"client": [], "server": []}
        self.run: dict[str, list[bytes]] = {"client": [], "server": []}
        self.exact = True  # this batch needs the exact (slower) widening

    def begin_batch(self, block: bytes) -> None:
        self.exact = stream.may_hold_double_space(block)

    def handle(self, record: dict, line: bytes) -> None:
        side = record.get("from")
        if side is not None and type(side) is not str:
            raise stage.BadRecord("not a record")  # said by the runner, before any file is opened
        if not self.fds and (side is not None or record.get("event") == "open"):
            self.fds = open_private(self.paths)
        if self.jsonl:
            if side in self.chunks:
                self.chunks[side] += (line, b"\n")
            elif "event" in record:  # each file stays a complete stream
                for chunks in self.chunks.values():
                    chunks += (line, b"\n")
            return None
        if side not in self.chunks:
            return None
        if "msg" in record:
            self.run[side].append(stream.indented_2(record["msg"]))
        else:
            raw = stream.content_bytes(record)
            if raw is not None:
                self._end_run(side)
                self.chunks[side] += (raw, b"\n")
        return None

    def _end_run(self, side: str) -> None:
        run = self.run[side]
        if run:
            self.chunks[side] += (stream.widen(b"\n".join(run), self.exact), b"\n")
            run.clear()

    def end_of_batch(self) -> None:
        for side, chunks in self.chunks.items():
            self._end_run(side)
            if chunks and self.fds:  # before a session, what there is waits for it
                data = b"".join(chunks)
                chunks.clear()
                try:
                    cli.write_all(self.fds[side], data)
                except OSError as error:
                    raise cli.CommandError(f"cannot write {self.paths[side]}: {error.strerror}") from None
        return None

    def finish(self) -> None:
        self.end_of_batch()
        for fd in self.fds.values():
            os.close(fd)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Write the client's messages to CLIENTFILE and the server's to "
                        "SERVERFILE, as indented JSON with sorted keys (files are mode 0600), or "
                        "with --jsonl as the tagged records themselves (each file then a "
                        "complete stream, events included, that ctidiff and ctipretty read).",
                        EXAMPLE)
    parser.add_argument("client_file", metavar="CLIENTFILE")
    parser.add_argument("server_file", metavar="SERVERFILE")
    parser.add_argument("--jsonl", action="store_true",
                        help="write the tagged records themselves (each side's data records and "
                             "every event) instead of indented JSON")
    args = parser.parse_args(argv)
    if same_file(args.client_file, args.server_file):
        parser.error(f"CLIENTFILE and SERVERFILE are the same file ({args.client_file}, "
                     f"{args.server_file}): give one file per side")
    return cli.guarded(PROG, lambda: stage.run_stage(
        PROG, Split(args.client_file, args.server_file, args.jsonl)), debug=args.debug)

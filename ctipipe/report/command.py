"""ctireport: read a tagged stream and write one self-contained HTML page that
shows its sessions: overview, timeline, ladder diagram, latency, rate."""
from __future__ import annotations

import os
import stat
import tempfile

from ctipipe import __version__
from ctipipe.core import cli
from ctipipe.core.terminal import safe_text
from ctipipe.report import model, page
from ctipipe.stages import runner as stage

PROG = "ctireport"

EXAMPLE = """\
ctireport session.jsonl -o session.html        # then open session.html in a browser
ctirelay xivo-new | tee s.jsonl | ctipretty     # record, watch; later: ctireport s.jsonl -o r.html
ctireplay s.jsonl --to xivo-test --clients 20 | ctireport -o load.html
"""


class _Gather(stage.Stage):
    def __init__(self, report: model.Report) -> None:
        self.report = report

    def handle(self, record: dict, line: bytes) -> bytes | None:
        try:
            self.report.add(record, line)
        except model.Skipped:
            self.report.skipped += 1
        return None


class _Output:
    """The page's file: written beside its name and renamed into place when
    complete, so that a failure leaves nothing half-written (and an existing
    report as it was). Created 0600: a report holds what the capture held.
    Only a regular file is replaced: not a symbolic link (as ctisplit, a
    capture's content is never written through one), a device or a FIFO."""

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        self._check()
        try:
            fd, self.temp = tempfile.mkstemp(dir=folder, prefix=".ctireport-", suffix=".tmp")
        except OSError as error:
            raise cli.CommandError(f"cannot write {path}: {error.strerror}") from None
        self.file = os.fdopen(fd, "wb")

    def _check(self) -> None:
        """Refuse what is at the path, unless nothing or a regular file."""
        try:
            mode = os.lstat(self.path).st_mode
        except OSError:  # nothing there (or no such folder: mkstemp says so)
            return
        if stat.S_ISREG(mode):
            return
        if stat.S_ISLNK(mode):
            raise cli.CommandError(f"{self.path} is a symbolic link; not writing through it "
                                   f"(give the real path)")
        if stat.S_ISDIR(mode):
            raise cli.CommandError(f"cannot write {self.path}: it is a directory")
        kind = ("a character device" if stat.S_ISCHR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a block device")
        raise cli.CommandError(f"cannot write {self.path}: it is {kind}, not a regular file "
                               f"(without -o the page goes to standard output)")

    def commit(self, pieces: list[bytes]) -> None:
        try:
            for piece in pieces:
                self.file.write(piece)
            self.file.close()
            self._check()  # again: what was put there while the input was read stays
            os.replace(self.temp, self.path)
        except cli.CommandError:
            self.discard()
            raise
        except OSError as error:
            self.discard()
            raise cli.CommandError(f"cannot write {self.path}: {error.strerror}") from None

    def discard(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


def _same_input(output: str, files: list[str]) -> str | None:
    """The input (as given, or "standard input") that is the file at `output`,
    through any link, or None."""
    try:
        target = os.stat(output)
    except OSError:  # nothing there yet (or a dangling link: refused later)
        return None
    for name in files or ["-"]:
        try:
            given = os.fstat(0) if name == "-" else os.stat(name)
        except OSError:
            continue
        if (given.st_dev, given.st_ino) == (target.st_dev, target.st_ino):
            return "standard input" if name == "-" else name
    return None


def _run(args) -> int:
    if args.output is None and os.isatty(1):
        raise cli.CommandError("the page is HTML: write it to a file (-o report.html), or pipe "
                               "it (ctireport FILE > report.html)")
    output = _Output(args.output) if args.output not in (None, "-") else None
    try:
        title = args.title or (f"ctireport: {', '.join(args.files)}" if args.files
                               else "ctireport")
        report = model.Report(redact=not args.no_redact, only_session=args.session, title=title)
        stage.run_stage(PROG, _Gather(report), args.files)
        if report.skipped:
            cli.report(PROG, f"{report.skipped} record{'s' if report.skipped > 1 else ''} whose "
                             f"keys had the wrong type skipped")
        if not report.sessions:
            which = f" {args.session}" if args.session is not None else ""
            raise cli.CommandError(f"no session{which} in the input: nothing to report")
        document = report.document(redacted=not args.no_redact,
                                   generator=f"{PROG} {__version__}")
        pieces = page.build(document, safe_text(title.encode(), keep_newlines=False).decode())
        if output is None:
            cli.write_all(1, b"".join(pieces))
        else:
            output.commit(pieces)
            output = None
    finally:
        if output is not None:
            output.discard()
    return cli.Exit.OK


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Draw a tagged stream as one self-contained HTML page: overview, "
                        "sessions timeline, ladder diagram of each session with request/reply "
                        "latency, latency and rate plots, a filter. The page needs no network. "
                        "Credentials are masked as ctistrip --redact does, unless --no-redact. "
                        "Reads the FILEs in order (- is standard input), or standard input.",
                        EXAMPLE)
    stage.add_input_files(parser)
    parser.add_argument("-o", "--output", metavar="FILE.html",
                        help="the page's file: a new or a regular file, replaced whole; not one of the "
                             "inputs (default: standard output, when it is not a terminal)")
    parser.add_argument("--title", help="the page's title (default: the files' names)")
    parser.add_argument("--no-redact", action="store_true",
                        help="keep credentials in the page (its header says so)")
    parser.add_argument("--session", type=int, metavar="N", action="append",
                        help="only session N (its conn number; once)")
    args = parser.parse_args(argv)
    if args.session is not None and len(args.session) > 1:
        parser.error(f"--session is given twice ({args.session[0]} and {args.session[1]}): the "
                     f"page shows one session or all")
    args.session = args.session[0] if args.session else None
    if args.output not in (None, "-"):
        same = _same_input(args.output, args.files)
        if same is not None:
            parser.error(f"-o {args.output} is the input {same}: the page would replace it")
    return cli.guarded(PROG, lambda: _run(args), debug=args.debug)

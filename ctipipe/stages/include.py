"""ctiinclude and ctiexclude: keep or drop the messages that match KEY=VALUE expressions.

Several expressions in one stage give OR; several stages in a row give AND.
"""
from __future__ import annotations

from ctipipe.core import cli
from ctipipe.core import paths
from ctipipe.stages import runner as stage

INCLUDE_EXAMPLE = """\
ctirelay xivo-new | ctiinclude class=getlist class=ipbxcommand | ctipretty
ctirelay xivo-new | ctiinclude listname=agents --from server | ctipretty
ctiinclude class=getlist big.jsonl | ctipretty
"""
EXCLUDE_EXAMPLE = """\
ctirelay xivo-new | ctiexclude function=updatestatus | ctipretty
ctiexclude class=keepalive session.jsonl > quiet.jsonl
ctirelay xivo-new | ctiexclude --from client class=keepalive | ctipretty
"""


class Include(stage.Stage):
    """Keeps matching messages (of one side with `side`); events pass, raw lines go
    (with no expression, only the side is chosen and its raw lines stay)."""

    def __init__(self, expressions: list[paths.Expression], side: str | None) -> None:
        self.expressions = expressions
        self.side = side

    def handle(self, record: dict, line: bytes) -> bytes | None:
        side = record.get("from")
        if side is None:
            return line  # events and kinds we do not know pass
        if self.side is not None and side != self.side:
            return None
        if not self.expressions:
            return line
        if "msg" not in record:
            return None
        return line if paths.matches_any(self.expressions, record["msg"]) else None



class Exclude(stage.Stage):
    """Drops matching messages (of one side with `side`; with no expression,
    every record of that side); everything else passes."""

    def __init__(self, expressions: list[paths.Expression], side: str | None = None) -> None:
        self.expressions = expressions
        self.side = side

    def handle(self, record: dict, line: bytes) -> bytes | None:
        side = record.get("from")
        if side is None or (self.side is not None and side != self.side):
            return line
        if not self.expressions:
            return None
        if "msg" in record and paths.matches_any(self.expressions, record["msg"]):
            return None
        return line


def _expressions(parser: cli.Parser, texts: list[str]) -> list[paths.Expression]:
    try:
        return [paths.Expression(text) for text in texts if not stage.is_file_word(text)]
    except paths.ExpressionError as error:
        text = str(error)
        if text.startswith("not a KEY=VALUE expression"):
            text += " nor an existing file to read"
        parser.error(text)


def _words(parser: cli.Parser, description: str) -> None:
    parser.description += " Reads standard input, or the FILEs among the words."
    parser.usage = "%(prog)s [options] KEY=VALUE... [FILE...]"
    parser.add_argument("expressions", nargs="*", metavar="KEY=VALUE",
                        help=f"{description}; " + stage.FILE_WORDS)


def _files(words: list[str]) -> list[str]:
    return [word for word in words if stage.is_file_word(word)]


def _main(prog: str, kind: type, about: str, words: str, side: str,
          argv: list[str] | None) -> int:
    """ctiinclude and ctiexclude: the same options, the stage of KIND."""
    parser = cli.Parser(prog, about, INCLUDE_EXAMPLE if kind is Include else EXCLUDE_EXAMPLE)
    _words(parser, words)
    parser.add_argument("--from", dest="side", choices=("client", "server"), help=side)
    args = parser.parse_args(argv)
    chosen = kind(_expressions(parser, args.expressions), args.side)
    if not chosen.expressions and args.side is None:
        parser.error("give at least one KEY=VALUE expression, or --from")
    return cli.guarded(prog, lambda: stage.run_stage(prog, chosen, _files(args.expressions)),
                       debug=args.debug)


def main_include(argv: list[str] | None = None) -> int:
    return _main("ctiinclude", Include,
                 "Keep only the messages matching one of the KEY=VALUE expressions "
                 "(KEY!=VALUE: not matching); events pass, undecodable lines are dropped.",
                 "keep the messages where KEY (a dotted path) holds VALUE",
                 "keep only this side's records", argv)


def main_exclude(argv: list[str] | None = None) -> int:
    return _main("ctiexclude", Exclude,
                 "Drop the messages matching one of the KEY=VALUE expressions "
                 "(KEY!=VALUE: not matching); everything else passes.",
                 "drop the messages where KEY (a dotted path) holds VALUE",
                 "drop only this side's messages (all of them, given no expression)", argv)

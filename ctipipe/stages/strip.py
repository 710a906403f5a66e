"""ctistrip: remove fields from every message, or mask credentials with --redact."""
from __future__ import annotations

import argparse
import base64
import re

from ctipipe.core import cli
from ctipipe.core import paths
from ctipipe.stages import runner as stage
from ctipipe.core import stream

PROG = "ctistrip"

# Fields whose values are credentials in the CTI protocol (login_pass sends
# hashedpassword; other clients and tools use the rest).
SECRET_FIELDS = ("hashedpassword", "password", "passwd", "token")
MASK = "***"
_MISSING = object()

EXAMPLE = """\
ctirelay xivo-new | ctistrip timenow commandid replyid | ctipretty
ctirelay xivo-new | ctistrip --redact | tee capture.jsonl | ctipretty
ctistrip config.lastcall status.queues session.jsonl > lean.jsonl
"""


class Strip(stage.Stage):
    """Removes fields and masks credentials. With --redact, a message whose
    text holds a credential's name (or an escape, which may spell one) is
    decoded again seeing every key, duplicates included: JSON readers differ
    on which of two equal keys wins, so every occurrence is masked."""

    rewrites = True  # messages are encoded anew: integers beyond 64 bits kept exact

    def __init__(self, fields: list[str], secrets: set[str], prog: str = PROG) -> None:
        self.prog = prog  # who says the warning about --raw chunks (ctireport uses Strip too)
        self.paths = [paths.field_path(field) for field in fields]
        # fields at the top of the message (timenow), removed without a walk
        self.top = [path[0] for path in self.paths if len(path) == 1]
        self.deep = [path for path in self.paths if len(path) > 1]
        self.secrets = secrets
        self.in_text = secret_pattern(secrets) if secrets else None
        self.hint = _hint_pattern(secrets) if secrets else None
        self.warned_chunks = False

    def handle(self, record: dict, line: bytes) -> bytes | None:
        if "from" not in record:
            return line  # not a data record: passes untouched
        message = record.get("msg", _MISSING)
        if message is _MISSING:
            return self._mask_raw(record, line) if self.in_text is not None else line
        changed = False
        if self.hint is not None and self.hint.search(line) is not None:
            record, changed = self._every_key_masked(record, line)
            message = record["msg"]
        # (otherwise no credential's name in the line, nor an escape that could spell one)
        if type(message) is dict:
            for key in self.top:
                if key in message:
                    del message[key]
                    changed = True
        if self.deep:
            for path in self.deep:
                if paths.remove(message, path):
                    changed = True
        # Untouched messages keep their wire text byte for byte.
        return stream.replace_message(record, line) if changed else line

    def _every_key_masked(self, record: dict, line: bytes) -> tuple[dict, bool]:
        """The record decoded again with every credential masked, duplicate
        keys included (only the last of them stays), and whether one was."""
        secrets = self.secrets
        masked = False

        def pairs(items: list) -> dict:
            nonlocal masked
            for index, (key, value) in enumerate(items):
                if key in secrets and value != MASK:
                    items[index] = (key, MASK)
                    masked = True
            return dict(items)

        try:
            again = stream.exact_loads(line, pairs)
        except (ValueError, RecursionError):  # orjson read it: not expected
            again = None
        if type(again) is not dict or "msg" not in again:
            return record, mask_secrets(record["msg"], secrets)
        return again, masked

    def _mask_raw(self, record: dict, line: bytes) -> bytes:
        """Mask `"password":"..."` pairs in a line that was not JSON (or a --raw chunk)."""
        if record.get("chunk") and not self.warned_chunks:
            self.warned_chunks = True
            cli.report(self.prog, "--redact on --raw chunks: a credential split across two reads "
                             "cannot be found and stays as it was; check such captures")
        changed = False
        if type(record.get("raw")) is str:
            text = record["raw"].encode("utf-8", "surrogatepass")
            masked = self.in_text.sub(masked_pair, text)
            if masked != text:
                record["raw"] = masked.decode("utf-8", "surrogatepass")
                changed = True
        if type(record.get("raw_b64")) is str:  # both, when a record has both
            try:
                data = base64.b64decode(record["raw_b64"], validate=True)
            except ValueError:
                data = None
            masked = self.in_text.sub(masked_pair, data) if data is not None else None
            if masked is not None and masked != data:
                record["raw_b64"] = base64.b64encode(masked).decode()
                changed = True
        if not changed:
            return line
        return stream.encode(record)


def secret_pattern(secrets: set[str]) -> re.Pattern:
    """A credential's key and string value as they appear in JSON text."""
    keys = b"|".join(re.escape(name.encode()) for name in sorted(secrets))
    return re.compile(rb'("(?:' + keys + rb')"\s*:\s*)"(?:[^"\\]|\\.)*"?')


def _hint_pattern(secrets: set[str]) -> re.Pattern:
    """Text in a line that the decoded message may not show: a credential's
    name (one of two equal keys is lost when decoded) or an escape. A line
    without any cannot hold a credential: a letter is escaped only as \\u,
    and a name with a character of a shorter escape (`/`, a quote, a
    backslash, a control character) makes any backslash a hint."""
    shorter = any(char in '"\\/' or char < " " for name in secrets for char in name)
    return re.compile(b"|".join(re.escape(name.encode()) for name in sorted(secrets))
                      + (rb"|\\" if shorter else rb"|\\u"))


def masked_pair(match: re.Match) -> bytes:
    # The value's closing quote may be missing (a line cut short): the mask ends it anyway.
    return match.group(1) + b'"' + MASK.encode() + b'"'

def mask_secrets(value: object, secrets: set[str]) -> bool:
    """Replace credential values at any depth of a decoded message (a loop,
    not recursion: a message may be 1023 levels deep); True if one was found.
    Where the line is at hand, Strip's own rule also masks the duplicate keys
    that decoding loses."""
    found = False
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key, item in node.items():
                if key in secrets and item != MASK:
                    node[key] = MASK
                    found = True
                elif type(item) in (dict, list):
                    stack.append(item)
        elif type(node) is list:
            stack += [item for item in node if type(item) in (dict, list)]
    return found

def add_redact_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redact", action="store_true",
                        help="replace credential values (%s) with %s" % (", ".join(SECRET_FIELDS), MASK))
    parser.add_argument("--redact-field", action="append", default=[], metavar="NAME",
                        help="one more field name to mask (implies --redact)")

def secret_fields(args: argparse.Namespace) -> set[str]:
    if not (args.redact or args.redact_field):
        return set()
    return set(SECRET_FIELDS) | set(args.redact_field)

def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Remove fields from every message of the tagged stream "
                        "(a dotted path reaches into nested objects). Reads standard input, or "
                        "the FILEs among the words.", EXAMPLE,
                        usage="%(prog)s [options] FIELD... [FILE...]")
    parser.add_argument("fields", nargs="*", metavar="FIELD",
                        help="a field to remove (timenow, config.lastcall); " + stage.FILE_WORDS)
    add_redact_options(parser)
    args = parser.parse_args(argv)
    files = [word for word in args.fields if stage.is_file_word(word)]
    fields = [word for word in args.fields if not stage.is_file_word(word)]
    if not fields and not secret_fields(args):
        parser.error("give at least one FIELD to remove, or --redact")
    try:
        strip = Strip(fields, secret_fields(args))
    except paths.ExpressionError as error:
        parser.error(str(error))
    return cli.guarded(PROG, lambda: stage.run_stage(PROG, strip, files), debug=args.debug)

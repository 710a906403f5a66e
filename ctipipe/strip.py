"""ctistrip: remove fields from every message, or mask credentials with --redact."""
from __future__ import annotations

import argparse

from . import cli, paths, stage, stream

PROG = "ctistrip"

# Fields whose values are credentials in the CTI protocol (login_pass sends
# hashedpassword; other clients and tools use the rest).
SECRET_FIELDS = ("hashedpassword", "password", "passwd", "token")
MASK = "***"

EXAMPLE = """\
ctirelay xivo-new | ctistrip timenow commandid replyid | ctipretty
ctirelay xivo-new | ctistrip --redact | tee capture.jsonl | ctipretty
ctistrip config.lastcall status.queues < session.jsonl > lean.jsonl
"""


class Strip(stage.Stage):
    def __init__(self, fields: list[str], secrets: set[str]) -> None:
        self.paths = [paths.split_path(field) for field in fields]
        self.secrets = secrets

    def handle(self, record: dict, line: bytes) -> bytes | None:
        message = record.get("msg")
        if type(message) is not dict or "from" not in record:
            return line  # not a message: passes untouched
        changed = False
        for path in self.paths:
            if paths.remove(message, path):
                changed = True
        if self.secrets and _mask(message, self.secrets):
            changed = True
        # Untouched messages keep their wire text byte for byte.
        return stream.replace_message(record, line) if changed else line



def _mask(value: object, secrets: set[str]) -> bool:
    """Replace credential values at any depth; True if one was found."""
    found = False
    if type(value) is dict:
        for key, item in value.items():
            if key in secrets and item != MASK:
                value[key] = MASK
                found = True
            elif type(item) in (dict, list):
                found = _mask(item, secrets) or found
    elif type(value) is list:
        for item in value:
            if type(item) in (dict, list):
                found = _mask(item, secrets) or found
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
                        "(a dotted path reaches into nested objects).", EXAMPLE)
    parser.add_argument("fields", nargs="*", metavar="FIELD")
    add_redact_options(parser)
    args = parser.parse_args(argv)
    if not args.fields and not secret_fields(args):
        parser.error("give at least one FIELD to remove, or --redact")
    try:
        strip = Strip(args.fields, secret_fields(args))
    except paths.ExpressionError as error:
        parser.error(str(error))
    return cli.guarded(PROG, lambda: stage.run_stage(PROG, strip), debug=args.debug)

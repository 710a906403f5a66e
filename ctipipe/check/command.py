"""cticheck: check every session of a tagged stream against the CTI protocol's
rules (rules.py), and say like a compiler which message broke which rule."""
from __future__ import annotations

import collections

import orjson

from ctipipe.check import rules as R
from ctipipe.check.checker import Checker, Located, not_checked, server_did
from ctipipe.core import cli, protocol, stream
from ctipipe.core.terminal import safe_json, safe_text
from ctipipe.stages import runner as stage

PROG = "cticheck"

EXAMPLE = """\
cticheck session.jsonl                      # findings, then a summary per session and rule
cticheck --protocol 2.3 session.jsonl       # check against 2.3 whatever the login says
ctirelay xivo-new | cticheck --annotate | ctipretty    # findings shown in place
cticheck --rules                            # the rules, with what the server does
cticheck --wireshark-lua > cti.lua          # then: wireshark -X lua_script:cti.lua
"""


def finding_line(found: Located) -> str:
    """`conn 1 +0.412 client login_pass: <text>; <server reaction> [L3]`"""
    when = f"+{found.offset:.3f}" if found.offset is not None else "+?"
    where = f"{found.side} {found.name}:" if found.name else f"{found.side}:"
    text = f"{found.text}; {found.server}" if found.server else found.text
    return f"conn {found.conn} {when} {where} {text} [{found.rule}]"


def finding_object(found: Located) -> dict:
    return {"conn": found.conn, "ts": found.ts,
            "offset": round(found.offset, 6) if found.offset is not None else None,
            "from": found.side, "class": found.name, "rule": found.rule, "text": found.text,
            "server": found.server, "protocol": found.protocol}


def check_event(found: Located, ts: object) -> bytes:
    """The `check` event --annotate writes after the record that broke a rule."""
    fields = {"rule": found.rule, "side": found.side, "class": found.name, "text": found.text,
              "server": found.server, "protocol": found.protocol}
    if found.ts != ts:
        fields["at"] = found.ts  # an unanswered request: when it was sent
    when = ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else 0.0
    return stream.event_record(float(when), found.conn, "check", **fields).rstrip(b"\n")


class Check(stage.Stage):
    rewrites = True  # requests and replies paired by exact values (integers beyond 64 bits)

    def __init__(self, protocol_version: str, mode: str) -> None:
        self.checker = Checker(protocol_version)
        self.mode = mode  # "text", "json" or "annotate"
        self.total = 0
        self.records = 0  # records that belong to the stream (data or event)
        self.by_rule: collections.Counter = collections.Counter()
        self.sessions_by_rule: dict[str, set] = collections.defaultdict(set)

    def _out(self, found: list[Located], ts: object) -> list[bytes]:
        self.total += len(found)
        for item in found:
            self.by_rule[item.rule] += 1
            self.sessions_by_rule[item.rule].add(repr(item.conn))
        if self.mode == "annotate":
            return [check_event(item, ts) for item in found]
        if self.mode == "json":
            return [safe_json(orjson.dumps(finding_object(item))) for item in found]
        return [safe_text(finding_line(item).encode(), False) for item in found]

    def handle(self, record: dict, line: bytes) -> bytes | None:
        if "from" in record or "event" in record:
            self.records += 1
        found = self.checker.record(record)
        ts = record.get("ts")
        if self.mode == "annotate":
            if record.get("event") in ("close", "start"):  # what sessions left undone, first
                return b"\n".join(self._out(found, ts) + [line])
            return b"\n".join([line] + self._out(found, ts))
        return b"\n".join(self._out(found, ts)) if found else None

    def finish(self) -> bytes | None:
        out = self._out(self.checker.finish(), None)
        if self.mode == "text":
            out += [safe_text(text.encode(), False) for text in self.summary()]
        return b"\n".join(out) + b"\n" if out else None

    def summary(self) -> list[str]:
        lines = []
        for session in self.checker.ended:
            count = sum(session.findings.values())
            how = {"client": "from the client's login_id", "server": "from the server's login_id",
                   "key": "from login_id's version key", "forced": "as told",
                   "assumed": "assumed: the server's own",
                   "unknown": "its login is not in the input"}[session.how]
            rules = ", ".join(f"{rule} {n}" for rule, n in sorted(session.findings.items()))
            if count:
                said = f"{count} finding{'s' if count != 1 else ''} ({rules})"
            elif not session.lines:
                said = "nothing to check (no whole line in the input)"
            else:
                said = "clean"
            notes = not_checked(session)
            lines.append(f"=== session {session.conn} (protocol {session.version}, {how}): "
                         + said + f"; {server_did(session)}"
                         + (f"; not checked: {'; '.join(notes)}" if notes else ""))
        if self.by_rule:
            lines.append("=== findings by rule")
            for rule in R.RULES:
                if rule.id in self.by_rule:
                    sessions = len(self.sessions_by_rule[rule.id])
                    lines.append(f"{rule.id} {self.by_rule[rule.id]} in {sessions} session"
                                 f"{'s' if sessions != 1 else ''}: {rule.says}")
        lines.append(f"=== {self.total} finding{'s' if self.total != 1 else ''} in "
                     f"{len(self.checker.ended)} session"
                     f"{'s' if len(self.checker.ended) != 1 else ''}")
        return lines


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Check every session of a tagged stream against the CTI "
                        "protocol's rules: one line per message that breaks one (which rule, "
                        "what the server does about it), then a summary per session and per "
                        "rule. Reads the FILEs in order (- is standard input), or standard "
                        "input. Exit status: 0 no finding, 1 findings, 2 bad input.", EXAMPLE)
    parser.add_argument("--protocol", choices=("auto",) + protocol.VERSIONS, default="auto",
                        help="the protocol version to check against (default: auto, learnt "
                             "from each session's login_id and the server's answer)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per finding")
    out.add_argument("--annotate", action="store_true",
                     help="pass the stream through, with a check event after each record "
                          "that broke a rule (ctipretty shows them)")
    out.add_argument("--rules", action="store_true", help="list the rules and exit")
    out.add_argument("--wireshark-lua", action="store_true",
                     help="write a Wireshark dissector (Lua) made from the same rules and exit")
    stage.add_input_files(parser)
    args = parser.parse_args(argv)
    if args.rules:
        cli.write_all(1, R.rules_text().encode())
        return cli.Exit.OK
    if args.wireshark_lua:
        from ctipipe.check import lua
        cli.write_all(1, lua.dissector().encode())
        return cli.Exit.OK
    mode = "json" if args.json else "annotate" if args.annotate else "text"
    check = Check(args.protocol, mode)

    def body() -> int:
        try:
            stage.run_stage(PROG, check, args.files)
        except cli.CommandError as error:  # a FILE that cannot be read: bad input, not a finding
            cli.report(PROG, f"error: {error}")
            return cli.Exit.USAGE
        if check.malformed or not check.records:
            if not check.records:
                cli.report(PROG, "the input held no tagged-stream record (from ctirelay or "
                                 "ctireplay)")
            return cli.Exit.USAGE
        return cli.Exit.ERROR if check.total else cli.Exit.OK

    return cli.guarded(PROG, body, debug=args.debug)

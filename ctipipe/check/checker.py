"""The checker: records of a tagged stream in, findings out (pure, no I/O).

`Checker` follows every session of a stream (its protocol version, the
STARTTLS exchange, the login, what waits for an answer) and applies to each
message the rules of one message (message.py) and those that need the
session's history (rules.py). What answered what is the pairing ctistat uses
(stages/replies.py), so the two never disagree. Each finding names its rule.
"""
from __future__ import annotations

import collections
from typing import NamedTuple

from ctipipe.check import rules as R
from ctipipe.check.message import (Finding, check_client, check_server, finding, int_like,
                                   show)
from ctipipe.core import protocol, stream
from ctipipe.stages import replies
from ctipipe.stages.runner import BadRecord

# Every commandid a session's client sent, kept to tell a reply to nothing (R2)
# from a reply to a request the protocol does not answer; bounded like the
# pairing, so that a long session cannot make the checker grow without end.
MAX_COMMANDIDS = replies.MAX_PENDING

_RANK = {version: index for index, version in enumerate(protocol.VERSIONS)}
_LOGIN_STEPS = ("login_id", "login_pass", "login_capas")
_FAX_TRACKING = ("response", "autocall_channel", "originatereason")  # keys of ipbxcommand tracking

# What a finding of these rules rests on besides the message itself: the other
# side's records (a client finding on the server's answers, a server finding on
# the client's requests) and a login seen in the session. One is held until
# what it rests on is seen, and dropped if the session ends without it (a
# one-sided input, a session filtered of its login): the summary says so.
_NEEDS_SERVER = frozenset(("L1", "L6", "S5", "R1"))
_NEEDS_CLIENT = frozenset(("R2", "S3"))
_NEEDS_LOGIN = frozenset(("L1", "L6"))
UNKNOWN = "unknown"  # the version of a session whose login was not seen


def _is_version(value: object) -> bool:
    return type(value) is str and value in _RANK


def _per_message(check, message: object, version: str) -> list[Finding]:
    """The rules of one message for the session's version; for a version not
    known, only what every protocol version finds (texts say so)."""
    if version != UNKNOWN:
        return check(message, version)
    per = [check(message, each) for each in protocol.VERSIONS]
    common = set.intersection(*({found.rule for found in findings} for findings in per))
    out = []
    newest = protocol.VERSIONS[-1]
    for found in per[-1]:
        if found.rule not in common:
            continue
        if found.rule == "E1":  # explained as by a version that sends this error
            found = next((other for findings in reversed(per) for other in findings
                          if other.rule == "E1" and "(protocol " not in other.text), found)
        out.append(found._replace(text=found.text.replace(
            f"protocol {newest}", f"every protocol version ({protocol.VERSIONS[0]} to {newest})")))
    return out


class Located(NamedTuple):
    """A finding where it happened in the stream."""
    conn: object
    ts: object
    offset: float | None  # seconds since the session opened
    side: str  # "client", "server" or "session"
    name: str  # the message's class ("" for a session finding)
    rule: str
    text: str
    server: str
    protocol: str
    value: object = None


class _Asked(NamedTuple):
    """What the checker notes of a request it hands to the pairing (its `ref`)."""
    offset: float | None
    expected: bool  # False when a finding already says the server will not answer


class _Session:
    def __init__(self, conn: object, forced: str | None) -> None:
        self.conn = conn
        self.forced = forced
        self.version = forced or protocol.SERVER_VERSION
        self.how = "forced" if forced else "assumed"  # how the version was learnt
        self.start: float | None = None  # when the connection opened
        # Why the session's beginning is not in the input (None: it is): no
        # open record, or its first line cut (a capture that began mid-session).
        self.unseen_start: str | None = "the input holds no open record of it"
        self.seen = {"client": 0, "server": 0}  # data records per side
        self.lines = 0  # whole lines (messages, or lines that are not JSON)
        self.login_seen = False  # a login_id message, from either side
        self.encrypted = False  # a TLS upgrade the input does not hold the clear text of
        self.gap_at: dict[str, float | None] = {"client": None, "server": None}  # the last gap
        self.missing = 0  # bytes a gap record said are missing (ctipcap)
        self.lost = 0  # records a gap record said were lost (the relay's tap)
        self.held: list[Located] = []  # findings waiting for what they rest on
        self.dropped: collections.Counter = collections.Counter()  # why findings were not given
        self.silent: set[str] = set()  # sides the close says sent nothing
        self.client_said: object = None  # the version the client's login_id gave
        self.server_messages = 0
        self.offered = False
        self.starttls_status: object = None
        self.starttls_asked = False
        self.early_starttls: object = None  # a starttls sent before the server's first word
        self.upgrade_pending = False  # echo starttls:true seen, tls event not yet
        self.authenticated = False
        self.logged_in = False
        self.steps: set[str] = set()
        self.capalist: object = None
        self.timeout_flagged = False
        self.pairing = replies.Pairing()
        self.commandids: collections.OrderedDict = collections.OrderedDict()
        self.last_error: object = None  # the last server message's error_string
        self.closing: Located | None = None  # the last finding the server closes on
        self.findings: collections.Counter = collections.Counter()
        self.close: dict | None = None

    def learn(self, version: str, how: str) -> None:
        if not self.forced and self.how != "client":
            self.version, self.how = version, how

    @property
    def from_start(self) -> bool:
        return self.unseen_start is None

    def offset(self, ts: object) -> float | None:
        if isinstance(ts, (int, float)) and self.start is not None:
            return ts - self.start
        return None


class Checker:
    """Follows the sessions of a tagged stream and says what breaks a rule.

    `protocol_version`: "auto" (learn each session's version from its login)
    or a version to check every session against.
    """

    def __init__(self, protocol_version: str = "auto") -> None:
        self.forced = None if protocol_version == "auto" else protocol_version
        self.sessions: dict[int, _Session] = {}  # by conn
        self.ended: list[_Session] = []  # sessions over, for the summary

    def session(self, conn: object) -> _Session:
        if type(conn) is not int:
            # (a string, null, an object... names no session: the record is
            # skipped with the runner's warning, as ctistat and ctireport do)
            raise BadRecord(stream.NO_SESSION)
        found = self.sessions.get(conn)
        if found is None:
            found = self.sessions[conn] = _Session(conn, self.forced)
        return found

    def record(self, record: dict) -> list[Located]:
        """The findings this record brings (and those of the sessions it ends)."""
        side = record.get("from")
        if side in ("client", "server"):
            return self._data(self.session(record.get("conn")), record, side)
        event = record.get("event")
        if event is None or "conn" not in record:
            if event == "start":  # a new producer: its session numbers start again
                return self.finish()
            return []
        session = self.session(record.get("conn"))
        ts = record.get("ts")
        if event == "open":
            if not any(session.seen.values()):
                session.start = ts if isinstance(ts, (int, float)) else None
                session.unseen_start = None
        elif event == "tls":
            session.upgrade_pending = False
            if record.get("intercepted") is False:
                session.encrypted = True  # what follows is not in the input
        elif event == "gap":
            self._gap(session, record, ts)
        elif event == "close":
            session.close = record
            sent = record.get("bytes")
            if isinstance(sent, dict):
                session.silent = {side for side in ("client", "server") if sent.get(side) == 0}
            out = [] if session.logged_in else self._timeout(session, ts)
            out += self._end(session, ts, "closed")
            self.sessions.pop(session.conn, None)
            self.ended.append(session)
            return out
        return []

    def finish(self) -> list[Located]:
        """At the end of input: what the sessions still open leave unanswered."""
        out = []
        for session in {id(s): s for s in self.sessions.values()}.values():
            out += self._end(session, None, "input ended")
            self.ended.append(session)
        self.sessions.clear()
        return out

    # --- the parts ---

    def _locate(self, session: _Session, ts: object, side: str, name: object,
                found: Finding) -> Located:
        return Located(session.conn, ts, session.offset(ts), side,
                       name if type(name) is str else "", found.rule, found.text,
                       found.server, session.version, found.value)

    def _emit(self, session: _Session, out: list, located: Located) -> None:
        """Give a finding, unless a gap could explain it; hold it while what
        it rests on (the other side, a login) has not been seen."""
        rule = located.rule
        other = ("server" if rule in _NEEDS_SERVER else "client" if rule in _NEEDS_CLIENT
                 else None)
        if other is not None:
            gap = session.gap_at[other]
            # a request's answer may have been in bytes missing after it; the
            # other rules rest on what the other side said so far
            if gap is not None and (rule != "R1" or not isinstance(located.ts, (int, float))
                                    or gap >= located.ts):
                session.dropped["gap"] += 1
                return
        if self._rests_on_seen(session, rule):
            self._give(session, located, out)
        else:
            session.held.append(located)

    def _rests_on_seen(self, session: _Session, rule: str) -> bool:
        for side, rules in (("server", _NEEDS_SERVER), ("client", _NEEDS_CLIENT)):
            if rule in rules and not session.seen[side] and side not in session.silent:
                return False
        return rule not in _NEEDS_LOGIN or session.login_seen

    def _give(self, session: _Session, located: Located, out: list) -> None:
        session.findings[located.rule] += 1
        if located.server == R.CLOSES and located.side == "client":
            session.closing = located
        out.append(located)

    def _release(self, session: _Session, out: list) -> None:
        """The held findings whose ground has now been seen."""
        still = []
        for located in session.held:
            if self._rests_on_seen(session, located.rule):
                self._give(session, located, out)
            else:
                still.append(located)
        session.held = still

    def _gap(self, session: _Session, record: dict, ts: object) -> None:
        """Bytes (ctipcap: `missing`) or records (the relay's tap: `lost`, no
        side) missing from the input: what they held is not known."""
        when = ts if isinstance(ts, (int, float)) else float("inf")
        side = record.get("side")
        for each in ((side,) if side in ("client", "server") else ("client", "server")):
            session.gap_at[each] = when
        missing, lost = record.get("missing"), record.get("lost")
        session.missing += missing if type(missing) is int else 0
        session.lost += lost if type(lost) is int else 0

    def _timeout(self, session: _Session, ts: object) -> list[Located]:
        if (session.timeout_flagged or not session.from_start or session.start is None
                or session.encrypted
                or not isinstance(ts, (int, float)) or ts - session.start <= R.LOGIN_TIMEOUT):
            return []
        session.timeout_flagged = True
        out: list[Located] = []
        self._emit(session, out, self._locate(session, ts, "session", "", finding(
            "L6", f"the login has not completed {R.LOGIN_TIMEOUT:g} s after the connection "
                  f"(+{ts - session.start:.3f} here)")))
        return out

    def _data(self, session: _Session, record: dict, side: str) -> list[Located]:
        ts = record.get("ts")
        if not any(session.seen.values()):  # the session's first line
            if session.start is None and isinstance(ts, (int, float)):
                session.start = ts  # no open event: time from the first record
            if record.get("partial"):  # its start is not in the input (docs/stream.md)
                session.unseen_start = "the capture began mid-session"
            if not session.from_start and not session.forced:
                session.version, session.how = UNKNOWN, UNKNOWN
        session.seen[side] += 1
        out = [] if session.logged_in else self._timeout(session, ts)
        if "msg" not in record:
            if record.get("chunk") or record.get("partial") or record.get("oversize"):
                if record.get("partial"):  # a cut line: what it held is not known, as in a gap
                    session.gap_at[side] = ts if isinstance(ts, (int, float)) else float("inf")
                self._release(session, out)
                return out  # not a line the peer finished: nothing to check
            session.lines += 1
            what = "an empty line" if record.get("raw") == "" else "a line that is not JSON"
            self._emit(session, out, self._locate(session, ts, side, "", finding(
                "F1", what, None if side == "client" else R.NOTHING)))
            self._release(session, out)
            return out
        session.lines += 1
        message = record["msg"]
        if type(message) is dict and message.get("class") == "login_id":
            session.login_seen = True
        if side == "client":
            self._client(session, message, ts, out)
        else:
            self._server(session, message, ts, out)
        self._release(session, out)
        return out

    def _client(self, session: _Session, message: object, ts: object, out: list) -> None:
        name = message.get("class") if type(message) is dict else None
        if session.upgrade_pending:
            self._emit(session, out, self._locate(session, ts, "client", name, finding(
                "S4", "a message in clear text after the server accepted STARTTLS: a TLS "
                      "handshake must come first")))
            session.upgrade_pending = False
        if name == "login_id" and not session.forced:
            said = message.get("wazoversion", message.get("xivoversion"))
            session.client_said = said
            if _is_version(said):
                session.version, session.how = said, "client"
            elif "wazoversion" in message:
                session.learn("2.3", "key")
        expected = True  # does the server answer it, for all the checker knows
        for found in _per_message(check_client, message, session.version):
            self._emit(session, out, self._locate(session, ts, "client", name, found))
            if (found.rule in ("M3", "M4") or found.server == R.CLOSES
                    or (found.rule == "M5" and "no answer" in found.text)):
                expected = False
        if type(name) is not str:
            return
        if not self._session_rules(session, message, name, ts, out):
            expected = False
        if "commandid" in message:
            session.commandids[replies.request_key(message["commandid"])] = None
            if len(session.commandids) > MAX_COMMANDIDS:
                session.commandids.popitem(last=False)
        if not isinstance(ts, (int, float)):
            return
        asked = _Asked(session.offset(ts), expected)
        for outcome in session.pairing.request(message, ts, asked):
            if outcome.why == replies.REPLACED and outcome.expected and outcome.request.ref.expected:
                self._emit(session, out, self._unanswered(session, outcome, f"no answer to this "
                                            f"{outcome.request.name} before its commandid was "
                                            f"used again"))

    def _session_rules(self, session: _Session, message: dict, name: str, ts: object,
                       out: list) -> bool:
        """The client rules that need the session's history; False when the
        server will not answer the message because of them."""
        answered = True
        if name == "login_id":
            said = session.client_said
            if not _is_version(said) and ("wazoversion" in message or "xivoversion" in message):
                what = (f"no version field ({'wazoversion' if 'wazoversion' in message else 'xivoversion'}"
                        f" is null)" if said is None else f"{show(said)} is not a CTI protocol "
                        f"version ({', '.join(protocol.VERSIONS)})")
                answer = ""
                if session.version in R.VERSION_KEY:
                    key = R.VERSION_KEY[session.version]
                    answer = (f": a real server answers {key.replace('version', 'version_client')}:"
                              f"{said if type(said) is str or said is None else show(said)};{session.version}")
                self._emit(session, out, self._locate(session, ts, "client", name, finding(
                    "V1", what + answer, value=said)))
            elif session.forced and _is_version(said) and said != session.forced:
                self._emit(session, out, self._locate(session, ts, "client", name, finding(
                    "V1", f"the client speaks protocol {said}, the server {session.forced}")))
        if name in _LOGIN_STEPS:
            if name in session.steps:
                self._emit(session, out, self._locate(session, ts, "client", name, finding(
                    "L7", f"a second {name} on this connection: only the first is handled; "
                          f"reconnect to retry")))
                answered = False
            session.steps.add(name)
        allowed = R.BEFORE_LOGIN.get(session.version, R.BEFORE_LOGIN_2)
        if (not session.authenticated and session.from_start and name not in allowed
                and name in R.CLIENT_CLASSES):
            self._emit(session, out, self._locate(session, ts, "client", name, finding(
                "L1", f"{name} sent before login_pass succeeded")))
            answered = False
        if name == "starttls":
            # Before the server's first message its offer may be on its way
            # (sent at accept): the server's first message decides (_server).
            early = session.server_messages == 0 and not session.starttls_asked
            if not session.offered and session.from_start and not early:
                self._emit(session, out, self._locate(session, ts, "client", name, finding(
                    "S5", "starttls, but the server made no offer")))
            if early:
                session.early_starttls = ts
            if not session.starttls_asked:
                session.starttls_status = message.get("status")
            session.starttls_asked = True
        if name == "login_capas" and session.capalist is not None and int_like(
                message.get("capaid")):
            if int(float(message["capaid"])) != session.capalist:
                self._emit(session, out, self._locate(session, ts, "client", name, finding(
                    "L4", f"capaid {show(message['capaid'])} is not the {session.capalist} "
                          f"the login_pass reply gave", R.REFUSES)))
        return answered

    def _server(self, session: _Session, message: object, ts: object, out: list) -> None:
        session.server_messages += 1
        name = message.get("class") if type(message) is dict else None
        is_offer = (name == "starttls" and "starttls" not in message and "status" not in message)
        if session.early_starttls is not None:
            early, session.early_starttls = session.early_starttls, None
            if not is_offer:
                self._emit(session, out, self._locate(session, early, "client", "starttls", finding(
                    "S5", "starttls, but the server made no offer")))
        if name == "login_id" and not session.forced:
            error = message.get("error_string")
            if type(error) is str and "_client:" in error:
                server_said = error.rpartition(";")[2]
                if server_said in _RANK:
                    session.learn(server_said, "server")
            elif type(message.get("xivoversion")) is str and message["xivoversion"] in _RANK:
                session.learn(message["xivoversion"], "server")
            elif "wazoversion" in message:
                session.learn("2.3", "server")
        for found in _per_message(check_server, message, session.version):
            self._emit(session, out, self._locate(session, ts, "server", name, found))
        if type(message) is not dict:
            return
        session.last_error = message.get("error_string")
        if name == "starttls":
            self._starttls(session, message, is_offer, ts, out)
        elif name == "login_pass" and "error_string" not in message:
            session.authenticated = True
            capalist = message.get("capalist")
            if type(capalist) is list and capalist and int_like(capalist[0]):
                session.capalist = int(float(capalist[0]))
        elif name == "login_capas" and "error_string" not in message:
            session.logged_in = True
        if isinstance(ts, (int, float)):
            answered = session.pairing.reply(message, ts)
        else:
            answered = None
        if answered is None and "replyid" in message and not (
                name == "ipbxcommand" and any(key in message for key in _FAX_TRACKING)):
            replyid = message["replyid"]
            # (directory answers go to every connection of the user: not flagged)
            if (replyid is not None and name != "directory" and session.from_start
                    and replies.request_key(replyid) not in session.commandids):
                self._emit(session, out, self._locate(session, ts, "server", name, finding(
                    "R2", f"replyid {show(replyid)} answers no request of this session",
                    value=replyid)))

    def _starttls(self, session: _Session, message: dict, is_offer: bool, ts: object,
                  out: list) -> None:
        if is_offer:
            session.offered = True
            if session.server_messages != 1 and session.from_start:
                self._emit(session, out, self._locate(session, ts, "server", "starttls", finding(
                    "S1", "the STARTTLS offer after other server messages")))
        elif "starttls" not in message:
            self._emit(session, out, self._locate(session, ts, "server", "starttls", finding(
                "S3", "the echo holds status, not starttls (the documentation's spelling)")))
        else:
            if message["starttls"] != session.starttls_status:
                self._emit(session, out, self._locate(session, ts, "server", "starttls", finding(
                    "S3", f"the echo says {show(message['starttls'])}, the client sent "
                          f"{show(session.starttls_status)}")))
            if message["starttls"] is True:
                session.upgrade_pending = True

    def _unanswered(self, session: _Session, outcome: replies.Outcome, text: str) -> Located:
        request = outcome.request
        return Located(session.conn, request.ts, request.ref.offset, "client", request.name,
                       "R1", text, R.NOTHING, session.version)

    def _end(self, session: _Session, ts: object, how: str) -> list[Located]:
        out = []
        when = "the session ended" if how == "closed" else "the input ended"
        closing = session.closing
        for outcome in session.pairing.end():
            request = outcome.request
            if not (outcome.expected and request.ref.expected):
                continue  # the protocol does not answer it, or a finding said why not
            if session.timeout_flagged and (request.ref.offset or 0.0) > R.LOGIN_TIMEOUT:
                continue  # sent after the login timeout: the server had cut the connection
            if closing is not None and isinstance(closing.ts, (int, float)) and \
                    request.ts >= closing.ts:
                continue  # sent after a message the server closes the connection on
            self._emit(session, out, self._unanswered(session, outcome,
                                        f"no answer to this {request.name} before {when}"))
        close = session.close
        if (close and close.get("by") == "server" and session.version in R.TWO
                and session.last_error is not None and not session.timeout_flagged):
            self._emit(session, out, self._locate(session, ts, "session", "", finding(
                "E2", f"the server closed the connection right after the error "
                      f"{show(session.last_error)}: a 2.x server does not close on an error; "
                      f"suspect the login timeout or a 1.2 server")))
        self._release(session, out)
        for located in session.held:  # what they rest on never came
            side = ("server" if located.rule in _NEEDS_SERVER else "client"
                    if located.rule in _NEEDS_CLIENT else None)
            if side is not None and not session.seen[side] and side not in session.silent:
                session.dropped[f"absent {side}"] += 1
            else:
                session.dropped["no login"] += 1
        session.held = []
        return out


def server_did(session: _Session) -> str:
    """What the server did at the end, in words, tied to the rule that explains it."""
    close = session.close
    if not close:
        return "still open when the input ended"
    by = close.get("by")
    if by != "server":
        return f"closed by {by}"
    ts = close.get("ts")
    cause = session.closing
    if cause is not None and isinstance(ts, (int, float)) and isinstance(cause.ts, (int, float)):
        where = f"+{cause.offset:.3f}" if cause.offset is not None else "earlier"
        return (f"the server closed the connection {ts - cause.ts:.3f} s after the "
                f"{cause.name or 'line'} at {where} that broke [{cause.rule}]")
    if session.timeout_flagged:
        return "the server closed the connection: the login timeout [L6]"
    return "the server closed the connection; no rule explains why"




def not_checked(session: _Session) -> list[str]:
    """What the checker could not check in a session, and why, in words."""
    notes = []
    if session.unseen_start is not None:
        what = "the login" if session.forced else "the login, the version"
        notes.append(f"{what} and replies to earlier requests ({session.unseen_start})")
    elif not session.login_seen and session.lines:
        notes.append("the login (no login_id in the session)")
    for side, other in (("server", "client"), ("client", "server")):
        if not session.seen[side] and session.seen[other] and side not in session.silent:
            what = "the login and the pairing" if side == "server" else "the pairing"
            notes.append(f"{what} (the {side} side is absent)")
    if session.missing or session.lost:
        amount = (f"{session.missing} byte{'s' if session.missing != 1 else ''} missing"
                  if session.missing else "")
        if session.lost:
            amount += (", " if amount else "") + (f"{session.lost} record"
                                                  f"{'s' if session.lost != 1 else ''} lost")
        notes.append(f"the pairing across the gaps ({amount})")
    if session.encrypted:
        notes.append("what followed the TLS upgrade (encrypted, not in the input)")
    return notes

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
from ctipipe.core import protocol
from ctipipe.stages import replies

# Every commandid a session's client sent, kept to tell a reply to nothing (R2)
# from a reply to a request the protocol does not answer; bounded like the
# pairing, so that a long session cannot make the checker grow without end.
MAX_COMMANDIDS = replies.MAX_PENDING

_RANK = {version: index for index, version in enumerate(protocol.VERSIONS)}
_LOGIN_STEPS = ("login_id", "login_pass", "login_capas")
_FAX_TRACKING = ("response", "autocall_channel", "originatereason")  # keys of ipbxcommand tracking


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
        self.from_start = False  # the session was seen from its beginning
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
        self.sessions: dict[object, _Session] = {}
        self.ended: list[_Session] = []  # sessions over, for the summary

    def session(self, conn: object) -> _Session:
        found = self.sessions.get(conn) if type(conn) is int else None
        if found is not None:
            return found
        key = replies.request_key(conn)
        found = self.sessions.get(key)
        if found is None:
            found = self.sessions[key] = _Session(conn, self.forced)
            if type(conn) is int:
                self.sessions[conn] = found  # the common case, looked up as it is
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
            session.start = ts if isinstance(ts, (int, float)) else None
            session.from_start = True
        elif event == "tls":
            session.upgrade_pending = False
        elif event == "close":
            session.close = record
            out = [] if session.logged_in else self._timeout(session, ts)
            out += self._end(session, ts, "closed")
            self.sessions.pop(replies.request_key(session.conn), None)
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
        located = Located(session.conn, ts, session.offset(ts), side,
                          name if type(name) is str else "", found.rule, found.text,
                          found.server, session.version, found.value)
        session.findings[found.rule] += 1
        if found.server == R.CLOSES and side == "client":
            session.closing = located
        return located

    def _timeout(self, session: _Session, ts: object) -> list[Located]:
        if (session.timeout_flagged or not session.from_start or session.start is None
                or not isinstance(ts, (int, float)) or ts - session.start <= R.LOGIN_TIMEOUT):
            return []
        session.timeout_flagged = True
        return [self._locate(session, ts, "session", "", finding(
            "L6", f"the login has not completed {R.LOGIN_TIMEOUT:g} s after the connection "
                  f"(+{ts - session.start:.3f} here)"))]

    def _data(self, session: _Session, record: dict, side: str) -> list[Located]:
        ts = record.get("ts")
        if session.start is None and isinstance(ts, (int, float)):
            session.start = ts  # no open event: time from the first record
        out = [] if session.logged_in else self._timeout(session, ts)
        if "msg" not in record:
            if record.get("chunk") or record.get("partial") or record.get("oversize"):
                return out  # not a line the peer finished: nothing to check
            what = "an empty line" if record.get("raw") == "" else "a line that is not JSON"
            out.append(self._locate(session, ts, side, "", finding(
                "F1", what, None if side == "client" else R.NOTHING)))
            return out
        if side == "client":
            self._client(session, record["msg"], ts, out)
        else:
            self._server(session, record["msg"], ts, out)
        return out

    def _client(self, session: _Session, message: object, ts: object, out: list) -> None:
        if session.server_messages == 0 and session.start is not None:
            session.from_start = True  # the client spoke first: we saw the beginning
        name = message.get("class") if type(message) is dict else None
        if session.upgrade_pending:
            out.append(self._locate(session, ts, "client", name, finding(
                "S4", "a message in clear text after the server accepted STARTTLS: a TLS "
                      "handshake must come first")))
            session.upgrade_pending = False
        if name == "login_id" and not session.forced:
            said = message.get("wazoversion", message.get("xivoversion"))
            session.client_said = said
            if said in _RANK:
                session.version, session.how = said, "client"
            elif "wazoversion" in message:
                session.learn("2.3", "key")
        expected = True  # does the server answer it, for all the checker knows
        for found in check_client(message, session.version):
            out.append(self._locate(session, ts, "client", name, found))
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
                out.append(self._unanswered(session, outcome, f"no answer to this "
                                            f"{outcome.request.name} before its commandid was "
                                            f"used again"))

    def _session_rules(self, session: _Session, message: dict, name: str, ts: object,
                       out: list) -> bool:
        """The client rules that need the session's history; False when the
        server will not answer the message because of them."""
        answered = True
        if name == "login_id":
            said = session.client_said
            key = R.VERSION_KEY[session.version]
            if said not in _RANK and ("wazoversion" in message or "xivoversion" in message):
                out.append(self._locate(session, ts, "client", name, finding(
                    "V1", f"{show(said)} is not a CTI protocol version "
                          f"({', '.join(protocol.VERSIONS)}): a real server answers "
                          f"{key.replace('version', 'version_client')}:{said};{session.version}",
                    value=said)))
            elif session.forced and said in _RANK and said != session.forced:
                out.append(self._locate(session, ts, "client", name, finding(
                    "V1", f"the client speaks protocol {said}, the server {session.forced}")))
        if name in _LOGIN_STEPS:
            if name in session.steps:
                out.append(self._locate(session, ts, "client", name, finding(
                    "L7", f"a second {name} on this connection: only the first is handled; "
                          f"reconnect to retry")))
                answered = False
            session.steps.add(name)
        allowed = R.BEFORE_LOGIN.get(session.version, R.BEFORE_LOGIN_2)
        if (not session.authenticated and session.from_start and name not in allowed
                and name in R.CLIENT_CLASSES):
            out.append(self._locate(session, ts, "client", name, finding(
                "L1", f"{name} sent before login_pass succeeded")))
            answered = False
        if name == "starttls":
            # Before the server's first message its offer may be on its way
            # (sent at accept): the server's first message decides (_server).
            early = session.server_messages == 0 and not session.starttls_asked
            if not session.offered and session.from_start and not early:
                out.append(self._locate(session, ts, "client", name, finding(
                    "S5", "starttls, but the server made no offer")))
            if early:
                session.early_starttls = ts
            if not session.starttls_asked:
                session.starttls_status = message.get("status")
            session.starttls_asked = True
        if name == "login_capas" and session.capalist is not None and int_like(
                message.get("capaid")):
            if int(float(message["capaid"])) != session.capalist:
                out.append(self._locate(session, ts, "client", name, finding(
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
                out.append(self._locate(session, early, "client", "starttls", finding(
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
        for found in check_server(message, session.version):
            out.append(self._locate(session, ts, "server", name, found))
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
            if (replyid is not None and name != "directory"
                    and replies.request_key(replyid) not in session.commandids):
                out.append(self._locate(session, ts, "server", name, finding(
                    "R2", f"replyid {show(replyid)} answers no request of this session",
                    value=replyid)))

    def _starttls(self, session: _Session, message: dict, is_offer: bool, ts: object,
                  out: list) -> None:
        if is_offer:
            session.offered = True
            if session.server_messages != 1:
                out.append(self._locate(session, ts, "server", "starttls", finding(
                    "S1", "the STARTTLS offer after other server messages")))
        elif "starttls" not in message:
            out.append(self._locate(session, ts, "server", "starttls", finding(
                "S3", "the echo holds status, not starttls (the documentation's spelling)")))
        else:
            if message["starttls"] != session.starttls_status:
                out.append(self._locate(session, ts, "server", "starttls", finding(
                    "S3", f"the echo says {show(message['starttls'])}, the client sent "
                          f"{show(session.starttls_status)}")))
            if message["starttls"] is True:
                session.upgrade_pending = True

    def _unanswered(self, session: _Session, outcome: replies.Outcome, text: str) -> Located:
        request = outcome.request
        session.findings["R1"] += 1
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
            out.append(self._unanswered(session, outcome,
                                        f"no answer to this {request.name} before {when}"))
        close = session.close
        if (close and close.get("by") == "server" and session.version != "1.2"
                and session.last_error is not None and not session.timeout_flagged):
            out.append(self._locate(session, ts, "session", "", finding(
                "E2", f"the server closed the connection right after the error "
                      f"{show(session.last_error)}: a 2.x server does not close on an error; "
                      f"suspect the login timeout or a 1.2 server")))
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



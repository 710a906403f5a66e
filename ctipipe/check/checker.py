"""The checker: records of a tagged stream in, findings out (pure, no I/O).

`check_client` and `check_server` apply the rules of one message (rules.py)
for a protocol version; `Checker` follows every session of a stream (the
version, STARTTLS, the login, what is waiting for an answer) and adds the
rules that need a session's history. Each finding names its rule.
"""
from __future__ import annotations

import collections
import math
import re
import uuid
from typing import NamedTuple

from ctipipe.check import rules as R
from ctipipe.core import protocol

# Requests still waiting for an answer that one session keeps track of: a
# client that never gets answers must not make the checker grow without bound.
MAX_PENDING = 100_000

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*\Z")
_SESSIONID = re.compile(r"[A-Za-z0-9]{10}\Z")
_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_RANK = {version: index for index, version in enumerate(protocol.VERSIONS)}
_CLOSES = (R.CLOSES,)


class Finding(NamedTuple):
    rule: str
    text: str
    server: str  # what the server does about it (empty: nothing)
    value: object = None  # the value at fault, when one field is (tests excuse templates)


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


def _finding(rule: str, text: str, server: str | None = None, value: object = None) -> Finding:
    return Finding(rule, text, R.BY_ID[rule].server if server is None else server, value)


# --- one message -------------------------------------------------------------

def _int_like(value: object) -> bool:
    """Would Python 2's int() accept it (what the server calls)?"""
    if type(value) in (int, bool):
        return True
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is str and _INT_TEXT.match(value) is not None


def _is_uuid(value: object) -> bool:
    if type(value) is not str:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _from(version: str, first: str) -> bool:
    return _RANK[version] >= _RANK[first]


def _field(name: str, key: str, kind: str, value: object, version: str) -> Finding | None:
    """The finding for field `key` of kind `kind` (rules.py), if its value breaks it."""
    if kind == "any":
        return None
    if kind == "int":
        if not _int_like(value):
            return _finding("M2", f"{key} {_show(value)} is not a number int() reads", value=value)
    elif kind == "str-alnum":
        if type(value) is not str or not value.isalnum():
            return _finding("M2", f"{key} {_show(value)} must be a string of letters and "
                            f"digits", value=value)
    elif kind == "pairs":
        if type(value) is not list or any(type(pair) is not list or len(pair) != 2
                                          for pair in value):
            return _finding("M2", f"{key} must be a list of [xivo_uuid, id] pairs, each "
                            f"exactly 2 items", value=_template_of(value))
    elif kind == "meetme":
        if (type(value) is not list or len(value) != 2
                or not all(type(item) is str and item.isalnum() for item in value)):
            return _finding("M2", f"{key} must be [room_number, user_position], two strings "
                            f"of letters and digits", value=_template_of(value))
    elif kind == "bool":
        if type(value) is not bool and value not in (0, 1):
            return _finding("M5", f"{name} value {_show(value)} is not a JSON boolean: the "
                            f"server matches value == true/false and drops anything else",
                            value=value)
    elif kind == "fwd":
        if type(value) in (str, list):
            return _finding("M5", f"{name} value must be an object of enableX/destX keys: "
                            f"the server finds no enableX in it and does nothing", value=value)
        if type(value) is not dict:
            return _finding("M2", f"{name} value must be an object of enableX/destX keys",
                            value=value)
        for what in ("unc", "rna", "busy"):
            if f"enable{what}" in value and f"dest{what}" not in value:
                return _finding("M1", f"{name} enable{what} needs dest{what} beside it")
    elif kind == "chat-to":
        if _from(version, "2.1"):
            if type(value) is not list or len(value) != 2 or not all(map(_is_uuid, value)):
                return _finding("M2", f"protocol {version} expects to = [xivo_uuid, user_uuid], "
                                f"two UUID strings", value=_template_of(value))
        elif version == "2.0":
            if (type(value) is not list or len(value) != 2
                    or not (_int_like(value[1]) and int(float(value[1])) > 0)):
                return _finding("M2", "protocol 2.0 expects to = [xivo_uuid, user_id], a "
                                "positive user id", value=_template_of(value))
    return None


def _template_of(value: object) -> object:
    """The first documentation template ("<name>") inside a value, else the value."""
    if type(value) is list:
        for item in value:
            found = _template_of(item)
            if _is_template(found):
                return found
    return value


def _is_template(value: object) -> bool:
    return type(value) is str and value.startswith("<") and value.endswith(">")


def is_template(value: object) -> bool:
    """A documentation template value such as "<user_uuid>" (the corpus has them)."""
    return _is_template(value)


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else '"' + value + '"'
    return text if len(text) <= 40 else text[:37] + "..."


def _required(name: str, spec: dict, message: dict, version: str, out: list) -> None:
    hints = spec.get("hint", {})
    for key, kind in spec.get("required", {}).items():
        if key not in message:
            wrong = next((spelt for spelt, right in hints.items() if right == key
                          and spelt in message), None)
            if wrong:
                out.append(_finding("M1", f'{name} needs "{key}", not "{wrong}" (the '
                                    f"documentation's spelling)"))
            else:
                out.append(_finding("M1", f'{name} needs "{key}"'))
            continue
        found = _field(name, key, kind, message[key], version)
        if found:
            out.append(found)


def check_client(message: object, version: str) -> list[Finding]:
    """The findings of one client message on its own, for a protocol version."""
    if type(message) is not dict:
        return [_finding("F1", "a JSON value that is not an object")]
    name = message.get("class")
    if type(name) is not str:
        return [_finding("F1", "no class" if name is None else f"class {_show(name)} is not "
                         f"a string")]
    out: list[Finding] = []
    spec = R.CLIENT_CLASSES.get(name)
    if spec is None:
        removed = R.REMOVED_CLASSES.get(name)
        if removed and not _from(version, removed[0]):
            return out
        why = f" ({removed[1]})" if removed else ""
        return [_finding("M3", f"protocol {version} has no class {name}{why}", value=name)]
    if name == "starttls":
        if type(message.get("status")) is not bool:
            out.append(_finding("S2", f"status {_show(message.get('status'))} is not true or "
                                f"false: the server echoes it and does not upgrade"
                                if "status" in message else "no status: the server echoes "
                                "starttls null and does not upgrade"))
        return out
    if name == "login_id":
        _required(name, spec, message, version, out)
        for found in out:
            out[out.index(found)] = found._replace(rule="L2")
        _login_id_version(message, version, out)
        return out
    if name == "login_pass":
        _login_pass(message, version, out)
        return out
    if name == "login_capas":
        _login_capas(message, version, out)
        return out
    dispatch = spec.get("dispatch")
    if dispatch:
        which = message.get(dispatch)
        if dispatch not in message:
            if spec.get("dispatch_required"):
                return [_finding("M1", f'{name} needs "{dispatch}"')]
            return [_finding("M4", f'{name} without "{dispatch}" [inferred]')]
        variant = spec["variants"].get(which) if type(which) is str else None
        if variant is None:
            removed = R.REMOVED_COMMANDS.get(which) if name == "ipbxcommand" else None
            if removed and not _from(version, removed[0]):
                return out
            why = f" ({removed[1]})" if removed else ""
            return [_finding("M4", f"{name} {dispatch} {_show(which)} is unknown to protocol "
                             f"{version}{why}", value=which)]
        label = f"{name} {which}"
        _required(label, variant, message, version, out)
        if name == "getlist":
            _getlist(which, variant, message, out)
        elif name == "ipbxcommand" and which == "meetme" and "function" in message:
            if message["function"] not in ("MeetmeMute", "MeetmeUnmute"):
                out.append(_finding("M4", f"meetme function {_show(message['function'])} is "
                                    f"not MeetmeMute or MeetmeUnmute",
                                    value=message["function"]))
        return out
    _required(name, spec, message, version, out)
    return out


def _getlist(function: str, variant: dict, message: dict, out: list) -> None:
    listname = message.get("listname")
    if "listname" in message and listname not in R.LISTNAMES:
        if function == "updateconfig":
            out.append(_finding("M2", f"getlist updateconfig of unknown list {_show(listname)}: "
                                f"the server's lookup fails [inferred]", value=listname))
        else:
            out.append(_finding("M5", f"getlist {function} of unknown list {_show(listname)}: "
                                + ("no answer comes" if function == "listid"
                                   else "the answer is empty"), value=listname))
    if variant.get("tid") and "tid" not in message:
        out.append(_finding("M5", f"getlist {function} without tid: the answer is empty"))


def _login_id_version(message: dict, version: str, out: list) -> None:
    key = R.VERSION_KEY[version]
    if version == "2.3":
        if "wazoversion" in message:
            return
        if "xivoversion" in message:
            out.append(_finding("L2", "protocol 2.3 reads wazoversion; xivoversion is accepted "
                                "only since Wazo 17.17", "wazo-17.16 closes the connection on "
                                "this"))
            return
    elif key in message:
        return
    elif "wazoversion" in message:
        out.append(_finding("L2", f"protocol {version} reads xivoversion, not wazoversion",
                            R.REFUSES))
        return
    out.append(_finding("L2", f"no {key}: the server answers "
                        f"{key.replace('version', 'version_client')}:None;{version}", R.REFUSES))


def _login_pass(message: dict, version: str, out: list) -> None:
    if version == "1.2":
        if "hashedpassword" not in message:
            text = ('protocol 1.2 expects "hashedpassword" (SHA1 of "sessionid:password"), not '
                    '"password"' if "password" in message else 'login_pass needs "hashedpassword"')
            out.append(_finding("L3", text, "the server refuses it with missing:hashedpassword "
                                "and closes the connection"))
        elif type(message["hashedpassword"]) is not str or not _HEX40.match(
                message["hashedpassword"]):
            out.append(_finding("L3", "hashedpassword is not 40 lowercase hex digits (SHA1 of "
                                "\"sessionid:password\")", R.REFUSES,
                                value=message["hashedpassword"]))
        return
    if "password" not in message:
        text = (f'protocol {version} expects "password", not "hashedpassword"'
                if "hashedpassword" in message else 'login_pass needs "password"')
        out.append(_finding("L3", text))


def _login_capas(message: dict, version: str, out: list) -> None:
    if "capaid" not in message:
        out.append(_finding("L4", 'login_capas needs "capaid"'))
    elif not _int_like(message["capaid"]):
        out.append(_finding("L4", f"capaid {_show(message['capaid'])} is not a number int() "
                            f"reads", value=message["capaid"]))
    if "state" not in message:
        out.append(_finding("L4", 'login_capas needs "state"'))
    legacy = [key for key in ("lastconnwins", "loginkind") if key in message]
    if version == "1.2":
        missing = [key for key in ("lastconnwins", "loginkind") if key not in message]
        if missing:
            out.append(_finding("L4", f"protocol 1.2 requires {', '.join(missing)}",
                                f"the server refuses it with missing:{','.join(missing)} and "
                                f"closes the connection"))
    elif legacy:
        out.append(_finding("L4", f"{' and '.join(legacy)}: obsolete since protocol 2.0",
                            "the server ignores them"))


def check_server(message: object, version: str) -> list[Finding]:
    """The findings of one server message on its own, for a protocol version."""
    if type(message) is not dict:
        return [_finding("F1", "a JSON value that is not an object", NOTHING_)]
    out: list[Finding] = []
    timenow = message.get("timenow")
    if type(timenow) not in (int, float):
        out.append(_finding("F2", "no timenow" if timenow is None
                            else f"timenow {_show(timenow)} is not a number"))
    name = message.get("class")
    if (version != "1.2" and "replyid" in message
            and name not in protocol.REPLYID_CLASSES):
        out.append(_finding("R3", f"a {name} reply with replyid: the real server sends none, "
                            f"so a client waiting for it would wait forever"))
    error = message.get("error_string")
    if error is not None:
        out.append(explain_error(error, name, version))
    if name == "login_id" and error is None:
        sessionid = message.get("sessionid")
        if (type(sessionid) is not str or not _SESSIONID.match(sessionid)
                or len(set(sessionid)) != 10):
            out.append(_finding("L5", f"sessionid {_show(sessionid)} is not 10 distinct "
                                f"letters and digits", value=sessionid))
        key = R.VERSION_KEY[version]
        if message.get(key) != version:
            said = next((f"{k} {_show(message[k])}" for k in ("wazoversion", "xivoversion")
                         if k in message), "no version")
            out.append(_finding("L5", f"protocol {version} answers {key} \"{version}\", not "
                                f"{said}", value=message.get(key)))
    return out


NOTHING_ = R.NOTHING


def explain_error(error: object, name: object, version: str) -> Finding:
    """E1: what an error_string from the server means, in words."""
    text = str(error)
    head, _, rest = text.partition(":")
    known = R.ERRORS.get(text) or R.ERRORS.get(head)
    if known is None:
        return _finding("E1", f"{name} error {_show(error)}: not an error the real server "
                        f"sends", value=error)
    versions, meaning = known
    args = rest.split(";") if rest else []
    meaning = meaning.format(*(args + ["?", "?"]))
    note = "" if version in versions else f" (protocol {', '.join(versions)} only)"
    return _finding("E1", f"{name} error {_show(error)}: {meaning}{note}", value=error)


# --- sessions ----------------------------------------------------------------

_LOGIN_STEPS = ("login_id", "login_pass", "login_capas")
_FAX_TRACKING = ("response", "autocall_channel", "originatereason")


def _key(value: object) -> object:
    # commandid 5 and replyid "5" are the same request (as ctistat pairs them)
    kind = type(value)
    if kind is str:
        return value
    return str(value) if kind is not dict and kind is not list else repr(value)


def _signature(message: dict) -> tuple:
    """What an answer to this request looks like (class, and for getlist what it is about)."""
    name = message.get("class")
    if name == "getlist":
        function = message.get("function")
        if function == "listid":
            return ("getlist", function, _key(message.get("listname")))
        return ("getlist", function, _key(message.get("listname")), _key(message.get("tid")))
    return (protocol.REPLY_CLASS.get(name, name),)


def _answer_signature(message: dict) -> tuple | None:
    name = message.get("class")
    if name == "getlist":
        return _signature(message)
    if name is None:
        return ("history",)  # a user with no line gets a history answer without class
    if name == "starttls" and "starttls" not in message:
        return None  # the offer answers nothing
    return (name,)


class _Pending(NamedTuple):
    ts: object
    offset: float | None
    name: str
    signature: tuple


class _Session:
    def __init__(self, conn: object, forced: str | None) -> None:
        self.conn = conn
        self.forced = forced
        self.version = forced or R.SERVER_VERSION
        self.how = "forced" if forced else "assumed"  # how the version was learnt
        self.start: float | None = None  # when the connection opened
        self.from_start = False  # the session was seen from its beginning
        self.client_said: object = None  # the version the client's login_id gave
        self.server_messages = 0
        self.offered = False
        self.starttls_status: object = None
        self.starttls_asked = False
        self.upgrade_pending = False  # echo starttls:true seen, tls event not yet
        self.authenticated = False
        self.logged_in = False
        self.steps: set[str] = set()
        self.capalist: object = None
        self.timeout_flagged = False
        self.pending: dict[int, _Pending] = {}
        self.by_commandid: dict[object, int] = {}
        self.commandids: collections.OrderedDict = collections.OrderedDict()  # every one sent
        self.early_starttls: tuple | None = None  # (ts, pending number) before any server word
        self.by_signature: dict[tuple, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=MAX_PENDING))
        self.counter = 0
        self.last_error: object = None  # the last server message's error_string
        self.closing: Located | None = None  # the last finding the server closes on
        self.findings = collections.Counter()
        self.close: dict | None = None

    def learn(self, version: str, how: str) -> None:
        if not self.forced and self.how != "client":
            self.version, self.how = version, how


class Checker:
    """Follows the sessions of a tagged stream and says what breaks a rule.

    `protocol`: "auto" (learn each session's version from its login) or a
    version to check every session against.
    """

    def __init__(self, protocol_version: str = "auto") -> None:
        self.forced = None if protocol_version == "auto" else protocol_version
        self.sessions: dict[object, _Session] = {}
        self.ended: list[_Session] = []  # sessions whose close was seen, for the summary

    def session(self, conn: object) -> _Session:
        found = self.sessions.get(conn) if type(conn) is int else None
        if found is not None:
            return found
        key = _key(conn)
        found = self.sessions.get(key)
        if found is None:
            found = self.sessions[key] = _Session(conn, self.forced)
            if type(conn) is int:
                self.sessions[conn] = found  # the common case, looked up without _key
        return found

    def record(self, record: dict) -> list[Located]:
        """The findings this record brings (those of its session it completes)."""
        side = record.get("from")
        if side in ("client", "server"):
            session = self.session(record.get("conn"))
            return self._data(session, record, side)
        event = record.get("event")
        if event is None or "conn" not in record:
            if event == "start":  # a new producer: its session numbers start again
                out = self.finish()
                return out
            return []
        session = self.session(record.get("conn"))
        ts = record.get("ts")
        if event == "open":
            session.start = ts if isinstance(ts, (int, float)) else None
            session.from_start = True
            return []
        if event == "tls":
            session.upgrade_pending = False
            return []
        if event == "close":
            session.close = record
            out = [] if session.logged_in else self._timeout(session, ts)
            out += self._end(session, ts, "closed")
            self.sessions.pop(_key(session.conn), None)
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

    def _locate(self, session: _Session, ts: object, side: str, name: str,
                found: Finding) -> Located:
        offset = (ts - session.start if isinstance(ts, (int, float)) and session.start is not None
                  else None)
        located = Located(session.conn, ts, offset, side, "" if name == "None" else name,
                          found.rule, found.text,
                          found.server, session.version, found.value)
        session.findings[found.rule] += 1
        if found.server == R.CLOSES and side == "client":
            session.closing = located
        return located

    def _timeout(self, session: _Session, ts: object) -> list[Located]:
        if (session.timeout_flagged or not session.from_start
                or session.start is None or not isinstance(ts, (int, float))
                or ts - session.start <= R.LOGIN_TIMEOUT):
            return []
        session.timeout_flagged = True
        return [self._locate(session, ts, "session", "", _finding(
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
            out.append(self._locate(session, ts, side, "", _finding(
                "F1", what, None if side == "client" else R.NOTHING)))
            return out
        message = record["msg"]
        if side == "client":
            self._client(session, message, ts, out)
        else:
            self._server(session, message, ts, out)
        return out

    def _client(self, session: _Session, message: object, ts: object, out: list) -> None:
        if session.server_messages == 0 and session.start is not None:
            session.from_start = True  # the client spoke first: we saw the beginning
        name = message.get("class") if type(message) is dict else None
        if session.upgrade_pending:
            out.append(self._locate(session, ts, "client", str(name), _finding(
                "S4", "a message in clear text after the server accepted STARTTLS: a TLS "
                      "handshake must come first")))
            session.upgrade_pending = False
        if name == "login_id" and not session.forced and type(message) is dict:
            said = message.get("wazoversion", message.get("xivoversion"))
            session.client_said = said
            if said in _RANK:
                session.version, session.how = said, "client"
            elif "wazoversion" in message:
                session.learn("2.3", "key")
        expected = True
        for found in check_client(message, session.version):
            out.append(self._locate(session, ts, "client", str(name), found))
            if (found.rule in ("M3", "M4") or found.server == R.CLOSES
                    or (found.rule == "M5" and "no answer" in found.text)):
                expected = False
        if type(message) is not dict or type(name) is not str:
            return
        if name == "login_id":
            said = session.client_said
            if said not in _RANK and ("wazoversion" in message or "xivoversion" in message):
                out.append(self._locate(session, ts, "client", name, _finding(
                    "V1", f"{_show(said)} is not a CTI protocol version "
                          f"({', '.join(protocol.VERSIONS)}): a real server answers "
                          f"{R.VERSION_KEY[session.version].replace('version', 'version_client')}"
                          f":{said};{session.version}", value=said)))
            elif session.forced and said in _RANK and said != session.forced:
                out.append(self._locate(session, ts, "client", name, _finding(
                    "V1", f"the client speaks protocol {said}, the server {session.forced}")))
        if name in _LOGIN_STEPS:
            if name in session.steps:
                out.append(self._locate(session, ts, "client", name, _finding(
                    "L7", f"a second {name} on this connection: only the first is handled; "
                          f"reconnect to retry")))
                expected = False
            session.steps.add(name)
        allowed = (R.BEFORE_LOGIN.get(session.version, R.BEFORE_LOGIN_2))
        if (not session.authenticated and session.from_start and name not in allowed
                and name in R.CLIENT_CLASSES):
            out.append(self._locate(session, ts, "client", name, _finding(
                "L1", f"{name} sent before login_pass succeeded")))
            expected = False
        if name == "starttls":
            # Before the server's first message its offer may be on its way
            # (sent at accept): decided by that first message (_server).
            early = session.server_messages == 0 and not session.starttls_asked
            if not session.offered and session.from_start and not early:
                out.append(self._locate(session, ts, "client", name, _finding(
                    "S5", "starttls, but the server made no offer")))
            if session.starttls_asked or not (session.offered or early):
                expected = False
            else:
                session.starttls_status = message.get("status")
            session.starttls_asked = True
        if name == "login_capas" and session.capalist is not None and _int_like(
                message.get("capaid")):
            if int(float(message["capaid"])) != session.capalist:
                out.append(self._locate(session, ts, "client", name, _finding(
                    "L4", f"capaid {_show(message['capaid'])} is not the {session.capalist} "
                          f"the login_pass reply gave", R.REFUSES)))
        if "commandid" in message:
            session.commandids[_key(message["commandid"])] = None
            if len(session.commandids) > MAX_PENDING:
                session.commandids.popitem(last=False)
        if expected and name not in protocol.NO_REPLY_CLASSES:
            self._expect(session, message, ts)
            if name == "starttls" and session.server_messages == 0:
                session.early_starttls = (ts, session.counter)

    def _expect(self, session: _Session, message: dict, ts: object) -> None:
        session.counter += 1
        number = session.counter
        offset = (ts - session.start if isinstance(ts, (int, float)) and session.start is not None
                  else None)
        signature = _signature(message)
        session.pending[number] = _Pending(ts, offset, message["class"], signature)
        if "commandid" in message:
            session.by_commandid[_key(message["commandid"])] = number
        session.by_signature[signature].append(number)
        if len(session.pending) > MAX_PENDING:
            del session.pending[next(iter(session.pending))]

    def _answered(self, session: _Session, message: dict, out: list, ts: object) -> None:
        if "replyid" not in message and not session.pending:
            return  # a broadcast, and nothing waits: the common case
        name = message.get("class")
        if "replyid" in message and not (name == "ipbxcommand" and any(
                key in message for key in _FAX_TRACKING)):
            replyid = message["replyid"]
            number = session.by_commandid.pop(_key(replyid), None)
            if number is not None and session.pending.pop(number, None) is not None:
                if not session.pending:  # what the indexes still hold is all answered
                    session.by_signature.clear()
                    session.by_commandid.clear()
                return
            if (replyid is not None and name != "directory"
                    and _key(replyid) not in session.commandids):
                # (directory answers go to every connection of the user: not flagged)
                out.append(self._locate(session, ts, "server", str(name), _finding(
                    "R2", f"replyid {_show(replyid)} answers no request of this session",
                    value=replyid)))
                return
        signature = _answer_signature(message)
        if signature is None:
            return
        waiting = session.by_signature.get(signature)
        while waiting:
            number = waiting.popleft()
            if session.pending.pop(number, None) is not None:
                if not session.pending:
                    session.by_signature.clear()
                    session.by_commandid.clear()
                return

    def _server(self, session: _Session, message: object, ts: object, out: list) -> None:
        session.server_messages += 1
        name = message.get("class") if type(message) is dict else None
        if session.early_starttls is not None:
            early_ts, number = session.early_starttls
            session.early_starttls = None
            if not (name == "starttls" and "starttls" not in message and "status" not in message):
                session.pending.pop(number, None)
                out.append(self._locate(session, early_ts, "client", "starttls", _finding(
                    "S5", "starttls, but the server made no offer")))
        if type(message) is dict and name == "login_id" and not session.forced:
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
            out.append(self._locate(session, ts, "server", str(name), found))
        if type(message) is not dict:
            return
        session.last_error = message.get("error_string")
        if name == "starttls":
            if "starttls" not in message and "status" not in message:
                session.offered = True
                if session.server_messages != 1:
                    out.append(self._locate(session, ts, "server", name, _finding(
                        "S1", "the STARTTLS offer after other server messages")))
            elif "starttls" not in message:
                out.append(self._locate(session, ts, "server", name, _finding(
                    "S3", "the echo holds status, not starttls (the documentation's "
                          "spelling)")))
            else:
                if message["starttls"] != session.starttls_status:
                    out.append(self._locate(session, ts, "server", name, _finding(
                        "S3", f"the echo says {_show(message['starttls'])}, the client sent "
                              f"{_show(session.starttls_status)}")))
                if message["starttls"] is True:
                    session.upgrade_pending = True
        elif name == "login_pass" and "error_string" not in message:
            session.authenticated = True
            capalist = message.get("capalist")
            if type(capalist) is list and capalist and _int_like(capalist[0]):
                session.capalist = int(float(capalist[0]))
        elif name == "login_capas" and "error_string" not in message:
            session.logged_in = True
        self._answered(session, message, out, ts)

    def _end(self, session: _Session, ts: object, how: str) -> list[Located]:
        out = []
        when = "the session ended" if how == "closed" else "the input ended"
        closing = session.closing
        for pending in session.pending.values():
            if session.timeout_flagged and (pending.offset or 0.0) > R.LOGIN_TIMEOUT:
                continue  # sent after the login timeout: the server had cut the connection
            if (closing is not None and isinstance(pending.ts, (int, float))
                    and isinstance(closing.ts, (int, float)) and pending.ts >= closing.ts):
                continue  # sent after a message the server closes the connection on
            out.append(Located(session.conn, pending.ts, pending.offset, "client", pending.name,
                               "R1", f"no answer to this {pending.name} before {when}",
                               R.NOTHING, session.version))
            session.findings["R1"] += 1
        session.pending.clear()
        close = session.close
        if (close and close.get("by") == "server" and session.version != "1.2"
                and session.last_error is not None and not session.timeout_flagged):
            out.append(self._locate(session, ts, "session", "", _finding(
                "E2", f"the server closed the connection right after the error "
                      f"{_show(session.last_error)}: a 2.x server does not close on an error; "
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

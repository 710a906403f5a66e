"""A recorded session as two scripts, one per side: what each peer sent, in
order, how long after the record before it, and which client message each
server reply answered. Pure: no I/O beyond reading the recording's bytes.

Pairing follows the protocol: a server message answers the pending client
request whose `commandid` equals its `replyid`; a server message without
`replyid` whose class is one the protocol answers by class (the 2.x login
replies, the STARTTLS answer) answers the oldest pending request of that class.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

import orjson

# Replies the protocol sends without a replyid: paired with the pending
# request of the same class (login in 2.x, and the STARTTLS answer).
CLASS_PAIRED = frozenset(("login_id", "login_pass", "login_capas", "starttls"))

_PRODUCER_KEYS = frozenset(("ts", "conn", "from", "size", "msg"))


class ScriptError(Exception):
    """The recording cannot be replayed; the text says why, in one line."""


@dataclass(slots=True)
class Line:
    """One recorded line of one side."""

    side: str  # "client" or "server"
    index: int  # its position among its side's lines
    wire: bytes  # the bytes to send, newline included
    msg: dict | None  # the decoded message (None for a line that was not a JSON object)
    delay: float  # seconds after the session's previous record (either side), or its open
    after: int  # how many lines of the *other* side were recorded before it
    answers: int | None = None  # server: the client line it answered
    replies: list[int] = field(default_factory=list)  # client: the server lines that answered it

    @property
    def cls(self) -> str | None:
        if self.msg is None:
            return None
        value = self.msg.get("class")
        return value if isinstance(value, str) else None


@dataclass(slots=True)
class Script:
    conn: int
    client: list[Line]
    server: list[Line]
    starttls: bool  # the session switched to TLS in band and was intercepted
    closed_by: str | None  # who ended the recorded session

    def without_starttls(self) -> "Script":
        """The script with the STARTTLS offer, request and answer left out (--no-starttls)."""
        keep_client = [line for line in self.client if line.cls != "starttls"]
        keep_server = [line for line in self.server if line.cls != "starttls"]
        return _renumber(self.conn, keep_client, keep_server, False, self.closed_by)


def load(data: bytes, conn: int | None = None, name: str = "the recording") -> Script:
    """The script of session `conn` (default: the first) of a saved tagged stream."""
    records = _records(data, name)
    sessions: list[int] = []
    for record, _ in records:
        number = record.get("conn")
        if type(number) is int and ("from" in record or record.get("event") == "open"):
            if number not in sessions:
                sessions.append(number)
    if not sessions:
        raise ScriptError(f"{name} holds no session (no data records): is it a tagged stream?")
    if conn is None:
        conn = sessions[0]
    elif conn not in sessions:
        shown = ", ".join(map(str, sessions[:10])) + (", ..." if len(sessions) > 10 else "")
        raise ScriptError(f"{name} has no session {conn} (its sessions: {shown})")
    return _script(conn, [(r, line) for r, line in records if r.get("conn") == conn], name)


def _records(data: bytes, name: str) -> list[tuple[dict, bytes]]:
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines) and not data.endswith(b"\n"):
                raise ScriptError(f"{name}: the last line (line {number}) is cut short: "
                                  f"was the recording interrupted?") from None
            raise ScriptError(f"{name}: line {number} is not JSON: not a tagged stream?") from None
        if type(record) is not dict:
            raise ScriptError(f"{name}: line {number} is not a JSON object: not a tagged stream?")
        out.append((record, line))
    return out


def _script(conn: int, records: list, name: str) -> Script:
    client: list[Line] = []
    server: list[Line] = []
    starttls = False
    closed_by = None
    previous_ts: float | None = None
    pending: list[tuple[int, object, str | None]] = []  # client requests awaiting a reply
    piece: list[bytes] = []  # the start of an oversize line, in pieces
    for record, text in records:
        ts = record.get("ts") if isinstance(record.get("ts"), (int, float)) else previous_ts
        event = record.get("event")
        if event is not None:
            if event == "open" and previous_ts is None:
                previous_ts = ts
            elif event == "tls" and record.get("how") == "starttls" and record.get("intercepted"):
                starttls = True
            elif event == "close":
                closed_by = record.get("by")
            continue
        side = record.get("from")
        if side not in ("client", "server"):
            continue
        wire, msg = _content(record, text)
        if wire is None:
            continue
        if record.get("oversize") and not wire.endswith(b"\n") and not record.get("partial"):
            piece.append(wire)  # a piece of a long line: joined with the rest
            continue
        if piece:
            wire = b"".join(piece) + wire
            piece.clear()
        delay = max(0.0, ts - previous_ts) if ts is not None and previous_ts is not None else 0.0
        previous_ts = ts if ts is not None else previous_ts
        if side == "client":
            line = Line("client", len(client), wire, msg, delay, after=len(server))
            client.append(line)
            if msg is not None and line.cls is not None:
                pending.append((line.index, msg.get("commandid"), line.cls))
        else:
            line = Line("server", len(server), wire, msg, delay, after=len(client))
            line.answers = _answered(msg, pending)
            if line.answers is not None:
                client[line.answers].replies.append(line.index)
            server.append(line)
    if not server:
        raise ScriptError(f"{name}: session {conn} has no server messages: nothing to replay")
    return Script(conn, client, server, starttls, closed_by)


def _answered(msg: dict | None, pending: list) -> int | None:
    """The client request this server message answers (removed from `pending`), if any."""
    if msg is None:
        return None
    replyid = msg.get("replyid")
    if replyid is not None:
        for position, (index, commandid, _) in enumerate(pending):
            if commandid is not None and same_id(commandid, replyid):
                del pending[position]
                return index
        return None
    cls = msg.get("class")
    if cls in CLASS_PAIRED:
        for position, (index, _, request_cls) in enumerate(pending):
            if request_cls == cls:
                del pending[position]
                return index
    return None


def same_id(a: object, b: object) -> bool:
    """Ids come as numbers or strings for the same field: 5 and "5" are the same id."""
    if a == b:
        return True
    return str(a) == str(b) and not isinstance(a, bool) and not isinstance(b, bool)


_UNREADABLE = object()  # equal to no message


def _decoded(text: bytes) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _UNREADABLE


def _content(record: dict, text: bytes) -> tuple[bytes | None, dict | None]:
    """The bytes a data record stands for, newline included, and its message if an object."""
    if "msg" in record:
        msg = record["msg"]
        wire = None
        # The producer embeds the wire text as it was: reuse it rather than re-encode.
        if next(reversed(record)) == "msg" and _PRODUCER_KEYS.issuperset(record):
            start = text.find(b',"msg":')
            if start > 0 and text.find(b"{", 1, start) < 0:  # (else inside another key's object)
                wire = text[start + 7:text.rstrip().rfind(b"}")].strip()
                if _decoded(wire) != msg:  # a key written again after "msg" (a crafted line)
                    wire = None
        if wire is None:
            wire = orjson.dumps(msg)
        return wire + b"\n", msg if isinstance(msg, dict) else None
    if "raw" in record:
        content = str(record["raw"]).encode("utf-8", "surrogatepass")
    elif "raw_b64" in record:
        try:
            content = base64.b64decode(record["raw_b64"], validate=True)
        except (ValueError, TypeError):
            return None, None
    else:
        return None, None
    size = record.get("size")
    # `size` counts the newline when the line had one: partial lines, raw
    # chunks and inner pieces of a long line have none.
    if type(size) is int and size > len(content) and not record.get("chunk"):
        content += b"\n"
    return content, None


def _renumber(conn: int, client: list[Line], server: list[Line], starttls: bool,
              closed_by: str | None) -> Script:
    """Rebuild positions and pairings after lines were left out."""
    client_map = {line.index: i for i, line in enumerate(client)}
    server_map = {line.index: i for i, line in enumerate(server)}
    new_client = [Line("client", i, l.wire, l.msg, l.delay, 0,
                       replies=[server_map[r] for r in l.replies if r in server_map])
                  for i, l in enumerate(client)]
    new_server = [Line("server", i, l.wire, l.msg, l.delay, 0,
                       answers=client_map.get(l.answers) if l.answers is not None else None)
                  for i, l in enumerate(server)]
    # `after` counted the other side's lines recorded before: count only those kept.
    _recount(client, new_client, server)
    _recount(server, new_server, client)
    return Script(conn, new_client, new_server, starttls, closed_by)


def _recount(old: list[Line], new: list[Line], other: list[Line]) -> None:
    """Set each new line's `after` to the number of kept `other` lines whose
    old index is below the old line's `after`. Both sides are in recorded
    order, so `after` never decreases: one pass over each (linear; counting
    for each line anew made --no-starttls quadratic)."""
    kept = 0
    for line, renumbered in zip(old, new):
        while kept < len(other) and other[kept].index < line.after:
            kept += 1
        renumbered.after = kept


def hashed_password(sessionid: str, password: str) -> str:
    """Protocol 1.x login: hex SHA-1 of sessionid + ":" + password."""
    return hashlib.sha1(f"{sessionid}:{password}".encode()).hexdigest()

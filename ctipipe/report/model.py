"""What the report page shows, gathered from a tagged stream: one row per
message or event, the request/reply pairs (stages/replies.py, as ctistat,
with whether the protocol answers the request at all), the sessions and their
ends. Pure: records in, one JSON document out.

The rows are kept as columns of small numbers (a label table, a class table,
times relative to the first record), and each row's body as JSON text, so
that a page of 100,000 messages stays near the size of its stream.
"""
from __future__ import annotations

import orjson

from ctipipe.core import stream
from ctipipe.stages import replies
from ctipipe.stages import strip

# Row kinds, as the page's script knows them.
CLIENT, SERVER, EVENT = 0, 1, 2

# Events that become marked rows of the ladder (the others only feed the overview).
ROW_EVENTS = frozenset(("open", "tls", "gap", "close", "error", "check"))


def _rule_order(rule: str) -> tuple:
    """cticheck's rule ids (L3, R12) in their natural order: letter, then number
    (the report reads check events as data; it does not import the checker)."""
    letters = rule.rstrip("0123456789")
    digits = rule[len(letters):]
    return (letters, int(digits) if digits else -1, rule)

# Columns of request->reply links beside the ladder: more overlapping pairs
# than this share the last one (a crowded ladder stays readable).
LINK_COLUMNS = 6

_NONE = object()  # "no such key", where None is a value


class Skipped(Exception):
    """A record whose known keys have the wrong type (counted, not shown)."""


class Report:
    """Gathers records (`add`) and gives the page's data (`document`)."""

    def __init__(self, redact: bool = True, only_session: int | None = None,
                 title: str | None = None) -> None:
        # ctistrip --redact itself: each data record is shown as the line it would write
        self.strip = strip.Strip([], set(strip.SECRET_FIELDS), prog="ctireport") if redact else None
        self.only_session = only_session
        self.title = title
        self.t0: float | None = None
        self.labels: dict[str, int] = {}
        self.classes: dict[str, int] = {}
        # the row columns
        self.ts: list[float] = []
        self.sess: list[int] = []
        self.kind: list[int] = []
        self.label: list[int] = []
        self.cls: list[int] = []
        self.size: list[int] = []
        self.bodies: list[bytes] = []
        # the pairs
        self.pair_request: list[int] = []
        self.pair_reply: list[int] = []
        self.pair_ms: list[float | None] = []
        self.pair_expected: list[bool] = []  # False: no reply by design (logout), as ctistat says
        self.sessions: list[dict] = []
        self.by_conn: dict[object, int] = {}  # conn key -> index in sessions, while open
        self.pairings: dict[int, replies.Pairing] = {}
        self.producers: list[str] = []
        self.not_relayed: list[dict] = []
        self.skipped = 0
        self.last_ts: float | None = None
        self.findings: dict[str, int] = {}  # cticheck's check events, by rule
        self.last_of_conn: dict[int, int] = {}  # conn -> its latest session, for late findings
        self.known_sessions = 0  # how many of self.sessions last_of_conn has seen

    # --- reading ---------------------------------------------------------------

    def add(self, record: dict, line: bytes) -> None:
        """One record of the stream; a record of a wrong shape raises Skipped."""
        ts = record.get("ts")
        if type(ts) not in (int, float) or ts != ts or abs(ts) > 1e11:
            raise Skipped("ts")
        side = record.get("from")
        event = record.get("event")
        if side is not None:
            if side not in ("client", "server"):
                raise Skipped("from")
            self._data(record, line, ts, side)
        elif type(event) is str:
            self._event(record, ts, event)
        elif event is not None:
            raise Skipped("event")

    def _session(self, record: dict, ts: float, create: bool = True) -> int | None:
        conn = record.get("conn")
        if type(conn) is not int or isinstance(conn, bool):
            if conn is None and not create:
                return None
            raise Skipped("conn")
        if self.only_session is not None and conn != self.only_session:
            return None
        index = self.by_conn.get(conn)
        if index is None and create:
            index = len(self.sessions)
            self.by_conn[conn] = index
            self.sessions.append({"conn": conn, "client": None, "server": None,
                                  "start": self._rel(ts), "end": None, "by": None, "error": None,
                                  "lost": 0, "tls": None, "bytes": None, "messages": [0, 0],
                                  "sent": [0, 0], "first": len(self.ts), "rows": 0,
                                  "last": self._rel(ts)})
            self.pairings[index] = replies.Pairing()
        return index

    def _rel(self, ts: float) -> float:
        if self.t0 is None:
            self.t0 = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        return round(ts - self.t0, 6)

    def _row(self, index: int, ts: float, kind: int, label: str, name: str, size: int,
             body: bytes) -> int:
        row = len(self.ts)
        t = self._rel(ts)
        self.ts.append(t)
        self.sess.append(index)
        self.kind.append(kind)
        labels, classes = self.labels, self.classes
        number = labels.get(label)
        if number is None:
            number = labels[label] = len(labels)
        self.label.append(number)
        number = classes.get(name)
        if number is None:
            number = classes[name] = len(classes)
        self.cls.append(number)
        self.size.append(size)
        self.bodies.append(body)
        session = self.sessions[index]
        session["rows"] += 1
        session["last"] = t
        return row

    def _data(self, record: dict, line: bytes, ts: float, side: str) -> None:
        size = record.get("size", 0)
        if type(size) is not int or size < 0:
            raise Skipped("size")
        if "msg" not in record:  # a line's text, which ctistrip --redact masks only in a string
            for key in ("raw", "raw_b64"):
                if key in record and type(record[key]) is not str:
                    raise Skipped(key)
        index = self._session(record, ts)
        if index is None:
            return
        if self.strip is not None:
            record, line = self._redacted(record, line)
        session = self.sessions[index]
        side_no = CLIENT if side == "client" else SERVER
        session["messages"][side_no] += 1
        session["sent"][side_no] += size
        message = record.get("msg", _NONE)
        if message is _NONE:
            name = label = "(raw chunk)" if record.get("chunk") else "(not JSON)"
            self._row(index, ts, side_no, label, name, size, self._raw_body(record))
            return
        if type(message) is not dict:
            self._row(index, ts, side_no, "(not an object)", "(not an object)", size,
                      self._message_text(record, line, message))
            return
        name = message.get("class")
        if type(name) is not str:
            name = "(no class)"
        label = name
        function, listname = message.get("function"), message.get("listname")
        if function or listname:
            label = _label(name, message)
        row = self._row(index, ts, side_no, label, name, size,
                        self._message_text(record, line, message))
        pairing = self.pairings[index]
        if side_no == CLIENT:
            if "commandid" in message:
                for outcome in pairing.request(message, ts, row):
                    self._pair(outcome)
        else:
            outcome = pairing.reply(message, ts, row)
            if outcome is not None:
                self._pair(outcome)

    def _pair(self, outcome: replies.Outcome) -> None:
        self.pair_request.append(outcome.request.ref)
        self.pair_reply.append(-1 if outcome.reply_ref is None else outcome.reply_ref)
        self.pair_ms.append(outcome.latency_ms)
        self.pair_expected.append(outcome.expected)

    def _redacted(self, record: dict, line: bytes) -> tuple[dict, bytes]:
        """The record and line as `ctistrip --redact` writes them: every
        credential masked, duplicate keys and escaped names included."""
        masked = self.strip.handle(record, line)
        if masked is line:
            return record, line
        try:
            return orjson.loads(masked), masked
        except orjson.JSONDecodeError:  # deeper than orjson reads: not expected (it read the line)
            return stream.exact_loads(masked), masked

    def _message_text(self, record: dict, line: bytes, message: object) -> bytes:
        """The message's JSON text: the record's own bytes (as on the wire,
        or as masked), when they are the message's alone; encoded anew
        otherwise."""
        if len(record) == 5 and next(reversed(record)) == "msg":
            start = line.find(b',"msg":')
            end = line.rstrip().rfind(b"}")
            if 0 < start < end:
                text = line[start + 7:end].strip()
                # one value, unless the line repeats a key after "msg" (a
                # duplicate, perhaps escaped, that the record does not show)
                if _is_one_value(text):
                    return text
        return _dumps(message)

    def _raw_body(self, record: dict) -> bytes:
        body = {key: record[key] for key in ("raw", "raw_b64", "partial", "oversize", "chunk")
                if key in record}
        return _dumps(body)

    def _event(self, record: dict, ts: float, event: str) -> None:
        if event == "start":
            producer = record.get("producer")
            if type(producer) is str and producer not in self.producers:
                self.producers.append(producer)
            self._end_all()  # a new stream: its session numbers start again
            return
        if event not in ROW_EVENTS:
            return
        if event == "check":
            self._check(record, ts)
            return
        if event == "error" and record.get("conn") not in self.by_conn:
            if self.only_session is None or record.get("conn") == self.only_session:
                self._rel(ts)
                self.not_relayed.append({"ts": round(ts - self.t0, 6), "conn": record.get("conn"),
                                         "error": record.get("error")})
            return
        index = self._session(record, ts)
        if index is None:
            return
        session = self.sessions[index]
        body = {key: value for key, value in record.items() if key not in ("ts", "conn")}
        if event == "open":
            session["client"], session["server"] = record.get("client"), record.get("server")
        elif event == "tls":
            session["tls"] = body
        elif event == "gap":
            lost = record.get("lost")
            session["lost"] += lost if type(lost) is int else 0
        elif event == "error":
            session["error"] = record.get("error")
        self._row(index, ts, EVENT, _event_label(event, record), event, 0, _dumps(body))
        if event == "close":
            session["end"] = self._rel(ts)
            session["by"] = record.get("by") if type(record.get("by")) is str else "?"
            if record.get("error") is not None:
                session["error"] = record.get("error")
            if type(record.get("bytes")) is dict:
                session["bytes"] = record["bytes"]
            self._end(index)
            del self.by_conn[record["conn"]]

    def _check(self, record: dict, ts: float) -> None:
        """A finding of cticheck --annotate: a marked row right after the record it
        follows (in its session, even one that has just closed), counted by rule."""
        conn = record.get("conn")
        if type(conn) is not int or isinstance(conn, bool):
            raise Skipped("conn")
        if self.only_session is not None and conn != self.only_session:
            return
        rule = record.get("rule")
        rule = rule if type(rule) is str and rule else "?"
        self.findings[rule] = self.findings.get(rule, 0) + 1
        index = self.by_conn.get(conn)
        if index is None:  # a finding after its session's close: the last session of that number
            index = self._last_session(conn)
            if index is None:  # no record of that session: counted, not shown
                return
        last = self.sessions[index]["last"]
        if self._rel(ts) < last:  # after a session's last record (an end-of-input finding has ts 0)
            ts = self.t0 + last
        body = {key: value for key, value in record.items() if key not in ("ts", "conn")}
        self._row(index, ts, EVENT, _check_label(rule, record), "check", 0, _dumps(body))

    def _last_session(self, conn: int) -> int | None:
        for index in range(self.known_sessions, len(self.sessions)):  # opened since the last call
            self.last_of_conn[self.sessions[index]["conn"]] = index
        self.known_sessions = len(self.sessions)
        return self.last_of_conn.get(conn)

    def _end(self, index: int) -> None:
        for outcome in self.pairings.pop(index).end():
            self._pair(outcome)

    def _end_all(self) -> None:
        for index in list(self.by_conn.values()):
            self._end(index)
        self.by_conn.clear()

    # --- the page's data -----------------------------------------------------------

    def document(self, redacted: bool, generator: str) -> bytes:
        """The data the page's script reads, as JSON (not yet escaped for a page)."""
        self._end_all()
        for session in self.sessions:
            if session["end"] is None:  # still open when the input ended
                session["end"] = session["last"]
        order = sorted(range(len(self.pair_request)), key=self.pair_request.__getitem__)
        columns = _link_columns([self.pair_request[i] for i in order],
                                [self.pair_reply[i] for i in order])
        head = {
            "title": self.title,
            "generator": generator,
            "redacted": redacted,
            "producers": self.producers,
            "t0": self.t0,
            "span": round((self.last_ts - self.t0), 6) if self.t0 is not None else 0,
            "skipped": self.skipped,
            "labels": list(self.labels),
            "classes": list(self.classes),
            "sessions": self.sessions,
            "not_relayed": self.not_relayed,
            "findings": sorted(self.findings.items(),
                               key=lambda item: _rule_order(str(item[0]))),
            "rows": {"t": self.ts, "s": self.sess, "k": self.kind, "l": self.label,
                     "c": self.cls, "z": self.size},
            "pairs": {"q": [self.pair_request[i] for i in order],
                      "a": [self.pair_reply[i] for i in order],
                      "ms": [self.pair_ms[i] for i in order],
                      "e": [self.pair_expected[i] for i in order],
                      "col": columns},
        }
        text = orjson.dumps(head)
        return text[:-1] + b',"bodies":[' + b",".join(self.bodies) + b"]}"


def _label(name: str, message: dict) -> str:
    """A message's label on the ladder: its class, with function and listname."""
    parts = [name]
    for key in ("function", "listname"):
        value = message.get(key)
        if type(value) is str and value:
            parts.append(value)
    return " · ".join(parts)


def _event_label(event: str, record: dict) -> str:
    if event == "open":
        return f"open: {record.get('client')} > {record.get('server')}"
    if event == "tls":
        how = record.get("how")
        if record.get("intercepted"):
            legs = record.get("client") if type(record.get("client")) is dict else {}
            return f"tls {how}: intercepted, {legs.get('version')} {legs.get('cipher')}"
        return f"tls {how}: passed on encrypted, not recorded"
    if event == "gap":
        return f"gap: {record.get('lost')} records lost by the tap"
    if event == "close":
        text = f"close by {record.get('by')}"
        duration = record.get("duration")
        if type(duration) in (int, float) and 0 <= duration < 1e9:
            text += f" after {duration:.3f} s"
        if record.get("error"):
            text += f": {record.get('error')}"
        return text
    return f"error: {record.get('error')}"


def _check_label(rule: str, record: dict) -> str:
    """A finding's row, as ctipretty shows it: `check [L3]: client login_pass:
    protocol 2.3 expects "password", not "hashedpassword"; the server closes the
    connection on this`."""
    where = " ".join(str(record.get(key)) for key in ("side", "class") if record.get(key))
    text = record.get("text")
    text = f"{where}: {text}" if where else str(text)
    if record.get("server"):
        text += f"; {record.get('server')}"
    return f"check [{rule}]: {text}"


def _is_one_value(text: bytes) -> bool:
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        return False


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # deeper than orjson writes: shown as a note
        return b'{"(not shown)":"nested too deep to show"}'


def _link_columns(requests: list[int], answers: list[int]) -> list[int]:
    """A column for each answered pair (sorted by request row) so that pairs
    whose rows overlap sit side by side; unanswered pairs get 0."""
    ends = [-1] * LINK_COLUMNS  # per column, the last row it is busy until
    columns = []
    for request, reply in zip(requests, answers):
        if reply < 0:
            columns.append(0)
            continue
        for column, end in enumerate(ends):
            if end < request:
                break
        else:
            column = LINK_COLUMNS - 1
        ends[column] = reply
        columns.append(column)
    return columns

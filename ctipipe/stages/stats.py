"""ctistat: a session's statistics when it ends: messages by class, reply
latency, or network figures. Given a HOST it is the classic tool instead."""
from __future__ import annotations

import array
import collections
import os

import orjson

from ctipipe.core import cli, stream
from ctipipe.stages import replies
from ctipipe.stages import runner as stage
from ctipipe.core.terminal import safe_json, safe_text

PROG = "ctistat"

# Estimated TCP/IP header bytes per read, as the classic ctistat counted them.
HEADER_BYTES = 50

_MISSING = object()

# The columns of --csv, and the keys of a --samples line in that order
# (`function` only when the request had one).
SAMPLE_FIELDS = ("conn", "class", "function", "commandid", "request_ts", "reply_ts", "latency")

# How a session ended, in the order the totals list them: closed by the
# client, the server, the relay, the end of a capture (ctipcap) or an error;
# still open when the input ended;
# never opened (the relay could not reach the server for that client).
OUTCOMES = ("client", "server", "relay", "capture-end", "error", "input ended", "not relayed")

EXAMPLE = """\
ctirelay xivo-new | tee session.jsonl | ctistat
ctistat -n session.jsonl            # or: ctistat -n < session.jsonl
ctistat --samples session.jsonl     # every request -> reply latency, one JSON line each
ctireplay s.jsonl --to xivo-test --clients 20 | ctistat --totals
ctistat xivo-new -m                 # the classic tool: relay and statistics in one
"""


class _Session:
    def __init__(self, conn: object, keep_outcomes: bool = False) -> None:
        self.conn = conn
        # --samples: every request's outcome as soon as it is known, until written
        self.outcomes: list[replies.Outcome] | None = [] if keep_outcomes else None
        self.open: dict | None = None
        self.close: dict | None = None
        self.classes = {"client": collections.Counter(), "server": collections.Counter()}
        self.bytes = {"client": 0, "server": 0}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.pairing = replies.Pairing()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.unanswered: collections.Counter = collections.Counter()
        self.not_expected: collections.Counter = collections.Counter()  # no reply by design
        self.lost = 0  # records the relay's tap lost (gap events' `lost`)
        self.missing = 0  # bytes a capture does not hold (ctipcap's gap events' `missing`)
        self.gaps = 0  # gap events, of either kind
        self.error: object = None  # an `error` event of this session
        self.seen = {"client": 0, "server": 0}  # data records per side

    def add(self, record: dict, side: str) -> None:
        ts = record.get("ts")
        timed = type(ts) is float or isinstance(ts, (int, float))
        if timed:
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
        size = record.get("size")
        if type(size) is int or isinstance(size, int):
            self.bytes[side] += size
        self.seen[side] += 1
        message = record.get("msg", _MISSING)
        if message is _MISSING:
            self.classes[side]["(raw chunk)" if record.get("chunk") else "(not JSON)"] += 1
            return
        if type(message) is not dict:
            self.classes[side]["(not an object)"] += 1
            return
        name = message.get("class")
        if type(name) is not str:
            name = "(no class)"  # as replies.class_name
        self.classes[side][name] += 1
        if not timed:
            return
        pairing = self.pairing
        if side == "client":
            if "commandid" not in message:
                return  # not a request (replies.is_request)
            for outcome in pairing.request(message, ts, message):
                self._unanswered(outcome)
                if self.outcomes is not None:
                    self.outcomes.append(outcome)
        # A server message that answers nothing and is not a STARTTLS offer
        # leaves the pairing as it was (Pairing.reply): the common broadcast.
        elif "replyid" in message or pairing.pending or name == "starttls":
            outcome = pairing.reply(message, ts)
            if outcome is not None:
                self.latency[outcome.request.name].append(outcome.latency_ms)
                if self.outcomes is not None:
                    self.outcomes.append(outcome)

    def _unanswered(self, outcome: replies.Outcome) -> None:
        """A request without a reply: a fault, or what the protocol does
        (logout, the client's second starttls: core/protocol.py)."""
        counter = self.unanswered if outcome.expected else self.not_expected
        counter[outcome.request.name] += 1

    def absent_side(self) -> str | None:
        """The side a one-sided capture left out (ctisplit --jsonl's client
        file): none of its records, though the close record says it sent bytes."""
        return replies.absent_side(self.close, self.seen)

    def end(self) -> None:
        """The session ended: its requests still waiting got no reply (unless
        the server's side is absent from the input: then nothing is known)."""
        absent = self.absent_side()
        for outcome in self.pairing.end():
            if absent == "server":
                continue
            self._unanswered(outcome)
            if self.outcomes is not None:
                self.outcomes.append(outcome)
        if absent == "server":
            self.unanswered.clear()
            self.not_expected.clear()

    def summary(self, ended: str = "input ended") -> dict:
        """The session's figures; `ended` says how, when no close record came."""
        close = self.close or {}
        duration = close.get("duration")
        if not isinstance(duration, (int, float)):
            duration = (self.last_ts - self.first_ts) if self.first_ts is not None else 0.0
        sent = close.get("bytes") if isinstance(close.get("bytes"), dict) else self.bytes
        reads = close.get("reads") if isinstance(close.get("reads"), dict) else None
        unanswered, not_expected = self.unanswered, self.not_expected
        latency = {}
        for name in sorted(set(self.latency) | set(unanswered) | set(not_expected)):
            latency[name] = replies.latency_row(self.latency.get(name, []), unanswered.get(name, 0),
                                                not_expected.get(name, 0))
        result = {
            "conn": self.conn,
            "client": (self.open or {}).get("client"),
            "server": (self.open or {}).get("server"),
            "closed_by": close.get("by"),
            "ended": "closed" if self.close else ended,
            "duration": round(duration, 6),
            "messages": {side: dict(counter.most_common()) for side, counter in self.classes.items()},
            "bytes": {side: sent.get(side, 0) for side in ("client", "server")},
            "reads": ({side: reads.get(side, 0) for side in ("client", "server")} if reads else None),
            "latency": latency,
            "lost": self.lost,
        }
        if self.missing:  # bytes a capture does not hold (ctipcap)
            result["missing"] = self.missing
        if close.get("error"):
            result["error"] = close["error"]
        elif self.error is not None:
            result["error"] = self.error
        absent = self.absent_side()
        if absent:
            result["absent"] = absent
        measured = _measured(close)  # a capture's close (ctipcap): packets and IP bytes
        if measured:
            result["packets"], result["wire_bytes"] = measured
        return result

    def outcome(self) -> str:
        """How it ended: who closed it, or "input ended" (OUTCOMES)."""
        if self.close is None:
            return "input ended"
        by = self.close.get("by")
        return by if by in OUTCOMES else "error"

    def completed(self) -> bool:
        """Closed by the client, without an error or a gap: the run a load test wants."""
        return (self.outcome() == "client" and not (self.close or {}).get("error")
                and self.error is None and not self.gaps)


def _measured(close: dict) -> tuple[dict, dict] | None:
    """The packets and wire bytes per side a capture measured, when the close has them."""
    packets, wire = close.get("packets"), close.get("wire_bytes")
    if not (isinstance(packets, dict) and isinstance(wire, dict)):
        return None
    sides = ("client", "server")
    if not all(isinstance(d.get(side), int) for d in (packets, wire) for side in sides):
        return None
    return {side: packets[side] for side in sides}, {side: wire[side] for side in sides}


def _key(value: object) -> int:
    """A session's number: the stream's conn, an integer. Any other value (a
    string, null, an object...) names no session: the record is skipped with
    the runner's warning, as ctireport and cticheck skip it."""
    if type(value) is int:
        return value
    raise stage.BadRecord(stream.NO_SESSION)


class _Totals:
    """What the sessions add up to: outcomes, messages per class, pooled latency."""

    def __init__(self) -> None:
        self.sessions = 0
        self.completed = 0
        self.outcomes = collections.Counter()
        self.classes = {"client": collections.Counter(), "server": collections.Counter()}
        self.bytes = {"client": 0, "server": 0}
        self.latency: dict[str, array.array] = collections.defaultdict(lambda: array.array("d"))
        self.unanswered = collections.Counter()
        self.not_expected = collections.Counter()
        self.lost = 0
        self.missing = 0
        self.with_error = 0
        self.with_gap = 0  # sessions with a gap of either kind
        self.with_lost = 0
        self.with_missing = 0
        self.one_sided = 0

    def add(self, session: _Session, summary: dict) -> None:
        self.sessions += 1
        self.completed += session.completed()
        self.outcomes[session.outcome()] += 1
        for side in ("client", "server"):
            self.classes[side].update(session.classes[side])
            sent = summary["bytes"][side]
            self.bytes[side] += sent if type(sent) is int else 0
        for name, values in session.latency.items():
            self.latency[name].extend(values)
        self.unanswered.update(session.unanswered)
        self.not_expected.update(session.not_expected)
        self.lost += session.lost
        self.missing += session.missing
        self.with_gap += bool(session.gaps)
        self.with_lost += bool(session.lost)
        self.with_missing += bool(session.missing)
        self.with_error += "error" in summary
        self.one_sided += "absent" in summary

    def summary(self, not_relayed: int) -> dict:
        latency = {name: replies.latency_row(self.latency.get(name, []), self.unanswered.get(name, 0),
                                             self.not_expected.get(name, 0))
                   for name in sorted(set(self.latency) | set(self.unanswered)
                                      | set(self.not_expected))}
        outcomes = self.outcomes + collections.Counter({"not relayed": not_relayed})
        return {"sessions": self.sessions + not_relayed,
                "completed": self.completed,
                "outcome": {name: outcomes[name] for name in OUTCOMES if outcomes[name]},
                "with_error": self.with_error,
                "with_gap": self.with_gap,
                "lost": self.lost,
                "with_lost": self.with_lost,
                "with_missing": self.with_missing,
                "missing": self.missing,
                "one_sided": self.one_sided,
                "messages": {side: dict(counter.most_common()) for side, counter in self.classes.items()},
                "bytes": dict(self.bytes),
                "latency": latency}


class Stat(stage.Stage):
    def __init__(self, network: bool = False, as_json: bool = False, samples: str | None = None,
                 totals: str = "auto") -> None:
        """`samples`: None, "json" or "csv" (one line per request instead of
        the summaries); `totals`: "auto" (when there were several sessions),
        "only" (the totals and nothing else) or "never"."""
        self.network = network
        self.as_json = as_json
        self.samples = samples
        self.totals_mode = "never" if samples else totals
        self.sessions: dict[object, _Session] = {}
        self.reported = 0  # sessions whose statistics were printed
        self.errors = 0  # clients that could not be relayed (error events of no open session)
        self.last_error: object = None
        self.started = False  # a producer's `start` record was seen
        self.totals = _Totals()
        self.header_written = False  # --csv

    def _session(self, conn: object) -> _Session:
        key = _key(conn)
        session = self.sessions.get(key)
        if session is None:
            session = self.sessions[key] = _Session(conn, keep_outcomes=self.samples is not None)
        return session

    def handle(self, record: dict, line: bytes) -> bytes | None:
        side = record.get("from")
        if side == "client" or side == "server":
            message = record.get("msg")
            # orjson reads an integer beyond 64 bits as a float: the request's
            # commandid or the reply's replyid (the value each side is paired
            # by, and --samples writes) is then read again exactly.
            if type(message) is dict:
                number = message.get("commandid" if side == "client" else "replyid")
                if type(number) is float and not -BEYOND_64_BITS < number < BEYOND_64_BITS:
                    record = stream.exact_loads(line)
            conn = record.get("conn")
            # an integer conn, the common case, is its own key (_key)
            session = self.sessions.get(conn) if type(conn) is int else None
            if session is None:
                session = self._session(conn)
            session.add(record, side)
            if session.outcomes:
                return self._samples(session)
            return None
        event = record.get("event")
        if event == "start":
            self.started = True
            if self.sessions:
                # A producer's first record: what came before (another file)
                # has ended, and its session numbers start again.
                return b"\n".join(self._report_open()) or None
        if event == "open":
            self._session(record.get("conn")).open = record
        elif event == "gap":
            # the relay's tap: `lost` records; ctipcap: `missing` bytes of one side
            session = self._session(record.get("conn"))
            session.gaps += 1
            lost, missing = record.get("lost"), record.get("missing")
            session.lost += lost if type(lost) is int else 0
            session.missing += missing if type(missing) is int else 0
        elif event == "close":
            problem = stream.record_problem(record)
            if problem is not None:  # its figures would stop the report
                raise stage.BadRecord(problem)
            session = self._session(record.get("conn"))
            session.close = record
            del self.sessions[_key(record.get("conn"))]
            return self._report(session)
        elif event == "error":  # (without conn: a client the relay could not serve)
            conn = record.get("conn")
            session = self.sessions.get(conn) if type(conn) is int else None
            if session is not None:
                session.error = record.get("error")
            else:
                self.errors += 1  # a client the relay could not serve: no session opened
                self.last_error = record.get("error")
        return None

    def _report(self, session: _Session, ended: str = "input ended") -> bytes | None:
        self.reported += 1
        session.end()
        if self.samples:
            if session.absent_side() == "server":
                cli.report(PROG, f"session {session.conn}: no server messages in the input "
                                 f"(a one-sided capture): its requests are not listed")
            return self._samples(session)
        summary = session.summary(ended)
        self.totals.add(session, summary)
        if self.totals_mode == "only":
            return None
        if self.as_json:  # the same text, with what could drive a terminal as \u escapes
            return safe_json(stream.dumps(summary))
        # Addresses and class names come from the wire: escaped like ctipretty's.
        return safe_text((format_network(summary) if self.network
                          else format_messages(summary)).encode())

    def _samples(self, session: _Session) -> bytes | None:
        """The lines of the request outcomes known since the last call."""
        lines = [_sample(session.conn, outcome) for outcome in session.outcomes]
        session.outcomes.clear()
        if self.samples == "csv":
            if not self.header_written:
                self.header_written = True
                lines.insert(0, dict.fromkeys(SAMPLE_FIELDS, None))
            return safe_text(b"\n".join(_csv_line(sample) for sample in lines)) if lines else None
        return safe_json(b"\n".join(stream.dumps(sample) for sample in lines)) if lines else None

    def _report_open(self) -> list[bytes]:
        """The statistics of the sessions still open, which then end."""
        ended = "interrupted" if self.stopped else "input ended"
        reports = [self._report(session, ended) for session in self.sessions.values()]
        self.sessions.clear()
        return [report for report in reports if report is not None]

    def finish(self) -> bytes | None:
        """Sessions still open when input ended get their statistics too; then
        the totals, when there were several sessions."""
        reports = self._report_open()
        if not self.started and cli.COMMAND_ENV in os.environ:
            # In ctistat HOST the relay writes `start` first: one that did not
            # could not start and has said why; a "no session" report under
            # its error would mislead.
            return None
        if not self.reported:
            # Say so rather than print nothing (stopped before a client came).
            text = "no session: the input ended before any session began"
            if self.errors:
                text += (f" ({self.errors} client{'s' if self.errors > 1 else ''} could not be "
                         f"relayed; last error: {self.last_error})")
            if self.as_json or self.samples:
                cli.report(PROG, text)  # standard output stays one object per line
                return None
            return safe_text(f"=== No session: {text.split(': ', 1)[1]}\n".encode())
        if self.samples == "csv" and not self.header_written:
            reports.append(_csv_line(dict.fromkeys(SAMPLE_FIELDS, None)))
        if self.totals_mode == "only" or (self.totals_mode == "auto" and self.reported > 1):
            totals = self.totals.summary(self.errors)
            if self.as_json:
                reports.append(safe_json(orjson.dumps({"totals": totals})))
            else:
                reports.append(safe_text(format_totals(totals, self.network).encode()))
        return b"".join(report + b"\n" for report in reports) or None


# orjson reads an integer beyond 64 bits as a float: a commandid or replyid that
# came as a float this large is read again exactly (two different ones must not
# meet as the same float). Looked for in the key each side is paired by, which
# costs far less than a look for long runs of digits in every batch.
BEYOND_64_BITS = 2.0 ** 63


def _sample(conn: object, outcome: replies.Outcome) -> dict:
    """One --samples line: a request and its reply (latency null without one)."""
    request = outcome.request
    sample = {"conn": conn, "class": request.name}
    message = request.ref
    if type(message) is dict and "function" in message:
        sample["function"] = message["function"]
    sample["commandid"] = request.commandid
    sample["request_ts"] = request.ts
    sample["reply_ts"] = outcome.reply_ts
    latency = outcome.latency
    sample["latency"] = None if latency is None else round(latency, 6)
    return sample


def _csv_line(sample: dict) -> bytes:
    """A sample as a CSV row (the header row when its values are None and it
    has every field); values as their JSON text, strings as CSV cells."""
    if all(value is None for value in sample.values()) and len(sample) == len(SAMPLE_FIELDS):
        return ",".join(SAMPLE_FIELDS).encode()
    cells = []
    for field in SAMPLE_FIELDS:
        value = sample.get(field)
        if value is None:
            cells.append(b"")
        elif type(value) is str:
            cells.append(_csv_text(value))
        elif type(value) is float and field.endswith("_ts"):
            cells.append(b"%.6f" % value)
        else:
            cells.append(_csv_text(stream.dumps(value).decode()) if type(value) in (dict, list)
                         else stream.dumps(value))
    return b",".join(cells)


def _csv_text(text: str) -> bytes:
    """A CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line end."""
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.encode("utf-8", "surrogatepass")


def _title(summary: dict) -> str:
    title = f"=== Session {summary['conn']}"
    if summary["client"]:
        title += f": {summary['client']} > {summary['server']}"
    if summary["ended"] == "closed":
        title += f", closed by {summary['closed_by']} after {summary['duration']:.3f} s"
    elif summary["ended"] == "interrupted":
        title += f", still open when interrupted ({summary['duration']:.3f} s seen)"
    else:
        title += f", still open when input ended ({summary['duration']:.3f} s seen)"
    if summary.get("error"):
        title += f" ({summary['error']})"
    if summary["lost"]:
        title += f"; {summary['lost']} records lost by the tap, not counted"
    if summary.get("missing"):
        title += f"; {summary['missing']} bytes missing from the capture, not counted"
    return title


def format_messages(summary: dict) -> str:
    lines = [_title(summary)]
    for side in ("client", "server"):
        lines.append(f"=== Messages sent by {side}")
        lines += [f"{name} {count}" for name, count in summary["messages"][side].items()]
    if summary.get("absent") == "server":
        lines.append("=== Reply latency: no server messages in the input (a one-sided capture, "
                     "such as ctisplit --jsonl's client file): not measured")
    elif summary["latency"]:
        lines.append("=== Reply latency by class (client commandid -> server replyid), ms")
        lines += _latency_table(summary["latency"])
    return "\n".join(lines)


def _latency_table(latency: dict) -> list[str]:
    lines = [f"{'class':<24} {'count':>7} {'median':>9} {'p95':>9} {'p99':>9} {'max':>9} "
             f"{'no reply':>9} {'no reply expected':>17}"]
    for name, row in latency.items():
        cells = [_ms(row[key]) for key in ("median_ms", "p95_ms", "p99_ms", "max_ms")]
        lines.append(f"{name:<24} {row['count']:>7} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} "
                     f"{cells[3]:>9} {row['no_reply']:>9} {row['no_reply_expected']:>17}")
    return lines


def format_totals(totals: dict, network: bool = False) -> str:
    """The block that ends the output when there were several sessions."""
    count = totals["sessions"]
    lines = [f"=== Totals: {_plural(count, 'session')}",
             f"{totals['completed']} of {_plural(count, 'session')} completed (closed by the "
             f"client, without an error or a gap)"]
    ended = [f"{n} {_ENDED[name]}" for name, n in totals["outcome"].items()]
    lines.append("ended: " + ", ".join(ended))
    notes = [(totals["with_error"], "with an error"), (totals["with_lost"], "with records lost"),
             (totals["with_missing"], "with bytes missing from the capture"),
             (totals["one_sided"], "with one side absent from the input")]
    lines += [f"{_plural(n, 'session')} {what}" for n, what in notes if n]
    sent = totals["bytes"]
    lines.append(f"app bytes: client {sent['client']}, server {sent['server']}, "
                 f"total {sent['client'] + sent['server']}")
    if not network:
        for side in ("client", "server"):
            lines.append(f"=== Messages sent by {side}, all sessions")
            lines += [f"{name} {n}" for name, n in totals["messages"][side].items()]
        if totals["latency"]:
            lines.append("=== Reply latency by class, all sessions, ms")
            lines += _latency_table(totals["latency"])
    return "\n".join(lines)


_ENDED = {"client": "closed by the client", "server": "closed by the server",
          "relay": "closed by the relay", "error": "ended by an error",
          "input ended": "still open when the input ended",
          "not relayed": "never opened (could not be relayed)"}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_network(summary: dict) -> str:
    """The classic ctistat -n figures, labels and order exactly as it printed
    them (a tab-separated label, then the value as Python 2 printed it), under
    our session title line."""
    duration = summary["duration"]
    sent = summary["bytes"]
    total = sent["client"] + sent["server"]
    lines = [_title(summary),
             f"Running time:\t\t{_py2(float(duration))}",
             f"Client app bytes:\t{sent['client']}",
             f"Server app bytes:\t{sent['server']}",
             f"Total app bytes:\t{total}",
             f"Avg app bytes/s:\t{_py2(_rate(total, duration))}",
             "==========="]
    reads = summary["reads"]
    measured = "packets" in summary  # a capture's counts rather than the estimate
    if measured:
        reads, wire = summary["packets"], summary["wire_bytes"]
    if reads:
        packets = reads["client"] + reads["server"]
        if not measured:
            wire = {side: sent[side] + HEADER_BYTES * reads[side] for side in ("client", "server")}
        headers = wire["client"] + wire["server"] - total if measured else packets * HEADER_BYTES
        overhead = headers / total if total else 0.0
        lines += [f"Client IP packets:\t{reads['client']}",
                  f"Server IP packets:\t{reads['server']}",
                  f"Total IP packets:\t{packets}",
                  f"Average IP packets/s:\t{_py2(_rate(packets, duration))}",
                  "===========",
                  f"Client wire bytes:\t{wire['client']}",
                  f"Server wire bytes:\t{wire['server']}",
                  f"Total wire bytes:\t{wire['client'] + wire['server']}",
                  f"Total headers overhead:\t{_py2(overhead)}",
                  f"Average wire bytes/s:\t{_py2(_rate(wire['client'] + wire['server'], duration))}"]
        if measured:
            lines.append("(IP packets and wire bytes as measured in the capture, "
                         "not estimated from reads)")
    else:  # the relay counts reads; only its close record says how many
        lines += [f"{label}\tunknown (no close record)" for label in (
            "Client IP packets:", "Server IP packets:", "Total IP packets:", "Average IP packets/s:")]
        lines.append("===========")
        lines += [f"{label}\tunknown (no close record)" for label in (
            "Client wire bytes:", "Server wire bytes:", "Total wire bytes:",
            "Total headers overhead:", "Average wire bytes/s:")]
    return "\n".join(lines)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else 0.0


def _py2(value: float) -> str:
    """A float as Python 2's print wrote it (str(): 12 significant digits)."""
    text = "%.12g" % value
    return text if any(c in text for c in ".einf") else text + ".0"


def names_a_host(argv: list[str]) -> bool:
    """Is this the classic `ctistat HOST` rather than the sink reading FILEs?

    A word that is `-`, an existing file, a path (holds a `/`) or a saved
    stream's name (`.jsonl`, `.json`) is a FILE; any other word is a HOST
    (or an option's value, which only the classic tool takes). The classic
    tool takes one HOST: words after a FILE are FILEs too, so that a missing
    one is said as such (`cannot read missing.jsonl`).
    """
    words = [arg for arg in argv if arg == "-" or not arg.startswith("-")]
    if words and _is_file_word(words[0]):
        return False
    return any(not _is_file_word(word) for word in words)


def _is_file_word(word: str) -> bool:
    return word == "-" or os.path.exists(word) or "/" in word or word.endswith((".jsonl", ".json"))


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Print each session's statistics when it ends (its close record, "
                        "or the end of input), then the totals when there were several. Reads "
                        "the FILEs in order (- is standard input), or standard input. With a "
                        "HOST, relays to it and does the same (see ctistat HOST --help).", EXAMPLE)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-m", "--msg", action="store_true", help="messages by class per side (default)")
    mode.add_argument("-n", "--network", action="store_true",
                      help="the classic network figures: running time, app bytes, IP packets "
                           "(reads), wire bytes")
    mode.add_argument("--samples", action="store_true",
                      help="instead of the summaries, one JSON line per request: conn, class, "
                           "function, commandid, request_ts, reply_ts, latency (seconds; null "
                           "without a reply), as the replies come")
    parser.add_argument("--csv", action="store_true",
                        help="the samples as CSV, with a header row (implies --samples)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per session (and a totals object)")
    parser.add_argument("--totals", "--total", action="store_true",
                        help="only the totals over all sessions (even one)")
    stage.add_input_files(parser)
    args = parser.parse_args(argv)
    samples = "csv" if args.csv else "json" if args.samples else None
    if args.csv and (args.network or args.msg):
        parser.error(f"--csv writes the samples: not with {'-n' if args.network else '-m'}")
    if samples and (args.json or args.totals):
        parser.error(f"--{'samples' if args.samples else 'csv'} writes one line per request: "
                     f"no summaries, so no {'--json' if args.json else '--totals'}")
    stat = Stat(args.network, args.json, samples, "only" if args.totals else "auto")
    return cli.guarded(PROG, lambda: stage.run_stage(PROG, stat, args.files), debug=args.debug)

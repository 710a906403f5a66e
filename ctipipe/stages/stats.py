"""ctistat: a session's statistics when it ends: messages by class, reply
latency, or network figures. Given a HOST it is the classic tool instead."""
from __future__ import annotations

import collections
import os


from ctipipe.core import cli
from ctipipe.core import stream
from ctipipe.stages import replies
from ctipipe.stages import runner as stage
from ctipipe.core.terminal import safe_json, safe_text

PROG = "ctistat"

# Estimated TCP/IP header bytes per read, as the classic ctistat counted them.
HEADER_BYTES = 50

EXAMPLE = """\
ctirelay xivo-new | tee session.jsonl | ctistat
ctistat -n session.jsonl            # or: ctistat -n < session.jsonl
ctistat xivo-new -m                 # the classic tool: relay and statistics in one
"""


class _Session:
    def __init__(self, conn: object) -> None:
        self.conn = conn
        self.open: dict | None = None
        self.close: dict | None = None
        self.classes = {"client": collections.Counter(), "server": collections.Counter()}
        self.bytes = {"client": 0, "server": 0}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.pairing = replies.Pairing()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.unanswered: collections.Counter = collections.Counter()
        self.lost = 0

    def add(self, record: dict, side: str) -> None:
        ts = record.get("ts")
        if isinstance(ts, (int, float)):
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
        size = record.get("size")
        if isinstance(size, int):
            self.bytes[side] += size
        if "msg" not in record:
            self.classes[side]["(raw chunk)" if record.get("chunk") else "(not JSON)"] += 1
            return
        message = record["msg"]
        if type(message) is not dict:
            self.classes[side]["(not an object)"] += 1
            return
        name = replies.class_name(message)
        self.classes[side][name] += 1
        if not isinstance(ts, (int, float)):
            return
        if side == "client":
            for outcome in self.pairing.request(message, ts):
                self.unanswered[outcome.request.name] += 1
        else:
            outcome = self.pairing.reply(message, ts)
            if outcome is not None:
                self.latency[outcome.request.name].append(outcome.latency_ms)

    def summary(self) -> dict:
        close = self.close or {}
        duration = close.get("duration")
        if not isinstance(duration, (int, float)):
            duration = (self.last_ts - self.first_ts) if self.first_ts is not None else 0.0
        sent = close.get("bytes") if isinstance(close.get("bytes"), dict) else self.bytes
        reads = close.get("reads") if isinstance(close.get("reads"), dict) else None
        unanswered = collections.Counter(self.unanswered)
        for outcome in self.pairing.end():
            unanswered[outcome.request.name] += 1
        latency = {}
        for name in sorted(set(self.latency) | set(unanswered)):
            row = replies.latency_row(self.latency.get(name, []), unanswered.get(name, 0))
            del row["p99_ms"]
            latency[name] = row
        result = {
            "conn": self.conn,
            "client": (self.open or {}).get("client"),
            "server": (self.open or {}).get("server"),
            "closed_by": close.get("by"),
            "ended": "closed" if self.close else "input ended",
            "duration": round(duration, 6),
            "messages": {side: dict(counter.most_common()) for side, counter in self.classes.items()},
            "bytes": {side: sent.get(side, 0) for side in ("client", "server")},
            "reads": ({side: reads.get(side, 0) for side in ("client", "server")} if reads else None),
            "latency": latency,
            "lost": self.lost,
        }
        if close.get("error"):
            result["error"] = close["error"]
        return result


def _key(value: object) -> object:
    return replies.request_key(value)  # session 5 and "5" are the same session


class Stat(stage.Stage):
    def __init__(self, network: bool, as_json: bool) -> None:
        self.network = network
        self.as_json = as_json
        self.sessions: dict[object, _Session] = {}
        self.reported = 0  # sessions whose statistics were printed
        self.errors = 0  # clients that could not be relayed (error events of no open session)
        self.last_error: object = None
        self.started = False  # a producer's `start` record was seen

    def _session(self, conn: object) -> _Session:
        key = _key(conn)
        session = self.sessions.get(key)
        if session is None:
            session = self.sessions[key] = _Session(conn)
        return session

    def handle(self, record: dict, line: bytes) -> bytes | None:
        side = record.get("from")
        if side in ("client", "server"):
            self._session(record.get("conn")).add(record, side)
            return None
        event = record.get("event")
        if event == "start":
            self.started = True
            if self.sessions:
                # A producer's first record: what came before (another file)
                # has ended, and its session numbers start again.
                return b"\n".join(self._report_open())
        if event == "open":
            self._session(record.get("conn")).open = record
        elif event == "gap":
            lost = record.get("lost")
            self._session(record.get("conn")).lost += lost if isinstance(lost, int) else 0
        elif event == "close":
            problem = stream.record_problem(record)
            if problem is not None:  # its figures would stop the report
                raise stage.BadRecord(problem)
            session = self._session(record.get("conn"))
            session.close = record
            del self.sessions[_key(record.get("conn"))]
            return self._report(session)
        elif event == "error" and _key(record.get("conn")) not in self.sessions:
            self.errors += 1  # a client the relay could not serve: no session opened
            self.last_error = record.get("error")
        return None

    def _report(self, session: _Session) -> bytes:
        self.reported += 1
        summary = session.summary()
        if self.as_json:  # the same text, with what could drive a terminal as \u escapes
            return safe_json(stream.dumps(summary))
        # Addresses and class names come from the wire: escaped like ctipretty's.
        return safe_text((format_network(summary) if self.network
                          else format_messages(summary)).encode())

    def _report_open(self) -> list[bytes]:
        """The statistics of the sessions still open, which then end."""
        reports = [self._report(session) for session in self.sessions.values()]
        self.sessions.clear()
        return reports

    def finish(self) -> bytes | None:
        """Sessions still open when input ended get their statistics too."""
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
            if self.as_json:
                cli.report(PROG, text)  # standard output stays one object per session
                return None
            return safe_text(f"=== No session: {text.split(': ', 1)[1]}\n".encode())
        return b"".join(report + b"\n" for report in reports) or None


def _title(summary: dict) -> str:
    title = f"=== Session {summary['conn']}"
    if summary["client"]:
        title += f": {summary['client']} > {summary['server']}"
    if summary["ended"] == "closed":
        title += f", closed by {summary['closed_by']} after {summary['duration']:.3f} s"
    else:
        title += f", still open when input ended ({summary['duration']:.3f} s seen)"
    if summary.get("error"):
        title += f" ({summary['error']})"
    if summary["lost"]:
        title += f"; {summary['lost']} records lost by the tap, not counted"
    return title


def format_messages(summary: dict) -> str:
    lines = [_title(summary)]
    for side in ("client", "server"):
        lines.append(f"=== Messages sent by {side}")
        lines += [f"{name} {count}" for name, count in summary["messages"][side].items()]
    if summary["latency"]:
        lines.append("=== Reply latency by class (client commandid -> server replyid), ms")
        lines.append(f"{'class':<24} {'count':>7} {'median':>9} {'p95':>9} {'max':>9} {'no reply':>9}")
        for name, row in summary["latency"].items():
            cells = [_ms(row[key]) for key in ("median_ms", "p95_ms", "max_ms")]
            lines.append(f"{name:<24} {row['count']:>7} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} "
                         f"{row['no_reply']:>9}")
    return "\n".join(lines)


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
    if reads:
        packets = reads["client"] + reads["server"]
        wire = {side: sent[side] + HEADER_BYTES * reads[side] for side in ("client", "server")}
        overhead = packets * HEADER_BYTES / total if total else 0.0
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
                        "or the end of input). Reads the FILEs in order (- is standard input), "
                        "or standard input. With a HOST, relays to it and does the same (see "
                        "ctistat HOST --help).", EXAMPLE)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-m", "--msg", action="store_true", help="messages by class per side (default)")
    mode.add_argument("-n", "--network", action="store_true",
                      help="the classic network figures: running time, app bytes, IP packets "
                           "(reads), wire bytes")
    parser.add_argument("--json", action="store_true", help="one JSON object per session")
    stage.add_input_files(parser)
    args = parser.parse_args(argv)
    return cli.guarded(PROG, lambda: stage.run_stage(PROG, Stat(args.network, args.json),
                                                     args.files), debug=args.debug)

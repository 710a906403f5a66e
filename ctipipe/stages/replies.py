"""Which reply answered which request: the one pairing that ctistat, ctireport
and cticheck share, so that they can never disagree.

A client request carries a `commandid`; the server's answer carries the same
value as `replyid` (5 and "5" are the same request). The protocol also answers
many requests without a `replyid` (the 2.x login, STARTTLS, `getlist`, the
people and directory classes): such a reply answers the oldest request still
waiting for an answer of its kind (core/protocol.answer_key: the class, and
for `getlist` its function, list and id). The server's unsolicited STARTTLS
offer, which lacks the key `starttls`, answers nothing; its answer to the
client's `starttls` holds it. Which requests the protocol never answers is
core/protocol's table too (Outcome.expected).

A `Pairing` follows one session, message by message in stream order; it is
pure (no I/O, no clock) and keeps at most MAX_PENDING requests waiting.

    pairing = Pairing()
    for record in session_records:
        if record["from"] == "client":
            given_up = pairing.request(message, ts, ref)   # [Outcome], rarely any
        else:
            answered = pairing.reply(message, ts, ref)     # Outcome or None
    still_waiting = pairing.end()                          # [Outcome], no reply
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

from ctipipe.core import protocol, stream

# Replies the protocol sends without a replyid (the 2.x login, the answer to
# STARTTLS, and more: see protocol.answer_key): each answers the oldest
# request still waiting for its kind of answer.
UNNUMBERED_REPLIES = frozenset(("login_id", "login_pass", "login_capas", "starttls"))

# Requests the protocol does not answer at all, by class (the logout, the
# call-control classes, ...): such a request left without a reply is not a
# fault (Outcome.expected is False for it, and for a client's starttls that
# no offer or an earlier starttls made moot, protocol.reply_expected).
NO_REPLY_EXPECTED: frozenset[str] = protocol.NO_REPLY_CLASSES

# Requests still waiting for a reply that one session keeps track of: a client
# that never gets replies must not make its reader grow without bound. The
# oldest is given up (as unanswered) when one more comes.
MAX_PENDING = 100_000

# Why a request got no reply (Outcome.why).
REPLACED = "replaced"  # another request reused its commandid before an answer
GIVEN_UP = "given up"  # more than MAX_PENDING requests were waiting
NO_REPLY = "no reply"  # still waiting when the session ended


@dataclass(slots=True)
class Request:
    """A client message with a commandid, waiting for its answer."""
    commandid: object  # as the message held it
    name: str  # its class ("(no class)" when it had none)
    ts: float
    ref: object = None  # whatever the caller wants back (a record, a row number)
    expected: bool = True  # does the protocol answer it (protocol.reply_expected)


@dataclass(slots=True)
class Outcome:
    """What became of one request: answered (`reply_ts` set) or not (`why`)."""
    request: Request
    reply_ts: float | None = None
    reply_ref: object = None
    why: str | None = None  # None when answered; REPLACED, GIVEN_UP or NO_REPLY

    @property
    def answered(self) -> bool:
        return self.why is None

    @property
    def latency(self) -> float | None:
        """Seconds from request to reply, None when unanswered."""
        return None if self.reply_ts is None else self.reply_ts - self.request.ts

    @property
    def latency_ms(self) -> float | None:
        """Milliseconds from request to reply (ctistat's figures), None when unanswered."""
        return None if self.reply_ts is None else (self.reply_ts - self.request.ts) * 1000.0

    @property
    def expected(self) -> bool:
        """Does the protocol answer this request? (see NO_REPLY_EXPECTED)"""
        return self.request.expected


def request_key(commandid: object) -> object:
    """commandid 5 and replyid "5" are the same request: the key both map to."""
    return str(commandid) if not isinstance(commandid, (dict, list)) else stream.dumps(commandid)


def class_name(message: dict) -> str:
    """A message's class as the statistics name it."""
    name = message.get("class")
    return name if type(name) is str else "(no class)"


def is_request(message: object) -> bool:
    """Is this client message a request (does it carry a commandid)?"""
    return type(message) is dict and "commandid" in message


class Pairing:
    """The requests and replies of one session, paired as they come."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self.pending: dict[object, Request] = {}  # request_key -> Request, oldest first
        # per kind of answer (protocol.answer_key), its requests (key, Request) in order
        self._unnumbered: dict[tuple, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=max_pending))
        self.offered = False  # the server offered STARTTLS
        self.starttls_asked = False  # the client sent a starttls

    def request(self, message: dict, ts: float, ref: object = None) -> list[Outcome]:
        """A client message. Returns the requests it made give up (usually none):
        an earlier one with the same commandid, or the oldest beyond MAX_PENDING."""
        if not is_request(message):
            return []
        given_up = []
        name = class_name(message)
        key = request_key(message["commandid"])
        old = self.pending.pop(key, None)
        if old is not None:
            given_up.append(Outcome(old, why=REPLACED))
        request = self.pending[key] = Request(
            message["commandid"], name, ts, ref,
            protocol.reply_expected(message, self.offered, self.starttls_asked))
        if name == "starttls":
            self.starttls_asked = True
        answer = protocol.answer_key(message, "client")
        if answer is not None:
            self._unnumbered[answer].append((key, request))
        if len(self.pending) > self.max_pending:
            oldest = next(iter(self.pending))
            given_up.append(Outcome(self.pending.pop(oldest), why=GIVEN_UP))
        return given_up

    def reply(self, message: dict, ts: float, ref: object = None) -> Outcome | None:
        """A server message: the request it answers, or None (unsolicited, or
        answering nothing that is waiting)."""
        if type(message) is not dict:
            return None
        if "replyid" in message:
            key = request_key(message["replyid"])
        else:
            if message.get("class") == "starttls" and "starttls" not in message:
                self.offered = True
            if not self.pending:
                return None  # nothing waits: a broadcast (the common case) costs no more
            answer = protocol.answer_key(message, "server")
            if answer is None:
                return None  # (a STARTTLS answer holds the key "starttls"; the offer does not)
            key = self._oldest_pending(answer)
        asked = self.pending.pop(key, None)
        if asked is None:
            return None
        if not self.pending:  # what the queues still hold was all answered
            self._unnumbered.clear()
        return Outcome(asked, reply_ts=ts, reply_ref=ref)

    def end(self) -> list[Outcome]:
        """The session ended: the requests still waiting, oldest first, got no reply."""
        left = [Outcome(request, why=NO_REPLY) for request in self.pending.values()]
        self.pending.clear()
        self._unnumbered.clear()
        return left

    def _oldest_pending(self, answer: tuple) -> object:
        """The oldest request still waiting for this kind of answer (its key), if any.

        Requests answered or given up meanwhile are left in the queue and
        skipped here, so that the queue costs nothing on the common path.
        """
        waiting = self._unnumbered.get(answer)
        while waiting:
            key, request = waiting.popleft()
            if self.pending.get(key) is request:
                return key
        return None


# --- figures over latencies -------------------------------------------------

def nearest_rank(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values (None for none)."""
    if not values:
        return None
    index = max(0, min(len(values) - 1, int(-(-fraction * len(values) // 1)) - 1))
    return values[index]


def latency_row(values_ms: list[float], no_reply: int, no_reply_expected: int = 0) -> dict:
    """A class's latency figures in ms, rounded to the microsecond: count,
    median, p95, p99, max, the number of requests without a reply, and of
    those the protocol never answers (Outcome.expected False)."""
    values = sorted(values_ms)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {"count": len(values),
            "median_ms": rounded(nearest_rank(values, 0.5)),
            "p95_ms": rounded(nearest_rank(values, 0.95)),
            "p99_ms": rounded(nearest_rank(values, 0.99)),
            "max_ms": rounded(values[-1] if values else None),
            "no_reply": no_reply,
            "no_reply_expected": no_reply_expected}


def absent_side(close: dict | None, seen: dict) -> str | None:
    """The side a one-sided input left out (ctisplit --jsonl's client file):
    none of its data records (`seen` counts them per side), though there are
    records of the other and the close record says it sent bytes."""
    close_bytes = (close or {}).get("bytes")
    if not isinstance(close_bytes, dict):
        return None
    for side, other in (("server", "client"), ("client", "server")):
        sent = close_bytes.get(side)
        if not seen[side] and seen[other] and type(sent) is int and sent > 0:
            return side
    return None

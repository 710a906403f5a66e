"""How each live session differed from the recording (Divergence), and what
a run says about its sessions at the end (run_report). Pure: no I/O.

What a peer sends is data, and a hostile one may send a new class name of a
megabyte in every message: a session keeps at most NAMES_KEPT names per
kind and NOTES_KEPT notes, each cut to a few dozen characters, and counts
the rest. The run's report is never cut silently: every diverged session
gets its line, the lines of sessions that followed are capped at
FOLLOWERS_SHOWN with a count of those not shown, and one summary line ends
it whatever happened.
"""
from __future__ import annotations

# Distinct names a session keeps per kind (unexpected, expected and not seen,
# timed out): a peer that sends a new class in every message must not grow
# the session; past it, messages are still counted, as "others".
NAMES_KEPT = 20

# The names shown per kind in a session's line.
NAMES_SHOWN = 6

# How much of a name a report quotes (a class name comes from the peer, who
# may send a megabyte of it).
NAME_CHARS = 64

# Notes a session keeps (a reply that came back as an error, a handshake that
# failed), each cut to NOTE_CHARS: a server may answer every request with a
# different error.
NOTES_KEPT = 10
NOTE_CHARS = 300

# Lines of sessions that followed the recording (or were only interrupted)
# shown at the end: a crowd of 10,000 must not bury its divergences. The
# lines of diverged sessions are never capped.
FOLLOWERS_SHOWN = 20

NOT_A_MESSAGE = "a line that is not a CTI message"


def cut(text: str, limit: int) -> str:
    """`text`, or its start and how much was left out when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def label(cls: object) -> str:
    """A class name as a report quotes it (None: the line was no message)."""
    if cls is None:
        return NOT_A_MESSAGE
    return cut(cls, NAME_CHARS) if isinstance(cls, str) else shown(cls)


def shown(value: object) -> str:
    """A value from the wire as a note quotes it (its repr, cut)."""
    return cut(repr(value), NAME_CHARS)


class Tally:
    """Messages counted by name, at most NAMES_KEPT names (the rest as others)."""

    __slots__ = ("counts", "others", "total")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.others = 0  # messages whose name was not kept
        self.total = 0

    def add(self, name: str) -> None:
        name = cut(name, NAME_CHARS)
        self.total += 1
        if name in self.counts or len(self.counts) < NAMES_KEPT:
            self.counts[name] = self.counts.get(name, 0) + 1
        else:
            self.others += 1

    def __bool__(self) -> bool:
        return self.total > 0

    def __str__(self) -> str:
        parts = [name + (f" x{count}" if count > 1 else "")
                 for name, count in list(self.counts.items())[:NAMES_SHOWN]]
        if len(self.counts) > NAMES_SHOWN or self.others:
            parts.append("...")
        return ", ".join(parts)


class Divergence:
    """How one live session differed from the recording, in bounded memory."""

    def __init__(self) -> None:
        self.not_seen = Tally()
        self.unexpected = Tally()
        self.timed_out = Tally()
        self.notes: list[str] = []
        self.more_notes = 0  # notes past NOTES_KEPT, counted
        self.interrupted = False

    def note(self, text: str) -> None:
        if len(self.notes) < NOTES_KEPT:
            self.notes.append(cut(text, NOTE_CHARS))
        else:
            self.more_notes += 1

    @property
    def diverged(self) -> bool:
        return bool(self.not_seen or self.unexpected or self.timed_out or self.notes)

    def summary(self) -> str:
        parts = []
        if self.not_seen:
            parts.append(f"{self.not_seen.total} expected and not seen ({self.not_seen})")
        if self.unexpected:
            parts.append(f"{self.unexpected.total} unexpected ({self.unexpected})")
        if self.timed_out:
            parts.append(f"{self.timed_out.total} timed out ({self.timed_out})")
        parts += self.notes
        if self.more_notes:
            parts.append(f"{self.more_notes} more notes")
        if self.interrupted:
            parts.append("interrupted")
        if not parts:
            return "followed the recording"
        return ("diverged: " if self.diverged else "") + "; ".join(parts)


def run_report(results: list[tuple[int, Divergence]],
               followers_shown: int = FOLLOWERS_SHOWN) -> list[str]:
    """The lines that end a run, in session order: one per diverged session
    (always), one per other session up to `followers_shown` (then how many
    lines were not shown), and a summary line, always last."""
    lines = []
    hidden = 0
    for conn, divergence in sorted(results, key=lambda result: result[0]):
        if divergence.diverged or followers_shown > 0:
            lines.append(f"session {conn}: {divergence.summary()}")
            followers_shown -= not divergence.diverged
        else:
            hidden += 1
    if hidden:
        lines.append(f"({hidden:,} lines not shown: sessions that followed the recording"
                     f"{' or were interrupted' if any(d.interrupted for _, d in results) else ''})")
    lines.append(summary(results))
    return lines


def summary(results: list[tuple[int, Divergence]]) -> str:
    """'997 of 1,000 sessions followed the recording; diverged: 12, 404, 977'."""
    if not results:
        return "no session was played"
    diverged = sorted(conn for conn, d in results if d.diverged)
    interrupted = sorted(conn for conn, d in results if d.interrupted and not d.diverged)
    followed = len(results) - len(diverged) - len(interrupted)
    text = (f"{followed:,} of {len(results):,} session{'s' if len(results) > 1 else ''} "
            f"followed the recording")
    if diverged:
        text += f"; diverged: {numbers(diverged)}"
    if interrupted:
        text += f"; interrupted before the end: {numbers(interrupted)}"
    return text


def numbers(conns: list[int]) -> str:
    """Sorted session numbers, runs as ranges: '3-5, 12, 404'."""
    parts = []
    start = previous = None
    for conn in conns + [None]:
        if previous is not None and conn == previous + 1:
            previous = conn
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = conn
    return ", ".join(parts)

"""Show ctidiff's differences: for a person in the spirit of diff -u, or as JSON lines."""
from __future__ import annotations

from ctipipe.diff import compare
from ctipipe.diff import sessions
from ctipipe.core import terminal
from ctipipe.diff.pairing import CHANGED, ONLY_A, ONLY_B, Item

# A value or message longer than this is cut in the human view (--full shows
# it all): enough for a typical status update, short of a getlist answer.
WIDTH = 160
# Changed fields shown per message in the human view (--full shows all): a
# reply whose every item changed should not bury the rest.
MAX_CHANGES = 40


_COLORS = {"head": "\x1b[36m", "-": "\x1b[31m", "+": "\x1b[32m", "file": "\x1b[1m",
           "summary": "\x1b[1m"}
_RESET = "\x1b[0m"

# Text from the wire is escaped as ctipretty escapes it (C0 and C1 controls, DEL,
# bidirectional controls): a capture must not be able to drive the terminal.

def _safe_json(text: str) -> str:
    """JSON text with what could drive a terminal escaped; still JSON, same value."""
    if text.isascii() and text.isprintable():  # nothing to escape: the usual case, quickly
        return text
    return terminal.safe_json(text.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")


def _safe_text(text: str) -> str:
    """A name from the wire (a class, a key) shown on one of our lines."""
    if text.isascii() and text.isprintable():
        return text
    return terminal.safe_text(text.encode("utf-8", "surrogatepass"), keep_newlines=False).decode(
        "utf-8", "surrogatepass")


def _kind_text(capture: sessions.Capture, side: str, n: int) -> str:
    return compare.signature_text(capture.kinds_by_number[capture.sides[side].signatures[n]])


def _value_text(value: object, full: bool) -> str:
    text = compare.dumps(value)
    if not full and len(text) > WIDTH:
        text = f"{text[:WIDTH]} ... ({len(text) - WIDTH} more characters)"
    return _safe_json(text)


class Report:
    """Both sides' differences, rendered for a person or as JSON lines."""

    def __init__(self, a: sessions.Capture, b: sessions.Capture, full: bool, color: bool) -> None:
        self.a, self.b = a, b
        self.full = full
        self.color = color

    def _paint(self, kind: str, text: str) -> str:
        return f"{_COLORS[kind]}{text}{_RESET}" if self.color else text

    def _where(self, capture: sessions.Capture, side: str, n: int) -> str:
        return f"#{n + 1} (line {capture.sides[side].lines[n]})"

    def human(self, items: list[Item], sides: dict, counts: dict) -> list[str]:
        out = [self._paint("file", f"--- {_safe_text(self._title(self.a))}"),
               self._paint("file", f"+++ {_safe_text(self._title(self.b))}")]
        for item in items:
            side_a, side_b = sides[item.side]
            if item.kind == CHANGED:
                where = (f"A {self._where(self.a, side_a, item.a)}, "
                         f"B {self._where(self.b, side_b, item.b)}")
                kind = _kind_text(self.a, side_a, item.a)
            elif item.kind == ONLY_A:
                where = f"only in A, {self._where(self.a, side_a, item.a)}"
                if item.moved is not None:
                    where += f"; moved to B {self._where(self.b, side_b, item.moved)}"
                kind = _kind_text(self.a, side_a, item.a)
            else:
                where = f"only in B, {self._where(self.b, side_b, item.b)}"
                if item.moved is not None:
                    where += f"; moved from A {self._where(self.a, side_a, item.moved)}"
                kind = _kind_text(self.b, side_b, item.b)
            out.append(self._paint("head", f"@@ {item.side} {_safe_text(kind)}: {where} @@"))
            if item.kind == ONLY_A:
                out.append(self._paint("-", "- " + _value_text(self.a.value(side_a, item.a)[1], self.full)))
            elif item.kind == ONLY_B:
                out.append(self._paint("+", "+ " + _value_text(self.b.value(side_b, item.b)[1], self.full)))
            else:
                shown = item.changes if self.full else item.changes[:MAX_CHANGES]
                for path_a, path_b, old, new in shown:
                    if old is not compare.MISSING:
                        out.append(self._paint("-", f"- {_path(path_a)}{_value_text(old, self.full)}"))
                    if new is not compare.MISSING:
                        out.append(self._paint("+", f"+ {_path(path_b)}{_value_text(new, self.full)}"))
                if len(item.changes) > len(shown):
                    out.append(f"  ... {len(item.changes) - len(shown)} more changed fields "
                               f"(--full shows them all)")
        for label, count in counts.items():
            out.append(self._paint("summary", f"{label}: {count.equal + count.changed} aligned "
                                              f"({count.equal} equal, {count.changed} changed), "
                                              f"{count.only_a} only in A, {count.only_b} only in B"))
        return out

    def _title(self, capture: sessions.Capture) -> str:
        if capture.tagged:
            return f"{capture.path} (session {capture.conn})"
        return f"{capture.path} (ctisave file)"

    def json(self, items: list[Item], sides: dict, counts: dict) -> list[str]:
        out = []
        for item in items:
            side_a, side_b = sides[item.side]
            entry: dict = {"side": item.side, "kind": item.kind}
            if item.a is not None:
                entry["signature"] = _kind_text(self.a, side_a, item.a)
                entry["a"] = {"index": item.a + 1, "line": self.a.sides[side_a].lines[item.a]}
            else:
                entry["signature"] = _kind_text(self.b, side_b, item.b)
            if item.b is not None:
                entry["b"] = {"index": item.b + 1, "line": self.b.sides[side_b].lines[item.b]}
            if item.moved is not None:
                other, other_side = (self.b, side_b) if item.kind == ONLY_A else (self.a, side_a)
                entry["moved"] = {"index": item.moved + 1, "line": other.sides[other_side].lines[item.moved]}
            if item.kind == CHANGED:
                entry["changes"] = [_change(*change) for change in item.changes]
            else:
                capture, side, n = (self.a, side_a, item.a) if item.kind == ONLY_A else (self.b, side_b, item.b)
                raw, value = capture.value(side, n)
                entry["raw" if raw else "message"] = value
            out.append(_json_line(entry))
        out.append(_json_line({"kind": "summary", "a": self._title(self.a), "b": self._title(self.b),
                               "sides": {label: vars(count) for label, count in counts.items()}}))
        return out


def _path(path: tuple) -> str:
    """A changed field's path and colon; nothing when the whole message changed (raw lines)."""
    return f"{_safe_text(compare.path_text(path))}: " if path else ""


def _change(path_a: tuple, path_b: tuple, old: object, new: object) -> dict:
    change: dict = {"path": compare.path_text(path_a if old is not compare.MISSING else path_b)}
    if path_b != path_a and old is not compare.MISSING and new is not compare.MISSING:
        change["path_b"] = compare.path_text(path_b)
    if old is not compare.MISSING:
        change["a"] = old
    if new is not compare.MISSING:
        change["b"] = new
    return change


def _json_line(value: dict) -> str:
    return _safe_json(compare.dumps(value))

"""Pair two sessions' messages, one side at a time: equal, changed (with the
field differences), or only in A or only in B.

Per side, the two message sequences are aligned (align.py): first the messages
equal after the ignored fields are removed, then, in the gaps between them,
messages of the same kind (compare.signature) are paired as changed; what is
left is only in A or only in B. Changed pairs are compared field by field
(compare.py). No output, no CLI.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

from ctipipe.diff import align
from ctipipe.diff import compare
from ctipipe.diff import sessions

EQUAL, CHANGED, ONLY_A, ONLY_B = "equal", "changed", "only_a", "only_b"


@dataclass
class Item:
    """One difference between the sessions."""
    side: str
    kind: str
    a: int | None  # position among the side's messages in A (from 0)
    b: int | None
    order: tuple  # where it comes in the sessions (by line in A, see compare_side)
    changes: list | None = None  # compare.differences' tuples, for CHANGED
    moved: int | None = None  # an unpaired message equal to one unpaired on the other side


@dataclass
class Counts:
    equal: int = 0
    changed: int = 0
    only_a: int = 0
    only_b: int = 0


def compare_side(a: sessions.Capture, b: sessions.Capture, side_a: str, side_b: str,
                 ignore: compare.Ignore, label: str) -> tuple[list[Item], Counts]:
    """The differences of one side, in order, and the counts for the summary.

    Each difference is ordered by its line in A; a message only in B comes
    right after the line in A of the message before it, so that both sides'
    differences can be shown together in the order they happened.
    """
    ma, mb = a.sides[side_a], b.sides[side_b]
    na, nb = len(ma.keys), len(mb.keys)
    items: list[Item] = []
    counts = Counts()
    i = j = 0
    budget = align.Budget()  # one for the side: its alignments and comparisons together
    equal = align.join_gaps(align.common_pairs(ma.keys, mb.keys, budget), ma.keys, mb.keys)
    for next_i, next_j in equal + [(na, nb)]:
        if i < next_i or j < next_j:
            # A gap: messages of the same kind are paired, the rest is on one side only.
            paired = align.common_pairs(ma.signatures[i:next_i], mb.signatures[j:next_j], budget)
            for gi, gj in [(i + p, j + q) for p, q in paired] + [(next_i, next_j)]:
                while i < gi:
                    items.append(Item(label, ONLY_A, i, None, (ma.lines[i], 0, 0)))
                    counts.only_a += 1
                    i += 1
                while j < gj:
                    after = ma.lines[i - 1] if i else 0
                    items.append(Item(label, ONLY_B, None, j, (after, 1, mb.lines[j])))
                    counts.only_b += 1
                    j += 1
                if gi < next_i:
                    item = _pair(a, b, side_a, side_b, i, j, ignore, label, budget)
                    if item is None:
                        counts.equal += 1
                    else:
                        items.append(item)
                        counts.changed += 1
                    i += 1
                    j += 1
        if next_i < na:
            counts.equal += 1
        i, j = next_i + 1, next_j + 1
    _find_moves(items, ma, mb)
    return items, counts


def _find_moves(items: list[Item], ma: sessions.Messages, mb: sessions.Messages) -> None:
    """Mark a message only in A that is also only in B, elsewhere: it moved."""
    only_b: dict[int, collections.deque[Item]] = {}
    for item in items:
        if item.kind == ONLY_B:
            only_b.setdefault(mb.keys[item.b], collections.deque()).append(item)
    if not only_b:
        return
    for item in items:
        if item.kind == ONLY_A and only_b.get(ma.keys[item.a]):
            other = only_b[ma.keys[item.a]].popleft()
            item.moved, other.moved = other.b, item.a


def _pair(a, b, side_a, side_b, i, j, ignore, label, budget) -> Item | None:
    """The changes between two messages of the same kind (None: equal after all)."""
    raw_a, old = a.stripped(side_a, i, ignore)
    raw_b, new = b.stripped(side_b, j, ignore)
    if raw_a or raw_b:
        changes = [] if (raw_a, old) == (raw_b, new) else [((), (), old, new)]
    else:
        changes = list(compare.differences(old, new, budget=budget))
    if not changes:
        return None
    line_a, line_b = a.sides[side_a].lines[i], b.sides[side_b].lines[j]
    return Item(label, CHANGED, i, j, (line_a, 0, line_b), changes)

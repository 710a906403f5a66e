"""Align two sequences by a longest common subsequence, without the quadratic table.

Pure: sequences of hashable keys in, matched index pairs out. Used by ctidiff
to align two sessions' messages (and the items of two lists inside a message).

The way there, as git's patience and Myers diffs do it:
1. the common start and end are matched at once;
2. keys that occur exactly once in each sequence, in increasing order on both
   sides (a longest increasing subsequence), become anchors that cut the rest
   into small independent gaps;
3. each gap gets Myers' O(ND) greedy diff, whose cost grows with the number
   of differences D, not with the length of the sequences.
A gap too different for Myers within MAX_EDITS falls back to difflib's
SequenceMatcher (a common subsequence, not always the longest, but quick).
"""
from __future__ import annotations

import bisect
import difflib
from typing import Hashable, Sequence

# Myers keeps one row of furthest-reaching points per edit, so time and memory
# grow as D squared: past this many insertions plus deletions in one gap
# (sessions that hardly share anything) the cheaper matcher takes over.
MAX_EDITS = 1500


def common_pairs(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int]]:
    """Index pairs (i, j), increasing in both, with a[i] == b[j]: a common subsequence
    (the longest one unless a gap was too different, see the module docstring)."""
    pairs: list[tuple[int, int]] = []
    _align(a, b, 0, len(a), 0, len(b), pairs, anchors=True)
    return pairs


def _align(a, b, alo: int, ahi: int, blo: int, bhi: int, out: list, anchors: bool) -> None:
    # 1. the common start and end
    while alo < ahi and blo < bhi and a[alo] == b[blo]:
        out.append((alo, blo))
        alo += 1
        blo += 1
    tail = []
    while alo < ahi and blo < bhi and a[ahi - 1] == b[bhi - 1]:
        ahi -= 1
        bhi -= 1
        tail.append((ahi, bhi))
    if alo < ahi and blo < bhi:
        found = _anchors(a, b, alo, ahi, blo, bhi) if anchors else []
        if found:
            # 2. gaps between anchors, each aligned on its own
            for i, j in found:
                _align(a, b, alo, i, blo, j, out, anchors=False)
                out.append((i, j))
                alo, blo = i + 1, j + 1
            _align(a, b, alo, ahi, blo, bhi, out, anchors=False)
        else:
            # 3. one gap
            out += _gap(a, b, alo, ahi, blo, bhi)
    out += reversed(tail)


def _anchors(a, b, alo: int, ahi: int, blo: int, bhi: int) -> list[tuple[int, int]]:
    """Pairs of keys found once in each range, the longest run increasing on both sides."""
    seen_a: dict = {}
    for i in range(alo, ahi):
        key = a[i]
        seen_a[key] = -1 if key in seen_a else i
    seen_b: dict = {}
    for j in range(blo, bhi):
        key = b[j]
        if seen_a.get(key, -1) >= 0:
            seen_b[key] = -1 if key in seen_b else j
    candidates = sorted((seen_a[key], j) for key, j in seen_b.items() if j >= 0)
    if not candidates:
        return []
    # Longest increasing subsequence of j (patience sorting), with back links.
    tops: list[int] = []  # the j at the top of each pile
    top_index: list[int] = []  # which candidate that is
    back = [-1] * len(candidates)
    for n, (_, j) in enumerate(candidates):
        pile = bisect.bisect_left(tops, j)
        if pile:
            back[n] = top_index[pile - 1]
        if pile == len(tops):
            tops.append(j)
            top_index.append(n)
        else:
            tops[pile] = j
            top_index[pile] = n
    chain = []
    n = top_index[-1]
    while n >= 0:
        chain.append(candidates[n])
        n = back[n]
    chain.reverse()
    return chain


def _gap(a, b, alo: int, ahi: int, blo: int, bhi: int) -> list[tuple[int, int]]:
    pairs = myers(a[alo:ahi], b[blo:bhi], MAX_EDITS)
    if pairs is None:
        matcher = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi])
        pairs = [(i + k, j + k) for i, j, size in matcher.get_matching_blocks() for k in range(size)]
    return [(alo + i, blo + j) for i, j in pairs]


def myers(a: Sequence, b: Sequence, max_edits: int) -> list[tuple[int, int]] | None:
    """A longest common subsequence as index pairs, by Myers' greedy O(ND) algorithm
    (E. Myers, "An O(ND) Difference Algorithm and Its Variations", 1986);
    None when more than max_edits insertions plus deletions are needed."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return []
    offset = max_edits + 1
    v = [0] * (2 * offset + 1)  # v[offset + k]: furthest x reached on diagonal k = x - y
    trace: list[list[int]] = []  # after each d, v for diagonals -d..d
    for d in range(max_edits + 1):
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[offset + k - 1] < v[offset + k + 1]):
                x = v[offset + k + 1]  # down: one from b
            else:
                x = v[offset + k - 1] + 1  # right: one from a
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            v[offset + k] = x
            if x >= n and y >= m:
                trace.append(v[offset - d:offset + d + 1])
                return _backtrack(trace, n, m)
        trace.append(v[offset - d:offset + d + 1])
    return None


def _backtrack(trace: list[list[int]], x: int, y: int) -> list[tuple[int, int]]:
    pairs = []
    for d in range(len(trace) - 1, 0, -1):
        previous = trace[d - 1]  # diagonal k is at previous[k + d - 1]
        k = x - y
        if k == -d or (k != d and previous[k - 1 + d - 1] < previous[k + 1 + d - 1]):
            prev_k = k + 1
            start_x = previous[prev_k + d - 1]
        else:
            prev_k = k - 1
            start_x = previous[prev_k + d - 1] + 1
        while x > start_x:  # the snake after this edit
            x -= 1
            y -= 1
            pairs.append((x, y))
        x = previous[prev_k + d - 1]
        y = x - prev_k
    while x > 0 and y > 0:  # the snake before the first edit
        x -= 1
        y -= 1
        pairs.append((x, y))
    pairs.reverse()
    return pairs


# A matched run is slid at most this far to join two gaps; longer runs of
# repeated keys are left where Myers put them (keeps the pass linear).
MAX_SLIDE = 10_000
MAX_SHIFT = 64  # and by at most this many places


def join_gaps(pairs: list[tuple[int, int]], a: Sequence, b: Sequence) -> list[tuple[int, int]]:
    """The same number of pairs, moved so that what is left unmatched on each
    side lies in the same gap where equal keys allow it.

    Among runs of repeated keys a longest common subsequence is not unique:
    A = x x x, B = x y x can match A's first and second x with B's first and
    last, leaving A's last x in one gap and B's y in another. Sliding the run
    (A's third x matched instead of its second) puts both in one gap, where
    the caller can pair them as one changed element instead of two unmatched.
    """
    if not pairs:
        return pairs
    # runs of consecutive pairs: [i, j, length]
    runs: list[list[int]] = []
    for i, j in pairs:
        if runs and runs[-1][0] + runs[-1][2] == i and runs[-1][1] + runs[-1][2] == j:
            runs[-1][2] += 1
        else:
            runs.append([i, j, 1])
    for n, run in enumerate(runs):
        i, j, length = run
        if length > MAX_SLIDE:
            continue
        before_a = i - (runs[n - 1][0] + runs[n - 1][2] if n else 0)
        before_b = j - (runs[n - 1][1] + runs[n - 1][2] if n else 0)
        after_a = (runs[n + 1][0] if n + 1 < len(runs) else len(a)) - (i + length)
        after_b = (runs[n + 1][1] if n + 1 < len(runs) else len(b)) - (j + length)
        if before_b and after_a and not after_b:
            # B's elements before the run, A's after it: slide the run down in A
            run[0] = i + _slide(a, i, length, after_a)
        elif before_a and after_b and not after_a:
            run[1] = j + _slide(b, j, length, after_b)
    return [(i + t, j + t) for i, j, length in runs for t in range(length)]


def _slide(keys: Sequence, start: int, length: int, room: int) -> int:
    """How far (0 to room) the run keys[start:start + length] can move down
    over equal keys: the furthest shift s with keys[t] == keys[t + s] all along."""
    for shift in range(min(room, MAX_SHIFT), 0, -1):
        if all(keys[start + t] == keys[start + t + shift] for t in range(length)):
            return shift
    return 0

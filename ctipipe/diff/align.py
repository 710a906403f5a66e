"""Align two sequences by a common subsequence, in time and memory near-linear
in their length whatever they hold.

Pure: sequences of hashable keys in, matched index pairs out. Used by ctidiff
to align two sessions' messages (and the items of two lists inside a message).

The way there, as git's patience and Myers diffs do it:
1. the common start and end are matched at once;
2. keys that occur exactly once in each sequence, in increasing order on both
   sides (a longest increasing subsequence), become anchors that cut the rest
   into small independent gaps;
3. each gap gets Myers' O(ND) diff, whose cost grows with the number of
   differences D, not with the length of the sequences.
Each gap is first matched greedily (`greedy`: a common subsequence, not
always the longest, in linear time); Myers then looks for a longer one only
when the greedy match may not be the longest, drawing on a `Budget` of steps
that grows with the length of what is aligned (STEPS_PER_ITEM per key, plus
STEPS_FLOOR once) and giving up when it is spent. So the result is a longest
common subsequence while the sequences differ little, and the time never
grows faster than their length (times a logarithm), whatever they hold:
sessions that share little, or repeat a few messages in another order, get a
worse alignment, never a slower one.
"""
from __future__ import annotations

import bisect
import collections
from typing import Hashable, Sequence

# Myers' steps (an edit tried on one diagonal, or one key of a snake) allowed
# per key aligned: at most about 2 seconds of Python (0.5 to 1 µs a step) for
# 200,000 keys a side. Myers needs about D*D/2 steps for D insertions plus
# deletions, so two sequences of n keys each get Myers' longest alignment up to
# about sqrt(20 n) differences (2,000 at n = 200,000), the greedy one beyond.
STEPS_PER_ITEM = 5
# ... plus this many once per budget, so that small sequences are always
# aligned exactly (two of 1,000 keys even when they share nothing).
STEPS_FLOOR = 1_000_000

# The greedy matcher, at two keys that differ, looks at this many next
# occurrences of each key on the other side, and takes the one followed by
# the longest run of equal keys, counted up to CONFIRM: enough to tell a real
# resumption of the same messages from a chance match among repeated ones.
CANDIDATES = 4
CONFIRM = 8


class Budget:
    """The Myers steps one comparison may still take (see the module docstring).
    Share one among related calls (the gaps of one session) to bound their sum."""

    def __init__(self, floor: int | None = None) -> None:
        self.left = STEPS_FLOOR if floor is None else floor
        self.spent = 0  # Myers steps taken, for tests and the benchmark

    def grant(self, keys: int) -> None:
        """More work allowed, in proportion to `keys` more keys to align."""
        self.left += STEPS_PER_ITEM * keys


def common_pairs(a: Sequence[Hashable], b: Sequence[Hashable],
                 budget: Budget | None = None) -> list[tuple[int, int]]:
    """Index pairs (i, j), increasing in both, with a[i] == b[j]: a common subsequence
    (the longest one unless the budget ran out, see the module docstring).
    Time O((n + m) log(n + m)) plus the budget's steps; memory O(n + m) plus
    one Myers trace, itself bounded by the budget."""
    if budget is None:
        budget = Budget()
    budget.grant(len(a) + len(b))
    pairs: list[tuple[int, int]] = []
    _align(a, b, 0, len(a), 0, len(b), pairs, budget)
    return pairs


def _align(a, b, alo: int, ahi: int, blo: int, bhi: int, out: list, budget: Budget) -> None:
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
        found = _anchors(a, b, alo, ahi, blo, bhi)
        # 2. gaps between anchors, each aligned on its own
        for i, j in found:
            if alo < i and blo < j:
                out += _gap(a, b, alo, i, blo, j, budget)
            out.append((i, j))
            alo, blo = i + 1, j + 1
        if alo < ahi and blo < bhi:
            # 3. one gap
            out += _gap(a, b, alo, ahi, blo, bhi, budget)
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


def _gap(a, b, alo: int, ahi: int, blo: int, bhi: int, budget: Budget) -> list[tuple[int, int]]:
    """One gap: the greedy match, or Myers' longest one when it is better and affordable."""
    ga, gb = a[alo:ahi], b[blo:bhi]
    pairs = greedy(ga, gb)
    edits = len(ga) + len(gb) - 2 * len(pairs)
    # Each key more often on one side than on the other is an insertion or a
    # deletion at least: when the greedy match needs no more, it is a longest one.
    counts = collections.Counter(ga)
    counts.subtract(gb)
    fewest = sum(map(abs, counts.values()))
    if edits > fewest and fewest * fewest // 2 < budget.left:
        # Myers needs about D*D/2 steps; it is stopped when it has spent the budget.
        better = myers(ga, gb, edits - 1, budget)
        if better is not None:
            pairs = better
    return [(alo + i, blo + j) for i, j in pairs]


def myers(a: Sequence, b: Sequence, max_edits: int | None = None,
          budget: Budget | None = None) -> list[tuple[int, int]] | None:
    """A longest common subsequence as index pairs, by Myers' greedy O(ND) algorithm
    (E. Myers, "An O(ND) Difference Algorithm and Its Variations", 1986);
    None when more than max_edits insertions plus deletions are needed, or
    more steps than `budget` has left (the steps taken are spent either way)."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return []
    if max_edits is None:
        max_edits = n + m
    steps_left = budget.left if budget is not None else None
    steps = 0
    offset = max_edits + 1
    v = [0] * (2 * offset + 1)  # v[offset + k]: furthest x reached on diagonal k = x - y
    trace: list[list[int]] = []  # after each d, v for diagonals -d..d
    result = None
    for d in range(max_edits + 1):
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[offset + k - 1] < v[offset + k + 1]):
                x = v[offset + k + 1]  # down: one from b
            else:
                x = v[offset + k - 1] + 1  # right: one from a
            y = x - k
            start = x
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            steps += x - start
            v[offset + k] = x
            if x >= n and y >= m:
                trace.append(v[offset - d:offset + d + 1])
                result = _backtrack(trace, n, m)
                break
        if result is not None:
            break
        steps += d + 1
        trace.append(v[offset - d:offset + d + 1])
        if steps_left is not None and steps > steps_left:
            break
    if budget is not None:
        budget.left -= steps
        budget.spent += steps
    return result


def greedy(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int]]:
    """A common subsequence in O((n + m) log(n + m)) time, whatever the keys.

    Walks both sequences; where the keys differ, it tries skipping in A to one
    of the next CANDIDATES occurrences of b's key, in B to one of a's, or one
    on each side (a changed key), and takes the step followed by the longest
    run of equal keys (up to CONFIRM; a skip must be followed by a run as long
    as itself), the fewest keys left out on a tie. One key
    inserted, deleted or changed among many equal ones costs one step; what
    it misses is a better alignment that only a long look ahead would show.
    """
    n, m = len(a), len(b)
    where_a: dict = {}  # key -> its positions, in order
    for i, key in enumerate(a):
        where_a.setdefault(key, []).append(i)
    where_b: dict = {}
    for j, key in enumerate(b):
        where_b.setdefault(key, []).append(j)

    def run(i: int, j: int) -> int:
        length = 0
        while length < CONFIRM and i < n and j < m and a[i] == b[j]:
            i += 1
            j += 1
            length += 1
        return length

    pairs = []
    i = j = 0
    while i < n and j < m:
        if a[i] == b[j]:
            pairs.append((i, j))
            i += 1
            j += 1
            continue
        # (run, -edits, next i, next j): the best step from here. A skip is
        # only taken when the run after it is as long as the skip (or CONFIRM):
        # a chance match far ahead does not cost the keys it jumps over.
        best = (run(i + 1, j + 1), -2, i + 1, j + 1)
        places = where_a.get(b[j], ())
        at = bisect.bisect_right(places, i)
        for ia in places[at:at + CANDIDATES]:
            if ia - i > 1 and (ia + 1 >= n or j + 1 >= m or a[ia + 1] != b[j + 1]):
                continue  # a run of one cannot pay for a longer skip: no need to count it
            length = run(ia, j)
            if length >= min(ia - i, CONFIRM):
                best = max(best, (length, -(ia - i), ia, j))
        places = where_b.get(a[i], ())
        at = bisect.bisect_right(places, j)
        for jb in places[at:at + CANDIDATES]:
            if jb - j > 1 and (jb + 1 >= m or i + 1 >= n or a[i + 1] != b[jb + 1]):
                continue
            length = run(i, jb)
            if length >= min(jb - j, CONFIRM):
                best = max(best, (length, -(jb - j), i, jb))
        i, j = best[2], best[3]
    return pairs


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
    run = keys[start:start + length]
    for shift in range(min(room, MAX_SHIFT), 0, -1):
        if keys[start + shift:start + shift + length] == run:  # compared in C, at most MAX_SLIDE keys
            return shift
    return 0

"""ctidiff on hostile and awkward input, in-process: the alignment's work is
bounded by the sessions' length whatever they hold; exact numbers; NaN,
Infinity and null told apart; deep nesting and odd records are one line and
status 2, or compared as text; *_since fields are volatile."""
import json
import random
import signal

import pytest
from hypothesis import given, strategies as st

from ctipipe.diff import align
from ctipipe.diff import command
from ctipipe.diff import compare
from ctipipe.diff import sessions

pytestmark = pytest.mark.timeout(60)


class Key:
    """A key that counts the comparisons made with it."""

    compared = 0
    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        Key.compared += 1
        return self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _is_common_subsequence(pairs, a, b) -> bool:
    increasing = all(p[0] < q[0] and p[1] < q[1] for p, q in zip(pairs, pairs[1:]))
    return increasing and all(a[i] == b[j] for i, j in pairs)


def _repeated(rng, count, distinct=150):
    return [rng.randrange(distinct) for _ in range(count)]


def _edited(rng, keys, edits, distinct=150):
    """keys with `edits` insertions, deletions and changes at random places."""
    out = list(keys)
    for place in sorted(rng.sample(range(len(keys)), edits), reverse=True):
        what = rng.randrange(3)
        if what == 0:
            del out[place]
        elif what == 1:
            out.insert(place, distinct + place)  # a key seen nowhere else
        else:
            out[place] = distinct + len(keys) + place
    return out


# --- the alignment's work ---------------------------------------------------------

def test_sessions_that_share_nothing_cost_a_bounded_number_of_comparisons(monkeypatch):
    """150 messages repeated in another order on each side: no anchors, Myers
    cannot finish; the comparisons per key stay bounded (the quadratic fallback
    and the unbounded Myers pass made about 80 per key at 8,000 a side)."""
    monkeypatch.setattr(align, "STEPS_FLOOR", 10_000)
    rng = random.Random(5)
    for count in (2000, 8000):
        a = [Key(k) for k in _repeated(rng, count)]
        b = [Key(k) for k in _repeated(rng, count)]
        Key.compared = 0
        pairs = align.common_pairs(a, b)
        assert _is_common_subsequence(pairs, a, b)
        assert Key.compared <= 20 * (len(a) + len(b)), count


def test_the_budget_bounds_myers_steps():
    rng = random.Random(6)
    a, b = _repeated(rng, 3000), _repeated(rng, 3000)
    budget = align.Budget(0)
    budget.grant(len(a) + len(b))
    allowed = budget.left
    assert align.myers(a, b, budget=budget) is None  # far too different for the steps allowed
    # one more round of diagonals than allowed at most
    assert allowed <= budget.spent <= allowed + 2 * len(a) + len(a) + len(b)


def test_a_budget_shared_by_many_gaps_bounds_their_sum():
    rng = random.Random(7)
    budget = align.Budget(1000)
    total = 0
    for _ in range(50):
        a, b = _repeated(rng, 200), _repeated(rng, 200)
        total += len(a) + len(b)
        assert _is_common_subsequence(align.common_pairs(a, b, budget), a, b)
    assert budget.spent <= 1000 + align.STEPS_PER_ITEM * total + 3 * 400


def test_sessions_that_differ_little_still_get_a_longest_alignment():
    rng = random.Random(8)
    a = _repeated(rng, 20_000)
    b = _edited(rng, a, 60)
    best = align.myers(a, b)
    assert len(align.common_pairs(a, b)) == len(best)


@pytest.mark.parametrize("edit", ["insert", "delete", "change"])
def test_greedy_finds_one_edit_among_repeated_keys(edit):
    rng = random.Random(9)
    a = _repeated(rng, 5000, distinct=3)
    b = list(a)
    if edit == "insert":
        b.insert(2500, 99)
    elif edit == "delete":
        del b[2500]
    else:
        b[2500] = 99
    pairs = align.greedy(a, b)
    assert _is_common_subsequence(pairs, a, b)
    assert len(pairs) == len(a) - (edit != "insert")


sequences = st.lists(st.sampled_from("abcde"), max_size=60)


@given(sequences, sequences)
def test_greedy_is_a_common_subsequence(a, b):
    assert _is_common_subsequence(align.greedy(a, b), a, b)


def test_one_large_message_whose_list_changed_throughout_is_bounded():
    """Two lists of 20,000 repeated items in another order (one large message):
    the list alignment spends at most its budget."""
    rng = random.Random(10)
    a = [{"hintstatus": str(k)} for k in _repeated(rng, 20_000)]
    b = [{"hintstatus": str(k)} for k in _repeated(rng, 20_001)]
    budget = align.Budget(10_000)
    changes = list(compare.differences({"list": a}, {"list": b}, budget=budget))
    assert changes
    assert budget.spent <= 10_000 + align.STEPS_PER_ITEM * (len(a) + len(b)) + 3 * len(b)


# --- through the command, in-process -------------------------------------------------

def ctidiff(*argv: str, capsys) -> tuple[int, str, str]:
    """main(argv) in this process: status, standard output, standard error."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        status = command.main([*argv, "--color", "never"])
    finally:  # the command ignores late signals as it ends: not the test run's
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    out, err = capsys.readouterr()
    return status, out, err


def _tagged(path, *messages, conn=1):
    with open(path, "w") as file:
        for n, message in enumerate(messages):
            text = message if isinstance(message, str) else json.dumps(message)
            file.write(f'{{"ts":{n},"conn":{json.dumps(conn)},"from":"server","msg":{text}}}\n')
    return str(path)


def _classic(path, text):
    path.write_text(text)
    return str(path)


def test_a_classic_file_of_900_brackets_is_compared_as_text(tmp_path, capsys):
    deep = _classic(tmp_path / "deep", "[" * 900 + "]" * 900 + "\n")
    other = _classic(tmp_path / "other", '{"class": "x"}\n')
    status, out, err = ctidiff(deep, other, capsys=capsys)
    assert (status, err) == (1, "")
    assert "(not JSON)" in out
    open_only = _classic(tmp_path / "open", "[" * 900 + "\n")
    assert ctidiff(open_only, other, capsys=capsys)[::2] == (1, "")
    assert ctidiff(deep, deep, capsys=capsys) == (0, "", "")


def test_a_tagged_message_nested_deeper_than_python_recurses_is_compared_as_text(tmp_path, capsys):
    a = _tagged(tmp_path / "a.jsonl", "[" * 1000 + "1" + "]" * 1000)
    b = _tagged(tmp_path / "b.jsonl", "[" * 1000 + "2" + "]" * 1000)
    status, out, err = ctidiff(a, b, capsys=capsys)
    assert (status, err) == (1, "")
    assert ctidiff(a, a, capsys=capsys) == (0, "", "")


@pytest.mark.parametrize("conn", [[1], {"n": 1}, "1", 1.5, True, None])
def test_a_record_whose_conn_is_not_a_number_is_skipped(tmp_path, capsys, conn):
    bad = _tagged(tmp_path / "bad.jsonl", {"class": "x"}, conn=conn)
    status, out, err = ctidiff(bad, bad, capsys=capsys)
    assert status == 2 and out == ""
    assert err.endswith("holds no session (no record with a conn)\n") and "Error" not in err
    good = _tagged(tmp_path / "good.jsonl", {"class": "x"})
    with open(good, "a") as file, open(bad) as lines:
        file.write(lines.read())
    assert ctidiff(good, good, capsys=capsys)[0] == 0


@pytest.mark.parametrize("a,b", [("NaN", "null"), ("Infinity", "null"), ("-Infinity", "Infinity"),
                                 ("NaN", "Infinity"), ("1e400", "null"), ("NaN", '"NaN"')])
def test_nan_infinity_and_null_are_not_equal(tmp_path, capsys, a, b):
    one = _classic(tmp_path / "a", f'{{"class": "x", "v": {a}}}\n')
    two = _classic(tmp_path / "b", f'{{"class": "x", "v": {b}}}\n')
    status, out, err = ctidiff(one, two, capsys=capsys)
    assert (status, err) == (1, "")
    assert f"- v: {a if a != '1e400' else 'Infinity'}" in out
    assert ctidiff(one, one, capsys=capsys) == (0, "", "")


@pytest.mark.parametrize("a,b", [(2 ** 64 + 1, 2 ** 64 + 2), (-(2 ** 70), -(2 ** 70) - 1),
                                 (10 ** 30, 10 ** 30 + 1), (2 ** 64 + 1, float(2 ** 64)),
                                 (-(10 ** 19) + 1, -(10 ** 19) + 2)])
def test_different_integers_beyond_64_bits_are_different(tmp_path, capsys, a, b):
    one = _tagged(tmp_path / "a.jsonl", {"class": "x", "v": a})
    two = _tagged(tmp_path / "b.jsonl", {"class": "x", "v": b})
    status, out, err = ctidiff(one, two, capsys=capsys)
    assert (status, err) == (1, "")
    assert f"- v: {a}" in out and f"+ v: {json.dumps(b)}" in out
    assert ctidiff(one, one, capsys=capsys) == (0, "", "")
    classic_a = _classic(tmp_path / "ca", json.dumps({"class": "x", "v": a}, indent=4) + "\n")
    classic_b = _classic(tmp_path / "cb", json.dumps({"class": "x", "v": b}, indent=4) + "\n")
    assert ctidiff(classic_a, classic_b, capsys=capsys)[0] == 1
    assert compare.content_key({"v": a}) != compare.content_key({"v": b})


def test_since_fields_are_volatile_unless_all_fields(tmp_path, capsys):
    def status(since, other):
        return {"class": "getlist", "function": "updatestatus", "listname": "agents", "tid": 1,
                "status": {"availability": "available", "availability_since": since,
                           "queue": {"member_since": other}}}
    a = _tagged(tmp_path / "a.jsonl", status(1764262479.12, 5), {"class": "x", "online_since": 1})
    b = _tagged(tmp_path / "b.jsonl", status(1764262999.5, 6), {"class": "x", "online_since": 2})
    assert ctidiff(a, b, capsys=capsys) == (0, "", "")
    status_, out, _ = ctidiff(a, b, "--all-fields", capsys=capsys)
    assert status_ == 1
    assert "status.availability_since" in out and "status.queue.member_since" in out
    assert "online_since" in out


@pytest.mark.parametrize("message", [
    {"a_since": 1, "b": 2}, {"b": {"c_since": 1}}, {"b": "value_since"}, {"x\\_since": 1},
    {"b": [{"d_since": 1}]}, {"timenow": 1, "e_since": 3},
])
def test_strip_of_since_fields_takes_the_quick_way_only_when_it_gives_the_same(message):
    ignore = compare.Ignore(list(compare.VOLATILE), compare.VOLATILE_SUFFIXES)
    text = json.dumps(message, separators=(",", ":")).encode()
    slow = ignore.strip(json.loads(text))
    assert ignore.strip(json.loads(text), text) == slow
    assert not any(key.endswith("_since") for key in _keys(slow))


def _keys(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def test_a_regular_file_is_read_again_by_offset_and_a_pipe_is_kept(tmp_path):
    path = _tagged(tmp_path / "a.jsonl", {"class": "x", "n": 1}, {"class": "y", "n": 2})
    ignore = compare.Ignore(list(compare.VOLATILE))
    capture = sessions.load(path, None, ("server",), ignore, {})
    messages = capture.sides["server"]
    assert messages.texts == [] and list(messages.offsets) == [0, len(open(path).readline())]
    assert capture.value("server", 1) == (False, {"class": "y", "n": 2})
    # a file rewritten under us is one line, not a wrong comparison
    (tmp_path / "a.jsonl").write_text("nothing\n" * 3)
    with pytest.raises(Exception, match="changed while it was being compared"):
        capture.value("server", 1)
    capture.close()

"""ctidiff: golden pairs, the alignment and comparison logic in-process, properties,
bad inputs and terminal safety through the real command."""
import copy
import json
import os
import pty
import random
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, strategies as st

from ctipipe.diff import align
from ctipipe.diff import compare
from ctipipe.diff import pairing
from ctipipe.diff import sessions
import inprocess
from helpers import WAIT, Relay, command, exchange

GOLDEN = Path(__file__).parent / "golden" / "diff"
MESSAGES = [json.loads(line) for line in (GOLDEN / "messages.jsonl").read_text().splitlines()]


def cases():
    for line in (GOLDEN / "cases.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, args, status = (part.strip() for part in line.split("|"))
            yield name, args.split(), int(status)


def ctidiff(*args: str, cwd=GOLDEN, env=None, data: bytes = b"") -> inprocess.Result:
    """The command in this process (its output, errors and status); what only a
    process shows (a closed pipe, Ctrl-C) is tested on real processes below."""
    return inprocess.run("ctidiff", *args, cwd=cwd, env=env, data=data)


# --- golden pairs ----------------------------------------------------------------

@pytest.mark.parametrize("name,args,status", list(cases()), ids=[c[0] for c in cases()])
def test_golden(name, args, status):
    result = ctidiff(*args, "--color", "never")
    assert result.stderr == b""
    assert result.returncode == status
    assert result.stdout.decode() == (GOLDEN / f"{name}.out").read_text()


def test_equal_sessions_print_nothing():
    for name, _, status in cases():
        assert (status == 0) == ((GOLDEN / f"{name}.out").read_bytes() == b""), name


def test_full_shows_every_field_and_whole_values():
    cut = ctidiff("a.jsonl", "large-a.jsonl", "--from", "server", "--color", "never").stdout.decode()
    full = ctidiff("a.jsonl", "large-a.jsonl", "--from", "server", "--color", "never", "--full")
    assert "more changed fields" in cut and "more changed fields" not in full.stdout.decode()
    assert full.returncode == 1
    added = [line for line in full.stdout.decode().splitlines() if line.startswith("+ list.")]
    removed = [line for line in full.stdout.decode().splitlines() if line.startswith("- list.")]
    # 3000 ids against 9: the 4 in the common order stay, the rest is added or removed
    assert len(added) == 3000 - 4 and len(removed) == 9 - 4
    whole = ctidiff("large-a.jsonl", "a.jsonl", "--from", "client", "--all-fields", "--full",
                    "--ignore", "commandid", "--color", "never")
    assert whole.returncode == 0


def test_live_captures_of_two_servers_compare(server, tmp_path):
    """The workflow the tool is for: the same client talks to two servers through ctirelay."""
    client_says = b"".join(orjson.dumps(r["msg"]) + b"\n" for r in MESSAGES
                           if r["from"] == "client" and "msg" in r)
    replies = [r["msg"] for r in MESSAGES if r["from"] == "server" and "msg" in r]
    newer = [dict(m) for m in replies]
    newer[3]["list"] = ["11", "12", "14"]  # the new server lists fewer users
    del newer[10]  # and does not send one message
    for name, said in (("old.jsonl", replies), ("new.jsonl", newer)):
        relay = Relay(server.port)
        client = relay.connect()
        exchange(client, server.accept(), client_says,
                 b"".join(orjson.dumps(m) + b"\n" for m in said))
        assert relay.finish() == 0, relay.err
        (tmp_path / name).write_bytes(relay.out)
    result = ctidiff("old.jsonl", "new.jsonl", "--color", "never", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout.decode()
    assert '- list.3: "17"' in out
    assert out.count("@@") == 2 * 2  # one changed message, one only in A
    assert "server: 29 aligned (28 equal, 1 changed), 1 only in A, 0 only in B" in out
    assert "client: 19 aligned (19 equal, 0 changed), 0 only in A, 0 only in B" in out


def test_classic_files_written_by_ctisplit(tmp_path):
    for stream, prefix in (("a.jsonl", "a"), ("nested.jsonl", "b")):
        split = inprocess.run("ctisplit", str(tmp_path / f"{prefix}-client"),
                              str(tmp_path / f"{prefix}-server"), data=(GOLDEN / stream).read_bytes())
        assert split.returncode == 0, split.stderr
    result = ctidiff("a-server", "b-server", "--color", "never", cwd=tmp_path)
    assert result.returncode == 1
    expected = (GOLDEN / "classic.out").read_text().replace("classic-a-server", "a-server")
    assert result.stdout.decode() == expected.replace("classic-b-server", "b-server")
    assert ctidiff("a-client", "b-client", cwd=tmp_path).returncode == 0


# --- bad inputs: one line, exit status 2 -----------------------------------------------

def _write(tmp_path, name, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return name


BAD_FILES = {
    "empty": (b"", "empty"),
    "text": (b"hello, this is a note\nnot a capture\n", "not a tagged stream"),
    "binary": (bytes(range(256)) * 4, "not a tagged stream"),
    "start only": (b'{"ts":1.0,"event":"start","stream":1,"producer":"ctirelay 0.1.0"}\n', "no session"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_file_that_is_not_a_capture_is_one_line(tmp_path, kind):
    data, words = BAD_FILES[kind]
    _write(tmp_path, "bad", data)
    (tmp_path / "a.jsonl").write_bytes((GOLDEN / "a.jsonl").read_bytes())
    for args in (("bad", "a.jsonl"), ("a.jsonl", "bad")):
        result = ctidiff(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stdout == b""
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ctidiff: error: ") and words in lines[0], lines


@pytest.mark.parametrize("args,words", [
    (("missing.jsonl", "a.jsonl"), "cannot read missing.jsonl: No such file or directory"),
    (("a.jsonl", "."), "cannot read .: Is a directory"),
    (("a.jsonl", "a.jsonl", "--conn", "7"), "a.jsonl has no session 7 (its sessions: 1)"),
    (("two-sessions.jsonl", "two-sessions.jsonl", "--conn", "1:3"), "has no session 3 (its sessions: 1, 2)"),
    (("classic-a-server", "a.jsonl"), "say which side of it to compare with --from"),
])
def test_trouble_is_one_line_and_status_2(args, words):
    result = ctidiff(*args)
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


@pytest.mark.parametrize("args", [
    ("a.jsonl",), ("a.jsonl", "a.jsonl", "--conn", "x"), ("a.jsonl", "a.jsonl", "--conn", "1:2:3"),
    ("a.jsonl", "a.jsonl", "--conn", "-1"), ("a.jsonl", "a.jsonl", "--ignore", "config..x"),
    ("a.jsonl", "a.jsonl", "--from", "both"), ("a.jsonl", "a.jsonl", "--color", "sometimes"),
    ("a.jsonl", "a.jsonl", "b.jsonl"),
])
def test_bad_arguments_are_status_2(args):
    result = ctidiff(*args)
    assert result.returncode == 2
    assert result.stdout == b""
    assert len(result.stderr.decode().splitlines()) == 1 and "Traceback" not in result.stderr.decode()


def test_malformed_lines_are_reported_and_skipped(tmp_path):
    lines = (GOLDEN / "a.jsonl").read_bytes().splitlines(keepends=True)
    lines.insert(20, b"{half a record\n")
    lines.insert(30, b"[1, 2]\n")
    _write(tmp_path, "damaged.jsonl", b"".join(lines))
    result = ctidiff(str(GOLDEN / "a.jsonl"), "damaged.jsonl", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        "ctidiff: damaged.jsonl line 21: not a record; skipped",
        "ctidiff: damaged.jsonl line 31: not a record; skipped"]


def test_help_has_an_example():
    result = ctidiff("--help")
    assert result.returncode == 0
    assert b"example:" in result.stdout and b"ctidiff before.jsonl after.jsonl" in result.stdout


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen(command("ctidiff", "a.jsonl", "large-a.jsonl", "--full", "--color", "never"),
                            cwd=GOLDEN, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(WAIT) == 1  # the differences were found; showing them was cut short
    assert proc.stderr.read() == b""


def _has_begun_reading(pid: int, path: Path) -> bool:
    """Has the process opened `path` and read into it?"""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    if int(info.readline().split()[1]) > 0:
                        return True
        except (OSError, ValueError, IndexError):
            pass
    return False


def test_ctrl_c_is_never_equal(tmp_path):
    """A comparison stopped by Ctrl-C must not say "equal" (0) to a script."""
    record = b'{"ts":1.0,"conn":1,"from":"server","msg":{"class":"x","n":%d}}\n'
    records = b"".join(record % n for n in range(300_000))
    _write(tmp_path, "a.jsonl", records)
    _write(tmp_path, "b.jsonl", records[:records.rindex(b'"n":')] + b'"m":299999}}\n')
    proc = subprocess.Popen(command("ctidiff", "a.jsonl", "b.jsonl"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT
    # into the loading of 600,000 records (it takes seconds)
    while not _has_begun_reading(proc.pid, tmp_path / "a.jsonl") and proc.poll() is None:
        assert time.monotonic() < deadline, "ctidiff never began reading"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=WAIT * 6)  # (a loaded machine is slow to unwind 600,000 records)
    assert proc.returncode in (1, 2, -signal.SIGINT)  # 1 if it had finished: they differ


# --- what reaches the terminal ---------------------------------------------------

HOSTILE = "\x1b]0;owned\x07\x9b2J\x7f\u202eevil\u2066"


def test_wire_text_cannot_drive_the_terminal(tmp_path):
    def stream(records):
        return b"".join(orjson.dumps({"ts": 1.0, "conn": 1, "from": "server", **r}) + b"\n" for r in records)
    a = [{"msg": {"class": HOSTILE, HOSTILE: 1, "text": "x"}}, {"raw": "plain"},
         {"msg": {"class": "only" + HOSTILE}}]
    b = [{"msg": {"class": HOSTILE, HOSTILE: 2, "text": HOSTILE}}, {"raw": "plain" + HOSTILE},
         {"msg": {"class": "other", "k": HOSTILE}}]
    _write(tmp_path, "a", stream(a))
    _write(tmp_path, "b", stream(b))
    for args in ((), ("--json",), ("--full",)):
        result = ctidiff("a", "b", "--color", "never", *args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        text = result.stdout.decode()
        assert "evil" in text and "owned" in text
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text), text
        if args == ("--json",):
            for line in text.splitlines():  # still JSON, and the same values
                json.loads(line)
            assert HOSTILE in json.loads(text.splitlines()[0])["signature"]


def _on_a_terminal(args, env) -> bytes:
    controller, terminal = pty.openpty()
    try:
        result = inprocess.run("ctidiff", *args, cwd=GOLDEN, stdout=terminal, env=env)
        out = b""
        while select.select([controller], [], [], 0)[0]:  # (all of it is written by now)
            out += os.read(controller, 1 << 16)
    finally:
        os.close(controller)
        os.close(terminal)
    assert result.returncode == 1, result.stderr
    return out


def test_colours_on_a_terminal_unless_no_color():
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    assert b"\x1b[31m- data.status: 3" in _on_a_terminal(("a.jsonl", "nested.jsonl"), env)
    assert b"\x1b[" not in _on_a_terminal(("a.jsonl", "nested.jsonl"), {**env, "NO_COLOR": "1"})
    assert b"\x1b[" not in _on_a_terminal(("a.jsonl", "nested.jsonl", "--color", "never"), env)
    assert b"\x1b[" not in ctidiff("a.jsonl", "nested.jsonl", env=env).stdout
    assert b"\x1b[32m+ data.status: 4" in ctidiff("a.jsonl", "nested.jsonl", "--color", "always").stdout


# --- the logic in-process -------------------------------------------------------

def _lcs_length(a, b) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous, row = row, [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
    return row[-1]


def _is_common_subsequence(pairs, a, b) -> bool:
    increasing = all(p[0] < q[0] and p[1] < q[1] for p, q in zip(pairs, pairs[1:]))
    return increasing and all(a[i] == b[j] for i, j in pairs)


sequences = st.lists(st.sampled_from("abcde"), max_size=40)


@given(sequences, sequences)
def test_myers_finds_a_longest_common_subsequence(a, b):
    pairs = align.myers(a, b, len(a) + len(b))
    assert _is_common_subsequence(pairs, a, b)
    assert len(pairs) == _lcs_length(a, b)


@given(sequences, sequences)
def test_common_pairs_is_a_common_subsequence_even_past_the_edit_limit(a, b):
    assert _is_common_subsequence(align.common_pairs(a, b), a, b)
    saved = align.STEPS_PER_ITEM
    align.STEPS_PER_ITEM = 0  # with no steps to spend, the greedy matcher takes over
    try:
        assert _is_common_subsequence(align.common_pairs(a, b, align.Budget(0)), a, b)
    finally:
        align.STEPS_PER_ITEM = saved


def test_alignment_of_long_sequences_is_not_quadratic():
    rng = random.Random(3)
    a = [rng.randrange(30) for _ in range(200_000)]
    b = list(a)
    for _ in range(300):
        b.insert(rng.randrange(len(b)), 99)
    pairs = align.common_pairs(a, b)  # a quadratic table would need 4e10 cells
    assert len(pairs) == len(a)


def test_differences_name_paths_and_both_values():
    a = {"class": "x", "config": {"lastcall": "1002", "nested": {"deep": [1, 2, {"k": True}]}}, "gone": 1}
    b = {"class": "x", "config": {"lastcall": "1003", "nested": {"deep": [1, 2, {"k": 1}]}}, "new": None}
    found = [(compare.path_text(pa), old, new) for pa, pb, old, new in compare.differences(a, b)]
    assert found == [("config.lastcall", "1002", "1003"), ("config.nested.deep.2.k", True, 1),
                     ("gone", 1, compare.MISSING), ("new", compare.MISSING, None)]
    assert list(compare.differences({"n": 1}, {"n": 1.0})) == []


def test_list_items_with_an_id_are_matched_by_id():
    a = {"results": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]}
    b = {"results": [{"id": 3, "v": "c"}, {"id": 1, "v": "A"}, {"id": 4, "v": "d"}]}
    found = [(compare.path_text(pa), old, new) for pa, pb, old, new in compare.differences(a, b)]
    assert found == [("results[id=1].v", "a", "A"), ("results[id=2]", {"id": 2, "v": "b"}, compare.MISSING),
                     ("results[id=4]", compare.MISSING, {"id": 4, "v": "d"})]


def test_one_item_inserted_in_a_list_is_one_difference():
    a = {"list": [str(n) for n in range(500)]}
    b = {"list": a["list"][:250] + ["new"] + a["list"][250:]}
    found = [(compare.path_text(pa), compare.path_text(pb), new) for pa, pb, old, new in compare.differences(a, b)]
    assert found == [("list.250", "list.250", "new")]


def test_ignore_bare_keys_anywhere_and_paths_through_lists():
    ignore = compare.Ignore(["timenow", "results.relations.user_id", "config.lastcall"])
    message = {"timenow": 1, "config": {"lastcall": 2, "timenow": 3, "keep": 4},
               "results": [{"relations": {"user_id": 5, "agent_id": 6}}], "lastcall": 7}
    assert ignore.strip(message) == {"config": {"keep": 4}, "results": [{"relations": {"agent_id": 6}}],
                                     "lastcall": 7}
    assert compare.Ignore(["results.0.relations.user_id"]).strip(message)["results"][0]["relations"] == \
        {"agent_id": 6}


json_keys = st.sampled_from(["timenow", "ts", "class", "status", "config", "a.b", "commandid", "x", "tid"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["timenow", "ts", "\"ts\"", "a"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4),
    max_leaves=15)


@given(st.dictionaries(json_keys, json_values, max_size=6))
def test_strip_takes_the_quick_way_only_when_it_gives_the_same(message):
    for fields in (list(compare.VOLATILE), ["status", "config.x"], ["a.b"]):
        ignore = compare.Ignore(fields)
        expected = ignore._strip(message, ())
        assert ignore.strip(copy.deepcopy(message), orjson.dumps(message)) == expected


# --- properties of whole sessions -------------------------------------------------

def _session(records) -> bytes:
    lines = [orjson.dumps({"ts": 1.0, "conn": 1, "event": "open", "client": "c", "server": "s"})]
    for n, record in enumerate(records):
        lines.append(orjson.dumps({"ts": 1.0 + n, "conn": 1, **record}))
    return b"\n".join(lines) + b"\n"


def _compare(a_records, b_records, fields=compare.VOLATILE):
    """The items and counts of both sides, through the files as ctidiff reads them."""
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, "a"), os.path.join(folder, "b")]
        for path, records in zip(paths, (a_records, b_records)):
            with open(path, "wb") as out:
                out.write(_session(records))
        ignore = compare.Ignore(list(fields))
        kinds: dict = {}
        a, b = (sessions.load(path, None, sessions.SIDES, ignore, kinds) for path in paths)
        items, counts = [], {}
        for side in sessions.SIDES:
            found, counts[side] = pairing.compare_side(a, b, side, side, ignore, side)
            items += found
        return items, counts


def _volatile_changes(rng, value, depth=0):
    """The value with volatile fields changed, added or removed at any depth."""
    if type(value) is dict:
        value = {k: _volatile_changes(rng, v, depth + 1) for k, v in value.items()}
        for key in compare.VOLATILE:
            action = rng.choice(["keep", "keep", "change", "drop"])
            if action == "change":
                value[key] = rng.choice([rng.randrange(2 ** 31), rng.random() * 1e9, "x" * rng.randrange(5),
                                         None, [1, {"timenow": 2}]])
            elif action == "drop":
                value.pop(key, None)
    elif type(value) is list and depth < 4:
        value = [_volatile_changes(rng, v, depth + 1) for v in value]
    return value


def _shake(rng, records):
    return [dict(r, msg=_volatile_changes(rng, r["msg"])) if "msg" in r else r for r in records]


@given(st.randoms(use_true_random=False))
def test_a_session_equals_itself_after_volatile_changes(rng):
    items, counts = _compare(MESSAGES, _shake(rng, MESSAGES))
    assert items == []
    assert sum(c.equal for c in counts.values()) == len(MESSAGES)


pool = st.sampled_from(MESSAGES) | st.builds(
    lambda side, cls, extra: {"from": side, "msg": {"class": cls, **extra}},
    st.sampled_from(sessions.SIDES), st.sampled_from(["getlist", "keepalive", "chitchat", "new"]),
    st.dictionaries(st.sampled_from(["tid", "status", "text"]), st.integers(0, 3), max_size=2))


@given(st.lists(st.tuples(st.integers(0, len(MESSAGES)), pool), min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_k_inserted_messages_are_k_only_in_b(insertions, rng):
    inserted = list(MESSAGES)
    for position, record in insertions:
        inserted.insert(min(position, len(inserted)), record)
    items, counts = _compare(MESSAGES, _shake(rng, inserted))
    assert [item.kind for item in items] == [pairing.ONLY_B] * len(insertions)
    assert sum(c.only_b for c in counts.values()) == len(insertions)


@given(sequences, sequences)
def test_join_gaps_keeps_a_common_subsequence_of_the_same_length(a, b):
    pairs = align.common_pairs(a, b)
    joined = align.join_gaps(pairs, a, b)
    assert len(joined) == len(pairs) and _is_common_subsequence(joined, a, b)


def test_one_changed_message_among_identical_ones_is_one_change():
    """Runs of identical messages leave Myers a choice of matches; whichever it
    takes, a changed message is one change, also with a deletion nearby."""
    keepalive = {"from": "client", "msg": {"class": "keepalive", "commandid": 1}}
    dial = {"from": "client", "msg": {"class": "ipbxcommand", "command": "dial"}}
    a = [keepalive, keepalive, dial, keepalive, keepalive, dial, keepalive]
    for changed in range(len(a)):
        for deleted in range(len(a)):
            if a[changed] is not keepalive or deleted == changed:
                continue
            b = list(a)
            b[changed] = {"from": "client", "msg": {"class": "keepalive", "late": True}}
            del b[deleted]
            items, counts = _compare(a, b)
            # (which of two identical messages is the one deleted cannot be told)
            found = sorted((item.kind, json.dumps(a[item.a])) for item in items)
            assert found == sorted([(pairing.CHANGED, json.dumps(a[changed])),
                                    (pairing.ONLY_A, json.dumps(a[deleted]))]), (changed, deleted)


def test_a_pipe_and_standard_input_are_read_like_files(tmp_path):
    # The loader read the first line, then sought back to the start: a pipe
    # (`<(ctistrip x < a.jsonl)`, `cat a | ctidiff - b`) failed "cannot read ...: None".
    expected = ctidiff("a.jsonl", "inserted.jsonl", "--color", "never")
    assert expected.returncode == 1
    fifo = tmp_path / "a.fifo"
    os.mkfifo(fifo)

    def feed():
        try:
            with open(fifo, "wb") as pipe:
                pipe.write((GOLDEN / "a.jsonl").read_bytes())
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        through_fifo = ctidiff(str(fifo), "inserted.jsonl", "--color", "never")
    finally:
        if writer.is_alive():  # never opened for reading: let the writer go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(WAIT)
    assert through_fifo.returncode == 1 and through_fifo.stderr == b"", through_fifo.stderr
    assert through_fifo.stdout == expected.stdout.replace(b"a.jsonl", str(fifo).encode())
    from_stdin = ctidiff("-", "inserted.jsonl", "--color", "never",
                         data=(GOLDEN / "a.jsonl").read_bytes())
    assert from_stdin.returncode == 1 and from_stdin.stderr == b"", from_stdin.stderr
    assert from_stdin.stdout == expected.stdout.replace(b"a.jsonl", b"-")
    both = ctidiff("-", "-")
    assert both.returncode == 2 and b"cannot both be standard input" in both.stderr


def test_a_file_without_newlines_is_refused_in_bounded_memory():
    result = ctidiff("/dev/zero", "a.jsonl")
    assert result.returncode == 2
    assert result.stderr == b"ctidiff: error: /dev/zero line 1 is longer than 64 MiB: not a capture\n"


def test_a_field_that_is_not_utf8_is_a_usage_error():
    # (as Python gives a process the bytes of its command line)
    result = ctidiff("a.jsonl", "inserted.jsonl", "--ignore", os.fsdecode(b"\xff"))
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"not UTF-8" in result.stderr

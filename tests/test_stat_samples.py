"""ctistat --samples, --csv and the totals over sessions, against figures computed by hand."""
import csv
import io
import json
from pathlib import Path

import orjson
import pytest

from ctipipe.stages import replies, stats
import inprocess

GOLDEN = Path(__file__).parent / "golden"


def feed(stat: stats.Stat, records: list[dict]) -> bytes:
    """What the stage writes for these records, as run_stage would write it."""
    out = []
    for record in records:
        written = stat.handle(record, orjson.dumps(record))
        if written is not None:
            out.append(written + b"\n")
    summary = stat.finish()
    return b"".join(out) + (summary or b"")


def msg(ts, conn, side, message, size=10):
    return {"ts": ts, "conn": conn, "from": side, "size": size, "msg": message}


def event(ts, conn, name, **fields):
    return {"ts": ts, **({"conn": conn} if conn is not None else {}), "event": name, **fields}


def close(ts, conn, by="client", client=30, server=30, **fields):
    return event(ts, conn, "close", by=by, bytes={"client": client, "server": server},
                 reads={"client": 1, "server": 1}, duration=1.0, **fields)


def session(conn, t0, latencies, by="client", extra=()):
    """A session: login_id (2.x, no replyid), then one getlist per latency
    (replyid), then an ipbxcommand never answered."""
    records = [event(t0, conn, "open", client=f"10.0.0.{conn}:4000", server="xivo:5003"),
               msg(t0 + 0.001, conn, "client", {"class": "login_id", "commandid": 100}),
               msg(t0 + 0.003, conn, "server", {"class": "login_id", "sessionid": "x"})]
    t = t0 + 0.01
    for n, latency in enumerate(latencies):
        records.append(msg(t, conn, "client", {"class": "getlist", "function": "listid",
                                               "commandid": n + 1}))
        records.append(msg(t + latency, conn, "server", {"class": "getlist", "replyid": n + 1}))
        t += 1.0
    records.append(msg(t, conn, "client", {"class": "ipbxcommand", "commandid": "a,b"}))
    records += list(extra)
    records.append(close(t + 0.5, conn, by=by))
    return records


def test_samples_one_json_line_per_request_as_replies_come():
    out = feed(stats.Stat(samples="json"), session(1, 100.0, [0.25, 0.5]))
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {"conn": 1, "class": "login_id", "commandid": 100, "request_ts": 100.001,
         "reply_ts": 100.003, "latency": 0.002},
        {"conn": 1, "class": "getlist", "function": "listid", "commandid": 1,
         "request_ts": 100.01, "reply_ts": 100.26, "latency": 0.25},
        {"conn": 1, "class": "getlist", "function": "listid", "commandid": 2,
         "request_ts": 101.01, "reply_ts": 101.51, "latency": 0.5},
        # unanswered: known at the session's close
        {"conn": 1, "class": "ipbxcommand", "commandid": "a,b", "request_ts": 102.01,
         "reply_ts": None, "latency": None}]


def test_samples_are_written_as_soon_as_the_reply_is_read():
    stat = stats.Stat(samples="json")
    records = session(1, 100.0, [0.25])
    written = [stat.handle(record, b"") for record in records[:3]]
    assert written[:2] == [None, None] and json.loads(written[2])["class"] == "login_id"


def test_csv_has_a_header_and_quotes_what_needs_it():
    out = feed(stats.Stat(samples="csv"), session(1, 100.0, [0.25]))
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows == [
        ["conn", "class", "function", "commandid", "request_ts", "reply_ts", "latency"],
        ["1", "login_id", "", "100", "100.001000", "100.003000", "0.002"],
        ["1", "getlist", "listid", "1", "100.010000", "100.260000", "0.25"],
        ["1", "ipbxcommand", "", "a,b", "101.010000", "", ""]]
    assert out.splitlines()[3] == b'1,ipbxcommand,,"a,b",101.010000,,'


def test_csv_of_sessions_without_requests_is_its_header():
    records = [event(1.0, 1, "open"), msg(1.1, 1, "client", {"class": "keepalive"}), close(2.0, 1)]
    assert feed(stats.Stat(samples="csv"), records) == (
        b"conn,class,function,commandid,request_ts,reply_ts,latency\n")


def test_samples_give_the_same_figures_as_the_summary():
    data = (GOLDEN / "tls-login.jsonl").read_bytes()
    records = [orjson.loads(line) for line in data.splitlines()]
    samples = [json.loads(line) for line in feed(stats.Stat(samples="json"), records).splitlines()]
    summaries = [json.loads(line) for line in feed(stats.Stat(as_json=True), records).splitlines()]
    pooled = summaries[-1]["totals"]["latency"]
    for name, row in pooled.items():
        mine = [s["latency"] * 1000 for s in samples if s["class"] == name and s["latency"] is not None]
        assert len(mine) == row["count"]
        assert (sum(1 for s in samples if s["class"] == name and s["latency"] is None)
                == row["no_reply"] + row["no_reply_expected"])
        if mine:
            assert replies.nearest_rank(sorted(mine), 0.5) == pytest.approx(row["median_ms"], abs=1e-3)


# --- totals -----------------------------------------------------------------------

def load_test():
    """Four clients: one completes, one is closed by the server, one loses
    records to a gap, one never opens (the server could not be reached)."""
    return (session(1, 100.0, [0.001, 0.002, 0.003])
            + session(2, 100.2, [0.004, 0.005], by="server")
            + session(3, 100.4, [0.006, 0.007, 0.008, 0.009, 0.010],
                      extra=[event(103.0, 3, "gap", lost=2)])
            + [event(101.0, 4, "error", error="cannot reach xivo:5003: Connection refused")])


def test_totals_count_sessions_by_outcome_and_pool_latency():
    summaries = [json.loads(line) for line in
                 feed(stats.Stat(as_json=True), load_test()).splitlines()]
    assert [s.get("conn") for s in summaries[:3]] == [1, 2, 3]
    totals = summaries[3]["totals"]
    assert len(summaries) == 4
    assert totals["sessions"] == 4
    assert totals["completed"] == 1
    assert totals["outcome"] == {"client": 2, "server": 1, "not relayed": 1}
    assert (totals["with_gap"], totals["lost"], totals["with_error"]) == (1, 2, 0)
    assert totals["messages"]["client"] == {"getlist": 10, "login_id": 3, "ipbxcommand": 3}
    # getlist over all sessions: 1..10 ms; nearest rank: p50 = 5th, p95 = p99 = 10th
    getlist = totals["latency"]["getlist"]
    assert getlist == {"count": 10, "median_ms": 5.0, "p95_ms": 10.0, "p99_ms": 10.0,
                       "max_ms": 10.0, "no_reply": 0, "no_reply_expected": 0}
    # ipbxcommand gets no reply by design (core/protocol.py)
    assert totals["latency"]["ipbxcommand"]["no_reply_expected"] == 3
    assert totals["latency"]["login_id"]["count"] == 3


def test_totals_block_ends_the_text():
    text = feed(stats.Stat(), load_test()).decode()
    block = text[text.index("=== Totals"):].splitlines()
    assert block[:4] == [
        "=== Totals: 4 sessions",
        "1 of 4 sessions completed (closed by the client, without an error or a gap)",
        "ended: 2 closed by the client, 1 closed by the server, 1 never opened (could not be relayed)",
        "1 session with records lost"]
    table = block[block.index("=== Reply latency by class, all sessions, ms"):]
    assert table[2].split() == ["getlist", "10", "5.000", "10.000", "10.000", "10.000", "0", "0"]


def test_one_session_has_no_totals_unless_asked():
    records = session(1, 100.0, [0.25])
    assert b"=== Totals" not in feed(stats.Stat(), records)
    only = feed(stats.Stat(totals="only"), records).decode()
    assert only.startswith("=== Totals: 1 session\n1 of 1 session completed")
    assert "=== Session" not in only


# --- a one-sided capture (issue: the client file of ctisave --jsonl) --------------

def one_sided():
    return [record for record in session(1, 100.0, [0.25, 0.5]) if record.get("from") != "server"]


def test_a_one_sided_capture_says_the_server_side_is_absent():
    [summary] = [json.loads(line) for line in feed(stats.Stat(as_json=True), one_sided()).splitlines()]
    assert summary["absent"] == "server" and summary["latency"] == {}
    text = feed(stats.Stat(), one_sided()).decode()
    assert "no reply" not in text
    assert ("=== Reply latency: no server messages in the input (a one-sided capture, such as "
            "ctisplit --jsonl's client file): not measured") in text


def test_a_server_that_said_nothing_leaves_requests_without_reply():
    records = [r if r.get("event") != "close" else close(103.0, 1, server=0) for r in one_sided()]
    [summary] = [json.loads(line) for line in feed(stats.Stat(as_json=True), records).splitlines()]
    assert "absent" not in summary
    assert summary["latency"]["getlist"]["no_reply"] == 2


def test_samples_of_a_one_sided_capture_are_none_and_said(capfd):
    assert feed(stats.Stat(samples="json"), one_sided()) == b""
    assert capfd.readouterr().err == ("ctistat: session 1: no server messages in the input (a "
                                      "one-sided capture): its requests are not listed\n")


# --- the command --------------------------------------------------------------

def test_ctistat_reads_files_in_process(tmp_path, capfd):
    saved = tmp_path / "load.jsonl"
    saved.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in load_test()))
    assert stats.main(["--csv", str(saved)]) == 0
    out = capfd.readouterr().out
    assert out.splitlines()[0] == "conn,class,function,commandid,request_ts,reply_ts,latency"
    assert len(out.splitlines()) == 1 + 3 * 2 + 10  # login_id, ipbxcommand, getlist
    assert stats.main(["--totals", str(saved)]) == 0
    assert capfd.readouterr().out.splitlines()[1] == (
        "1 of 4 sessions completed (closed by the client, without an error or a gap)")


@pytest.mark.parametrize("args", [["--csv", "-n"], ["--samples", "--json"], ["--csv", "--totals"],
                                  ["--samples", "-m"]])
def test_samples_refuse_what_they_cannot_give(args):
    result = inprocess.run("ctistat", *args)
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and result.stdout == b""


def test_commandids_beyond_64_bits_are_compared_and_written_exactly():
    # Read as floats, 123...890 and 123...891 were the same request: the reply
    # was paired, and --samples wrote 1.2345678901234568e+29.
    from ctipipe.stages.runner import Runner
    lines = b"".join(orjson.dumps(record) + b"\n" for record in [
        event(1.0, 1, "open", client="a:1", server="b:2"),
        msg(1.0, 1, "client", {"class": "x", "commandid": 0}),
        msg(1.1, 1, "server", {"class": "x", "replyid": 0}),
        close(1.2, 1)]).replace(b'"commandid":0', b'"commandid":123456789012345678901234567890') \
        .replace(b'"replyid":0', b'"replyid":123456789012345678901234567891')
    runner = Runner(stats.Stat(samples="json"))
    output = runner.feed(lines)[0] + runner.end()[0]
    written = [json.loads(line) for line in output.splitlines() if line]
    assert written == [{"conn": 1, "class": "x", "commandid": 123456789012345678901234567890,
                        "request_ts": 1.0, "reply_ts": None, "latency": None}]

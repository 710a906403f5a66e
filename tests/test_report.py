"""ctireport without a browser: the page's data, its escaping, its bad inputs."""
import base64
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import orjson
import pytest

from ctipipe.report import command as report_command
from ctipipe.report import model, page
import inprocess

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
DEMO = DATA / "demo-session.jsonl"


def document(data: bytes, **options) -> dict:
    report = model.Report(**options)
    for line in data.splitlines():
        record = orjson.loads(line)
        try:
            report.add(record, line)
        except model.Skipped:
            report.skipped += 1
    return json.loads(report.document(redacted=options.get("redact", True), generator="test"))


def embedded(html: bytes) -> dict:
    start = html.index(b'<script id="data" type="application/json">') + 42
    return json.loads(html[start:html.index(b"</script>", start)])


def test_rows_are_the_messages_and_events_in_stream_order():
    doc = document((GOLDEN / "tls-login.jsonl").read_bytes())
    labels = [doc["labels"][label] for label in doc["rows"]["l"]]
    assert labels[:6] == ["open: 10.0.0.7:51234 > xivo-new:5003", "starttls", "starttls", "starttls",
                          "tls starttls: intercepted, TLSv1 ECDHE-RSA-AES256-SHA", "login_id"]
    assert doc["rows"]["k"][:6] == [2, 1, 0, 1, 2, 0]
    assert [s["conn"] for s in doc["sessions"]] == [1, 2]
    assert doc["sessions"][0]["by"] == "client" and doc["sessions"][1]["by"] is None
    assert doc["not_relayed"][0]["error"].startswith("cannot reach")
    assert len(doc["bodies"]) == len(labels)


def test_pairs_are_ctistats():
    # the same pairing module: every latency of the page is one of ctistat's samples
    from test_stat_samples import feed
    from ctipipe.stages import stats
    data = DEMO.read_bytes()
    records = [orjson.loads(line) for line in data.splitlines()]
    samples = [json.loads(line) for line in feed(stats.Stat(samples="json"), records).splitlines()]
    doc = document(data)
    pairs = doc["pairs"]
    mine = sorted((doc["classes"][doc["rows"]["c"][q]], ms is None) for q, ms in zip(pairs["q"], pairs["ms"]))
    assert mine == sorted((s["class"], s["latency"] is None) for s in samples)
    assert sorted(round(ms, 3) for ms in pairs["ms"] if ms is not None) == sorted(
        round(s["latency"] * 1000, 3) for s in samples if s["latency"] is not None)


def test_a_logout_gets_no_reply_expected():
    # the protocol never answers a logout: its pair says so; an unanswered getlist is a fault
    doc = document((Path(__file__).parent / "data" / "logout-and-unanswered-getlist.jsonl").read_bytes())
    pairs = doc["pairs"]
    shown = {doc["classes"][doc["rows"]["c"][q]]: (a, expected)
             for q, a, expected in zip(pairs["q"], pairs["a"], pairs["e"])}
    assert shown == {"getlist": (-1, True), "logout": (-1, False)}


def test_no_reply_and_no_reply_expected_are_ctistats():
    from test_stat_samples import feed
    from ctipipe.stages import stats
    data = DEMO.read_bytes()
    [summary] = [json.loads(line) for line in
                 feed(stats.Stat(as_json=True), [orjson.loads(line) for line in data.splitlines()]).splitlines()]
    doc = document(data)
    pairs = doc["pairs"]
    mine = {}
    for q, a, expected in zip(pairs["q"], pairs["a"], pairs["e"]):
        counts = mine.setdefault(doc["classes"][doc["rows"]["c"][q]], [0, 0])
        if a < 0:
            counts[0 if expected else 1] += 1
    assert mine == {name: [row["no_reply"], row["no_reply_expected"]]
                    for name, row in summary["latency"].items()}
    assert mine["logout"] == [0, 1] and mine["starttls"] == [0, 1]  # the demo's second starttls


def test_labels_name_function_and_listname():
    line = orjson.dumps({"ts": 1.0, "conn": 1, "from": "client", "size": 5, "msg": {
        "class": "getlist", "function": "updateconfig", "listname": "users", "commandid": 1}})
    doc = document(line)
    assert doc["labels"] == ["getlist · updateconfig · users"]


def test_messages_keep_their_wire_text_unless_masked():
    wire = b'{"class": "login_pass",  "password": "s3cret", "commandid": 2}'
    line = b'{"ts":1.0,"conn":1,"from":"client","size":64,"msg":' + wire + b"}"
    assert document(line, redact=False)["bodies"] == [json.loads(wire)]
    redacted = document(line)["bodies"][0]
    assert redacted["password"] == "***"
    plain = b'{"ts":1.0,"conn":1,"from":"client","size":64,"msg":{"class": "x",  "n": 1}}'
    report = model.Report()
    report.add(orjson.loads(plain), plain)
    assert report.bodies == [b'{"class": "x",  "n": 1}']  # as it came


def test_redaction_finds_a_key_spelled_with_escapes_and_in_raw_lines():
    line = b'{"ts":1.0,"conn":1,"from":"client","size":9,"msg":{"pass\\u0077ord":"s3cret"}}'
    assert document(line)["bodies"] == [{"password": "***"}]
    raw = orjson.dumps({"ts": 1.0, "conn": 1, "from": "client", "size": 9,
                        "raw": '{"password": "s3cret", broken'})
    assert "s3cret" not in json.dumps(document(raw)["bodies"])
    assert "s3cret" in json.dumps(document(raw, redact=False)["bodies"])


@pytest.mark.parametrize("record", [
    {"ts": "1", "conn": 1, "from": "client", "size": 1, "msg": {}},
    {"ts": 1.0, "conn": "1", "from": "client", "size": 1, "msg": {}},
    {"ts": 1.0, "conn": 1, "from": [], "size": 1, "msg": {}},
    {"ts": 1.0, "conn": 1, "from": "client", "size": "1", "msg": {}},
    {"ts": 1.0, "conn": {}, "event": "open"},
    {"ts": 1.0, "conn": 1, "event": 5},
    {"ts": None, "event": "start"},
    {"ts": 1.0, "conn": "1", "event": "check", "rule": "L3", "text": "x"},
    {"ts": 1.0, "conn": 1, "from": "client", "size": 1, "raw": {"password": "LEAK"}},
    {"ts": 1.0, "conn": 1, "from": "client", "size": 1, "raw_b64": ["LEAK"]},
])
def test_records_of_a_wrong_shape_are_skipped_and_counted(record):
    ok = b'{"ts":1.0,"conn":1,"from":"client","size":1,"msg":{"class":"a"}}'
    doc = document(orjson.dumps(record) + b"\n" + ok)
    assert doc["skipped"] == 1 and len(doc["rows"]["t"]) == 1


def test_only_one_session():
    doc = document((GOLDEN / "tls-login.jsonl").read_bytes(), only_session=2)
    assert [s["conn"] for s in doc["sessions"]] == [2]
    assert set(doc["rows"]["s"]) == {0}


def annotated(data: bytes) -> bytes:
    """The stream as `cticheck --annotate` passes it on (in-process)."""
    from ctipipe.check.command import Check
    check = Check("auto", "annotate")
    out = [check.handle(orjson.loads(line), line) for line in data.splitlines()]
    return b"".join(line + b"\n" for line in out if line) + (check.finish() or b"")


def test_findings_are_rows_right_after_their_message_and_counted_by_rule():
    from ctipipe.stages import pretty
    data = annotated((DATA / "check-readme.jsonl").read_bytes())
    doc = document(data)
    rows, classes, labels = doc["rows"], doc["classes"], doc["labels"]
    checks = [i for i, c in enumerate(rows["c"]) if classes[c] == "check"]
    assert len(checks) == 4 and all(rows["k"][i] == model.EVENT for i in checks)
    # right after the message it is about, in that message's session; about the whole
    # session (L6, R1: what it left undone), right before its close
    assert [labels[rows["l"][i - 1]] for i in checks[:2]] == ["login_pass", "answer"]
    assert all(rows["t"][i] == rows["t"][i - 1] for i in checks[:2])
    assert all(labels[rows["l"][i + 1]].startswith("close") for i in checks)
    assert all(rows["s"][i - 1] == rows["s"][i] == rows["s"][i + 1] for i in checks)
    # its text as ctipretty shows it, and the whole event in its body
    events = [orjson.loads(line) for line in data.splitlines() if b'"event":"check"' in line]
    assert [labels[rows["l"][i]] for i in checks] == [
        f"check [{e['rule']}]: {pretty._check_text(e)}" for e in events]
    assert labels[rows["l"][checks[0]]] == (
        'check [L3]: client login_pass: protocol 2.3 expects "password", not "hashedpassword"; '
        'the server closes the connection on this')
    assert [doc["bodies"][i] for i in checks] == [
        {key: value for key, value in e.items() if key not in ("ts", "conn")} for e in events]
    # the overview's count, in cticheck's order of rules
    assert doc["findings"] == [["L3", 1], ["L6", 1], ["M1", 1], ["R1", 1]]
    assert document(data, only_session=2)["findings"] == [["M1", 1]]
    assert document((DATA / "check-readme.jsonl").read_bytes())["findings"] == []


def test_a_finding_after_its_sessions_last_record_stays_in_that_session():
    # the README's session 4 (an unanswered getlist), cut before its close
    lines = [orjson.loads(line) for line in (DATA / "check-readme.jsonl").read_bytes().splitlines()
             if b'"conn":4' in line and b'"close"' not in line]
    out = annotated(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    late = [orjson.loads(line) for line in out.splitlines()[len(lines):]]
    assert [(e["event"], e["rule"], e["ts"]) for e in late] == [("check", "R1", 0.0)]  # no time of its own
    doc = document(out)
    assert doc["rows"]["t"][-2:] == [0.3, 0.3]  # shown at the session's last record
    assert doc["span"] == 0.3 and doc["rows"]["s"] == [0] * len(doc["rows"]["t"])
    # after a close: in the session that closed; of a session never seen: counted only
    end = lines[-1]["ts"] + 1
    closed = lines + [{"ts": end, "conn": 4, "event": "close", "by": "client"},
                      {"ts": end, "conn": 4, "event": "check", "rule": "R1", "text": "late"},
                      {"ts": end, "conn": 9, "event": "check", "rule": "R1", "text": "nowhere"}]
    doc = document(b"".join(orjson.dumps(line) + b"\n" for line in closed))
    assert [doc["labels"][label] for label in doc["rows"]["l"][-2:]] == ["close by client", "check [R1]: late"]
    assert len(doc["sessions"]) == 1 and doc["findings"] == [["R1", 2]]


def test_escape_for_script_keeps_the_values():
    hostile = {"a": "</script><script>alert(1)</script>", "b": "<!--", "c": "x\u2028y\u2029&>"}
    text = page.escape_for_script(orjson.dumps(hostile))
    assert not re.search(rb"[<>&]|\xe2\x80[\xa8\xa9]", text)
    assert json.loads(text) == hostile


def test_page_allows_only_its_own_script_and_style():
    html = b"".join(page.build(b'{"rows":{}}', "t<i>")).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert policy.startswith("default-src 'none'; ")
    script = page.resource("page.js")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "<script>" + script + "</script>" in html
    assert "<title>t&lt;i&gt;</title>" in html
    # no address to fetch: the one URL is SVG's namespace name, never fetched
    assert "http" not in html.replace("http-equiv", "").replace("'http://www.w3.org/2000/svg'", "")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


# --- the command ---------------------------------------------------------------------

def test_report_is_written_whole_to_o(tmp_path):
    out = tmp_path / "r.html"
    assert report_command.main([str(DEMO), "-o", str(out)]) == 0
    html = out.read_bytes()
    assert html.startswith(b"<!DOCTYPE html>") and html.endswith(b"</html>\n")
    doc = embedded(html)
    assert doc["redacted"] is True and b'"password":"demo"' not in html
    assert out.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_no_redact_keeps_credentials_and_says_so(tmp_path):
    out = tmp_path / "r.html"
    assert report_command.main([str(DEMO), "-o", str(out), "--no-redact"]) == 0
    doc = embedded(out.read_bytes())
    assert doc["redacted"] is False and {"class": "login_pass", "password": "demo"}.items() <= {
        k: v for body in doc["bodies"] if isinstance(body, dict) and body.get("class") == "login_pass"
        for k, v in body.items()}.items()


def run(*args, data=b"", cwd=None, **given):
    return inprocess.run("ctireport", *args, data=data, cwd=cwd, **given)


@pytest.mark.parametrize("data", [b"", b'{"ts":1.0,"event":"start","stream":1,"producer":"x"}\n'])
def test_no_session_is_one_line_exit_1_and_no_file(tmp_path, data):
    result = run("-o", str(tmp_path / "r.html"), data=data)
    assert result.returncode == 1
    assert result.stderr == b"ctireport: error: no session in the input: nothing to report\n"
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    result = run(str(DEMO), "-o", str(tmp_path / "file" / "r.html"))
    assert result.returncode == 1
    assert result.stderr == f"ctireport: error: cannot write {tmp_path}/file/r.html: Not a directory\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_write_that_fails_leaves_the_old_report_and_no_temporary(tmp_path, monkeypatch, capfd):
    existing = tmp_path / "r.html"
    existing.write_text("old report")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_command.os, "replace", full_disk)
    assert report_command.main([str(DEMO), "-o", str(existing)]) == 1
    assert capfd.readouterr().err == f"ctireport: error: cannot write {existing}: No space left on device\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    assert existing.read_text() == "old report"


def test_output_into_a_missing_folder_is_one_line(tmp_path):
    result = run(str(DEMO), "-o", str(tmp_path / "no" / "r.html"))
    assert result.returncode == 1
    assert result.stderr == (f"ctireport: error: cannot write {tmp_path}/no/r.html: No such file "
                             f"or directory\n").encode()


def test_failure_after_the_start_leaves_no_temporary_file(tmp_path):
    result = run("-o", str(tmp_path / "r.html"), "missing.jsonl", cwd=tmp_path)
    assert result.returncode == 1 and list(tmp_path.iterdir()) == []


def test_standard_output_and_skipped_records():
    data = DEMO.read_bytes() + b'{"ts":1.0,"conn":"x","from":"client","size":1,"msg":{}}\nnot json\n'
    result = run(data=data)
    assert result.returncode == 0
    assert result.stdout.startswith(b"<!DOCTYPE html>")
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ctireport: line 57: not JSON")
    assert lines[1] == "ctireport: 1 record whose keys had the wrong type skipped"
    assert embedded(result.stdout)["skipped"] == 1


# --- credentials: ctistrip --redact's rule, and nothing of them in the page ---------------

HEAD = b'{"ts":1.0,"conn":1,"from":"client","size":20,'
LEAKS = {  # the secret -> its record, as ctistrip --redact masks it
    b"LEAKP": HEAD + b'"msg":{"class":"login_pass","password":"LEAKP"}}',
    b"LEAKB": HEAD + b'"msg":{"password":"LEAKB","password":"***"}}',
    b"LEAKN": HEAD + b'"msg":{"class":"x","a":[{"b":{"token":"LEAKN","token":"***"}}]}}',
    b"LEAKH": HEAD + b'"msg":{"p\\u0061ssword":"LEAKH","password":"***"}}',
    b"LEAKM": HEAD + b'"msg":{"password" : "LEAKM","password":"***"}}',
    b"LEAKD": HEAD + b'"msg":{"hashedpassword":"LEAKD"},"msg":{"class":"x"}}',
    b"LEAKX": HEAD + b'"extra":1,"msg":{"passwd":"LEAKX","passwd":"***"}}',
    b"LEAKR": HEAD + b'"raw":"{\\"password\\": \\"LEAKR\\", broken"}',
    b"LEAKK": HEAD + b'"raw_b64":"' + base64.b64encode(b'{"password":"LEAKK"}') + b'"}',
    b"LEAKC": HEAD + b'"chunk":true,"raw_b64":"' + base64.b64encode(b'{"token":"LEAKC"}') + b'"}',
    b"LEAKW": HEAD + b'"raw":"x","raw_b64":"' + base64.b64encode(b'{"token":"LEAKW"}') + b'"}',
}


def in_page(html: bytes, secret: bytes) -> bool:
    """Is the secret in the page's bytes, as text or in a base64 body?"""
    if secret in html:
        return True
    return any(secret in base64.b64decode(value) for value in re.findall(rb'"raw_b64":"([^"]*)"', html))


@pytest.mark.parametrize("secret", list(LEAKS))
def test_no_credential_reaches_the_page(tmp_path, secret, capfd):
    stream_file, out = tmp_path / "s.jsonl", tmp_path / "r.html"
    stream_file.write_bytes(LEAKS[secret] + b"\n")
    assert report_command.main([str(stream_file), "-o", str(out)]) == 0
    html = out.read_bytes()
    assert not in_page(html, secret)
    assert len(embedded(html)["bodies"]) == 1
    assert report_command.main([str(stream_file), "-o", str(out), "--no-redact"]) == 0
    if secret in (b"LEAKP", b"LEAKR", b"LEAKK", b"LEAKC", b"LEAKW"):  # one key: no duplicate lost
        assert in_page(out.read_bytes(), secret)
    capfd.readouterr()


def test_the_page_masks_what_ctistrip_redact_masks():
    # one rule: each body is the message (or raw body) of ctistrip --redact's line
    from ctipipe.stages import strip
    data = b"\n".join(LEAKS.values())
    bodies = document(data)["bodies"]
    stripper = strip.Strip([], set(strip.SECRET_FIELDS))
    stripper.warned_chunks = True
    for line, body in zip(data.splitlines(), bodies):
        record = orjson.loads(stripper.handle(orjson.loads(line), line))
        assert body == record.get("msg", {key: record[key] for key in ("raw", "raw_b64", "chunk")
                                          if key in record})


@pytest.mark.parametrize("line", [
    HEAD + b'"msg":{"a":1},"msg":{"class":"x"}}',
    HEAD + b'"msg":{"a":1},"m\\u0073g":{"class":"x"}}',
    HEAD + b'"msg":{"a":1},"\\u0073ize":3}',
])
@pytest.mark.parametrize("redact", [True, False])
def test_a_key_repeated_after_msg_leaves_the_page_data_whole(line, redact):
    # the record's own text after "msg" is not the message alone: it is encoded anew
    report = model.Report(redact=redact)
    report.add(orjson.loads(line), line)
    doc = json.loads(report.document(redacted=redact, generator="test"))
    assert doc["bodies"] == [orjson.loads(line)["msg"]]


# --- what -o may replace ---------------------------------------------------------------

def refused(capfd, *argv: str) -> tuple[int, str]:
    status = report_command.main([*argv])
    return status, capfd.readouterr().err


def make_node(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path, 0o600)
        return
    try:  # /dev/null's numbers, made in a test folder: never the system's own device
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device needs root here")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_o_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, capfd, kind):
    node = tmp_path / "node"
    make_node(node, kind)
    status, err = refused(capfd, str(DEMO), "-o", str(node))
    assert status == 1
    what = "a character device" if kind == "device" else "a FIFO"
    assert err == (f"ctireport: error: cannot write {node}: it is {what}, not a regular file "
                   f"(without -o the page goes to standard output)\n")
    mode = os.lstat(node).st_mode
    assert (stat.S_ISCHR(mode) if kind == "device" else stat.S_ISFIFO(mode))
    assert [p.name for p in tmp_path.iterdir()] == ["node"]


@pytest.mark.parametrize("target", ["old.html", "missing.html"])
def test_o_that_is_a_symbolic_link_is_refused(tmp_path, capfd, target):
    (tmp_path / "old.html").write_text("old report")
    link = tmp_path / "r.html"
    link.symlink_to(target)
    status, err = refused(capfd, str(DEMO), "-o", str(link))
    assert status == 1
    assert err == f"ctireport: error: {link} is a symbolic link; not writing through it (give the real path)\n"
    assert link.is_symlink() and os.readlink(link) == target
    assert (tmp_path / "old.html").read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.html", "r.html"]


def test_o_that_is_standard_output_through_proc_is_refused(tmp_path):
    with open(tmp_path / "out", "wb") as out:
        result = run(str(DEMO), "-o", "/proc/self/fd/1", stdout=out.fileno())
    assert result.returncode == 1
    assert result.stderr == (b"ctireport: error: /proc/self/fd/1 is a symbolic link; not writing "
                             b"through it (give the real path)\n")
    assert (tmp_path / "out").read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_node_put_at_o_while_reading_is_not_replaced(tmp_path, monkeypatch, capfd):
    # checked again just before the rename: what was not there at the start is not replaced
    out = tmp_path / "r.html"
    build = page.build

    def and_a_fifo_appears(*args):
        os.mkfifo(out, 0o600)
        return build(*args)

    monkeypatch.setattr(report_command.page, "build", and_a_fifo_appears)
    status, err = refused(capfd, str(DEMO), "-o", str(out))
    assert status == 1 and err.startswith(f"ctireport: error: cannot write {out}: it is a FIFO")
    assert stat.S_ISFIFO(os.lstat(out).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


@pytest.mark.parametrize("how", ["same path", "symbolic link", "hard link", "link to the input"])
def test_o_that_is_an_input_is_refused_exit_2(tmp_path, capfd, how):
    recording = tmp_path / "w.jsonl"
    recording.write_bytes(DEMO.read_bytes())
    output = given = recording
    if how == "symbolic link":
        output = tmp_path / "r.html"
        output.symlink_to("w.jsonl")
    elif how == "hard link":
        output = tmp_path / "r.html"
        os.link(recording, output)
    elif how == "link to the input":
        given = tmp_path / "in.jsonl"
        given.symlink_to("w.jsonl")
    with pytest.raises(SystemExit) as stopped:
        report_command.main([str(DEMO), str(given), "-o", str(output)])
    assert stopped.value.code == 2
    assert capfd.readouterr().err == (f"ctireport: error: -o {output} is the input {given}: the "
                                      f"page would replace it (see ctireport --help)\n")
    assert recording.read_bytes() == DEMO.read_bytes()


def test_o_that_is_standard_input_is_refused_exit_2(tmp_path):
    recording = tmp_path / "w.jsonl"
    recording.write_bytes(DEMO.read_bytes())
    with open(recording, "rb") as given:
        result = run("-o", str(recording), stdin=given.fileno())
    assert result.returncode == 2
    assert result.stderr == (f"ctireport: error: -o {recording} is the input standard input: the "
                             f"page would replace it (see ctireport --help)\n").encode()
    assert recording.read_bytes() == DEMO.read_bytes()


def test_session_given_twice_is_refused(capfd):
    with pytest.raises(SystemExit) as stopped:
        report_command.main([str(DEMO), "--session", "1", "--session", "2"])
    assert stopped.value.code == 2
    assert capfd.readouterr().err == ("ctireport: error: --session is given twice (1 and 2): the "
                                      "page shows one session or all (see ctireport --help)\n")

"""cticheck: every rule of the protocol's table, one message that keeps it and
one that breaks it (real messages from the corpus where one exists), then
whole streams: the corpus, the demo's sessions, the README's examples."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from ctipipe.check import command as check_command
from ctipipe.check import rules as R
from ctipipe.check.checker import Checker
from ctipipe.check.message import check_client, check_server, is_template
from ctipipe.core import protocol
from ctipipe.stages import pretty

from helpers import command

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data"
T0 = 1764262479.0

OFFER = {"class": "starttls", "timenow": 1.5}
LOGIN_ID = {"class": "login_id", "commandid": 1084338712, "company": "xivo", "ident": "X11-LE-24079",
            "lastlogout-datetime": "", "lastlogout-stopper": "", "userlogin": "alice",
            "wazoversion": "2.3"}
LOGIN_ID_OK = {"wazoversion": "2.3", "sessionid": "9WcHhnJxU3", "class": "login_id", "timenow": 1.5}
LOGIN_PASS = {"class": "login_pass", "commandid": 1441319531, "password": "secret"}
LOGIN_PASS_OK = {"capalist": [3], "class": "login_pass", "timenow": 1.5}
LOGIN_CAPAS = {"capaid": "3", "class": "login_capas", "commandid": 502820175, "state": "available"}
LOGIN_CAPAS_OK = {"userid": "3", "ipbxid": "xivo", "class": "login_capas", "appliname": "Client",
                  "capas": {}, "capaxlets": [], "timenow": 1.5}
LOGIN = [("client", LOGIN_ID), ("server", LOGIN_ID_OK), ("client", LOGIN_PASS),
         ("server", LOGIN_PASS_OK), ("client", LOGIN_CAPAS), ("server", LOGIN_CAPAS_OK)]


def stream(items, close_by="client") -> list[dict]:
    """Records of one session: `items` are (side, message) or (seconds, side,
    message); 0.01 s apart unless a time is given. close_by=None: no close."""
    records = [{"ts": T0, "conn": 1, "event": "open", "client": "127.0.0.1:5", "server": "x:5003"}]
    now = T0
    for item in items:
        if len(item) == 3:
            now = T0 + item[0]
            item = item[1:]
        else:
            now += 0.01
        side, message = item
        if side == "event":
            records.append({"ts": now, "conn": 1, **message})
        elif isinstance(message, dict) or message is None or isinstance(message, list):
            records.append({"ts": now, "conn": 1, "from": side, "size": 1, "msg": message})
        else:
            records.append({"ts": now, "conn": 1, "from": side, "size": 1, "raw": message})
    if close_by:
        records.append({"ts": now + 0.01, "conn": 1, "event": "close", "by": close_by,
                        "bytes": {"client": 1, "server": 1}, "reads": {"client": 1, "server": 1},
                        "duration": now + 0.01 - T0})
    return records


def check(records, version="auto") -> list:
    checker = Checker(version)
    found = []
    for record in records:
        found += checker.record(record)
    return found + checker.finish()


def rules_of(records, version="auto") -> list[str]:
    return [found.rule for found in check(records, version)]


# --- rules of one message: (rule, side, version, keeps it, breaks it) --------------------
# Real messages from the corpus where one exists (corpus line in the comment).

MESSAGE_CASES = [
    # F1: what the server cannot read closes the connection
    ("F1", "client", "2.3", {"class": "keepalive", "commandid": 725820571}, [1, 2]),
    ("F1", "client", "2.3", {"class": "getipbxlist", "commandid": 1}, {"commandid": 1}),
    # F2: the server's encoder adds timenow (server.jsonl 1)
    ("F2", "server", "2.3", {"class": "starttls", "timenow": 1795857296.760123},
     {"class": "chitchat", "alias": "Alice", "text": "hi"}),
    # S2: the client's answer to the offer (client.jsonl 1)
    ("S2", "client", "2.3", {"class": "starttls", "commandid": 1384415948, "status": True},
     {"class": "starttls", "commandid": 1, "status": "true"}),
    # L2: login_id fields (client.jsonl 2; 26 is a documentation fragment)
    ("L2", "client", "2.3", LOGIN_ID, {"commandid": 1, "class": "login_id"}),
    ("L2", "client", "2.2", {**{k: v for k, v in LOGIN_ID.items() if k != "wazoversion"},
                             "xivoversion": "2.2"}, LOGIN_ID),
    # L3: the password per version (client.jsonl 6; 180 the 1.2 form)
    ("L3", "client", "2.3", LOGIN_PASS, {"hashedpassword": "abcd", "class": "login_pass"}),
    ("L3", "client", "1.2", {"class": "login_pass", "commandid": 1646064863,
                             "hashedpassword": "e5229ef45824333e0f8bbeed20dccfa2ddcb1c80"},
     LOGIN_PASS),
    # L4: login_capas (client.jsonl 7; 29 from the server's unit tests)
    ("L4", "client", "2.3", LOGIN_CAPAS, {"loginkind": "user", "capaid": "test", "lastconnwins": False,
                                          "commandid": 1, "state": "available", "class": "login_capas"}),
    ("L4", "client", "1.2", {"capaid": 3, "class": "login_capas", "lastconnwins": False,
                             "loginkind": "user", "state": "available"}, LOGIN_CAPAS),
    # L5: the server's login_id success (server.jsonl 3)
    ("L5", "server", "2.3", LOGIN_ID_OK, {"class": "login_id", "sessionid": "aaaaaaaaaa",
                                          "wazoversion": "2.3", "timenow": 1.5}),
    ("L5", "server", "2.3", LOGIN_ID_OK, {"class": "login_id", "sessionid": "9WcHhnJxU3",
                                          "wazoversion": "18.03", "timenow": 1.5}),
    # M1: required fields (client.jsonl 74 is the documentation's answer)
    ("M1", "client", "2.3", {"class": "answer", "unique_id": "1234567.89", "commandid": 3},
     {"class": "answer", "uniqueid": "12345667.89"}),
    ("M1", "client", "2.3", {"class": "ipbxcommand", "command": "dial", "commandid": 1683305913,
                             "destination": "exten:xivo/1202"}, {"class": "ipbxcommand", "commandid": 1}),
    ("M1", "client", "2.3", {"class": "featuresput", "commandid": 2082138822, "function": "fwd",
                             "value": {"destunc": "1002", "enableunc": True}},
     {"class": "featuresput", "function": "fwd", "value": {"enableunc": True}}),
    ("M1", "client", "2.3", {"class": "subscribe", "message": "meetme_update"},
     {"class": "subscribe", "commandid": 3}),  # the registry reads msg['message']
    # M2: values the server cannot convert (client.jsonl 150 and 151)
    ("M2", "client", "2.3", {"function": "MeetmeMute", "functionargs": ["1001", "3"],
                             "command": "meetme", "class": "ipbxcommand"},
     {"function": "MeetmeMute", "functionargs": ["1001", "3\r\n\r\nCommand: Command\r\n\r\n"],
      "command": "meetme", "class": "ipbxcommand"}),
    ("M2", "client", "2.3", {"alias": "Alice", "class": "chitchat", "commandid": 253062997, "text": "hi",
                             "to": ["e4d147b6-f747-4b64-955d-8c36fbcd1d3f",
                                    "d0e36147-49f6-40b0-ac78-1af2048bed55"]},
     {"alias": "Alice", "class": "chitchat", "text": "hi", "to": ["xivo", 42]}),
    ("M2", "client", "2.0", {"alias": "Alice", "class": "chitchat", "text": "hi", "to": ["xivo", 42]},
     {"alias": "Alice", "class": "chitchat", "text": "hi", "to": ["xivo", 0]}),
    ("M2", "client", "2.3", {"class": "history", "size": "8"}, {"class": "history", "size": "eight"}),
    ("M2", "client", "2.3", {"class": "register_user_status_update", "user_ids": [["u", "v"]]},
     {"class": "register_user_status_update", "user_ids": ["<user_id1>"]}),
    # M3: classes the server does not know (client.jsonl 179 and 152)
    ("M3", "client", "2.3", {"class": "get_relations", "commandid": 1},
     {"class": "invite_confroom", "invitee": "user:xivo/1"}),
    ("M3", "client", "2.1", {"class": "invite_confroom", "invitee": "user:xivo/1"},
     {"class": "register_agent_status", "agent_ids": [["xivo_uuid", 42]]}),
    # M4: dispatch values (client.jsonl 186 and 276)
    ("M4", "client", "2.3", {"class": "subscribe", "message": "current_calls"},
     {"message": "my_new_message", "class": "subscribe"}),
    ("M4", "client", "2.3", {"class": "featuresput", "function": "enablednd", "value": True},
     {"class": "featuresput", "commandid": 1466594495, "function": "enablevoicemail", "value": True}),
    ("M4", "client", "1.2", {"class": "ipbxcommand", "command": "originate", "destination": "x"},
     {"class": "ipbxcommand", "command": "launch"}),
    # M5: values the server drops (client.jsonl 33: the list removed in 15.19)
    ("M5", "client", "2.3", {"class": "featuresput", "function": "incallfilter", "value": False},
     {"class": "featuresput", "function": "incallfilter", "value": "true"}),
    ("M5", "client", "2.3", {"class": "getlist", "function": "updatestatus", "listname": "phones",
                             "tid": "1"},
     {"function": "updatestatus", "listname": "channels", "tid": "1", "class": "getlist"}),
    ("M5", "client", "2.3", {"class": "getlist", "function": "updateconfig", "listname": "users",
                             "tid": "17"}, {"class": "getlist", "function": "updateconfig",
                                            "listname": "users"}),
    # R3: replies that carry replyid in 2.x (server.jsonl 57 is a 1.2 login_pass)
    ("R3", "server", "2.3", {"ipbxlist": ["xivo"], "replyid": 872196791, "class": "getipbxlist",
                             "timenow": 1.5},
     {"capalist": [2], "class": "login_pass", "replyid": 1646064863, "timenow": 1.5}),
    # E1: error strings, explained (server.jsonl 4)
    ("E1", "server", "2.3", LOGIN_PASS_OK,
     {"class": "login_pass", "error_string": "login_password", "timenow": 1795857296.805751}),
]


@pytest.mark.parametrize("rule, side, version, keeps, breaks", MESSAGE_CASES,
                         ids=[f"{case[0]}-{case[2]}-{n}" for n, case in enumerate(MESSAGE_CASES)])
def test_a_message_keeps_or_breaks_its_rule(rule, side, version, keeps, breaks):
    checker = check_client if side == "client" else check_server
    assert rule not in [found.rule for found in checker(keeps, version)]
    assert rule in [found.rule for found in checker(breaks, version)]


def test_error_strings_are_explained_in_words():
    found = check_server({"class": "login_id", "error_string": "wazoversion_client:2.2;2.3",
                          "timenow": 1.5}, "2.3")
    assert [f.text for f in found if f.rule == "E1"] == [
        'login_id error "wazoversion_client:2.2;2.3": the client speaks CTI protocol 2.2 but the '
        'server speaks 2.3: install a matching client']
    found = check_server({"class": "ipbxcommand", "error_string": "unknown_class", "timenow": 1},
                         "2.3")
    assert "not an error the real server sends" in found[0].text


# --- rules of a session: (rule, records that keep it, records that break it) -------------

ECHO = {"class": "starttls", "starttls": True, "timenow": 1.5}
TLS = {"event": "tls", "how": "starttls", "intercepted": True}
GETLIST = {"class": "getlist", "commandid": 7, "function": "listid", "listname": "users",
           "tipbxid": "xivo"}
GETLIST_OK = {"class": "getlist", "function": "listid", "listname": "users", "tipbxid": "xivo",
              "list": ["1"], "timenow": 1.5}

SESSION_CASES = [
    ("S1", [("server", OFFER), ("client", {"class": "starttls", "status": True}),
            ("server", ECHO), ("event", TLS)] + LOGIN,
     LOGIN + [("server", OFFER)]),
    ("S3", [("server", OFFER), ("client", {"class": "starttls", "status": True}),
            ("server", ECHO), ("event", TLS)],
     [("server", OFFER), ("client", {"class": "starttls", "status": True}),
      ("server", {"class": "starttls", "status": True, "timenow": 1.5})]),
    ("S4", [("server", OFFER), ("client", {"class": "starttls", "status": True}),
            ("server", ECHO), ("event", TLS)] + LOGIN,
     [("server", OFFER), ("client", {"class": "starttls", "status": True}),
      ("server", ECHO)] + LOGIN),
    ("S5", [("client", {"class": "starttls", "status": True}), ("server", OFFER), ("server", ECHO),
            ("event", TLS)],  # pipelined before the offer arrived: the offer was made
     [("client", {"class": "starttls", "status": True}), ("server", LOGIN_ID_OK)]),
    ("L1", LOGIN + [("client", GETLIST), ("server", GETLIST_OK)],
     [("client", LOGIN_ID), ("server", LOGIN_ID_OK), ("client", GETLIST)]),
    ("L4", LOGIN, LOGIN[:4] + [("client", {**LOGIN_CAPAS, "capaid": 2})]),
    ("L6", LOGIN + [(6.0, "client", {"class": "keepalive"})],
     LOGIN[:4] + [(6.0, "client", LOGIN_CAPAS), (6.01, "server", LOGIN_CAPAS_OK)]),
    ("L7", LOGIN, LOGIN[:4] + [("client", LOGIN_PASS)]),
    ("V1", LOGIN, [("client", {**LOGIN_ID, "wazoversion": "18.03"}),
                   ("server", {**LOGIN_ID_OK, "wazoversion": "18.03"})]),
    ("R1", LOGIN + [("client", GETLIST), ("server", GETLIST_OK)], LOGIN + [("client", GETLIST)]),
    ("R2", LOGIN + [("client", {"class": "keepalive", "commandid": 9}),
                    ("server", {"class": "keepalive", "replyid": 9, "timenow": 1.5})],
     LOGIN + [("server", {"class": "keepalive", "replyid": 9, "timenow": 1.5})]),
    ("E2", LOGIN[:3] + [("server", {"class": "login_pass", "error_string": "login_password",
                                    "timenow": 1.5})],
     LOGIN[:3] + [("server", {"class": "login_pass", "error_string": "login_password",
                              "timenow": 1.5})], "server"),
]


@pytest.mark.parametrize("case", SESSION_CASES, ids=[case[0] for case in SESSION_CASES])
def test_a_session_keeps_or_breaks_its_rule(case):
    rule, keeps, breaks = case[:3]
    close_by = case[3] if len(case) > 3 else "client"
    assert rule not in rules_of(stream(keeps)), check(stream(keeps))
    assert rule in rules_of(stream(breaks, close_by)), check(stream(breaks, close_by))


def test_every_rule_of_the_table_has_cases():
    covered = {case[0] for case in MESSAGE_CASES} | {case[0] for case in SESSION_CASES}
    assert covered == set(R.BY_ID)


def test_a_clean_2x_login_with_starttls_has_no_finding():
    records = stream([("server", OFFER), ("client", {"class": "starttls", "status": True}),
                      ("server", ECHO), ("event", TLS)] + LOGIN
                     + [("client", {"class": "starttls", "status": True}),  # the XiVO client's second
                        ("client", {"class": "logout", "commandid": 3, "stopper": "disconnect"})])
    assert check(records) == []


def test_the_version_comes_from_the_login_or_is_forced():
    one_two = [("client", {**LOGIN_ID, "wazoversion": None, "xivoversion": "1.2"}),
               ("server", {**LOGIN_ID_OK, "wazoversion": None, "xivoversion": "1.2"}),
               ("client", {"class": "login_pass", "hashedpassword": "e5229ef45824333e0f8bbeed20dccfa2ddcb1c80"})]
    one_two[0][1].pop("wazoversion")
    one_two[1][1].pop("wazoversion")
    assert "L3" not in rules_of(stream(one_two))
    found = check(stream(one_two), "2.3")
    assert {f.rule for f in found} >= {"V1", "L3"} and found[0].protocol == "2.3"


# --- the README's examples -------------------------------------------------------------

def test_readme_example_a_2x_client_sending_hashedpassword():
    found = check(stream([("client", LOGIN_ID), ("server", LOGIN_ID_OK),
                          ("client", {"class": "login_pass", "commandid": 2,
                                      "hashedpassword": "e5229ef45824333e0f8bbeed20dccfa2ddcb1c80"})],
                         close_by="server"))
    assert check_command.finding_line(found[0]) == (
        'conn 1 +0.030 client login_pass: protocol 2.3 expects "password", not "hashedpassword"; '
        'the server closes the connection on this [L3]')


def test_readme_example_an_answer_with_uniqueid():
    found = check(stream(LOGIN + [("client", {"class": "answer", "uniqueid": "12345667.89"})]))
    assert [(f.rule, f.text) for f in found] == [
        ("M1", 'answer needs "unique_id", not "uniqueid" (the documentation\'s spelling)')]


def test_readme_example_a_login_that_takes_6_s():
    found = check(stream(LOGIN[:4] + [(6.0, "client", LOGIN_CAPAS), (6.01, "server", LOGIN_CAPAS_OK)]))
    assert [f.rule for f in found] == ["L6"]
    assert "5 s after the connection" in found[0].text


def test_readme_example_an_unanswered_getlist():
    found = check(stream(LOGIN + [("client", GETLIST)]))
    assert [(f.rule, f.name, round(f.offset, 3)) for f in found] == [("R1", "getlist", 0.07)]


# --- whole streams ---------------------------------------------------------------------

def _lines(name: str) -> list:
    return [orjson.loads(line) for line in (DATA / name).read_bytes().splitlines()]


# True findings of the shared corpus (tests/data/corpus-*.jsonl, line numbers): each message
# is checked under every protocol version, and one that some version accepts is clean.
# Documentation templates ("<user_uuid>") are excused, and so is F2 (below).
CORPUS_FINDINGS = {
    ("client", 26, "L2"): "a documentation fragment: login_id with none of its fields",
    ("client", 29, "L4"): "the server's unit test of a capaid that int() refuses",
    ("client", 30, "M1"): "a chitchat of XiVO 1.2 without alias (to was then a string)",
    ("client", 33, "M5"): "getlist of the list channels, removed in 15.19",
    ("client", 74, "M1"): "the documentation's answer spells uniqueid",
    ("client", 88, "M1"): "faxsend of the old documentation, before size and data (15.18)",
    ("client", 112, "M1"): "chitchat examples of the documentation without alias",
    ("client", 113, "M1"): "same",
    ("client", 116, "M1"): "same",
    ("client", 119, "L4"): "login_capas with loginkind but no lastconnwins: neither 1.2 nor 2.x",
    ("client", 137, "M1"): "a unit test's dial without destination",
    ("client", 144, "M4"): "ipbxcommand history of the old documentation (now the class history)",
    ("client", 151, "M2"): "the unit test of an AMI injection in functionargs",
    ("client", 152, "M3"): "unit tests name the class register_agent_status (the code registers "
                           "register_agent_status_update)",
    ("client", 153, "M3"): "same, endpoint", ("client", 154, "M3"): "same, user",
    ("client", 171, "M3"): "same, unregister", ("client", 172, "M3"): "same",
    ("client", 173, "M3"): "same",
    ("client", 180, "L3"): "a 1.2 hashedpassword of 4 characters, not a SHA1",
    ("client", 181, "M4"): "ipbxcommand history, as 144",
    ("client", 182, "M1"): "a unit test's answer without unique_id",
    ("client", 186, "M4"): "a unit test's unknown subscribe message",
    ("client", 276, "M4"): "featuresput enablevoicemail: no such function in the server",
    ("server", 297, "L5"): "a login_id template of the documentation with no sessionid",
}
# E1 explains every error_string: each one in the corpus is a true finding by design.


def test_the_shared_corpus_checks_clean_apart_from_true_findings():
    found = {}
    for side, checker in (("client", check_client), ("server", check_server)):
        for number, message in enumerate(_lines(f"corpus-{side}.jsonl"), 1):
            per_version = {version: [f for f in checker(message, version)
                                     # F2: documentation and unit-test messages leave out
                                     # the timenow that the server's encoder adds
                                     if not is_template(f.value) and f.rule != "F2"]
                           for version in protocol.VERSIONS}
            if any(not findings for findings in per_version.values()):
                continue
            for f in min(per_version.values(), key=len):
                if f.rule != "E1":
                    found[(side, number, f.rule)] = f.text
    assert set(found) == set(CORPUS_FINDINGS), found


# The demo's sessions (recorded through ctirelay): the 1.2 session is clean; the STARTTLS
# one plays a 2.x server loosely, and these are its true findings.
DEMO_TLS_FINDINGS = {
    "V1": 1,  # the client sends wazoversion "18.03": a release number, not the protocol's 2.3
    "L5": 1,  # and the demo server answers wazoversion "18.03" where a 2.3 server says "2.3"
    "L4": 1,  # its 2.x login_capas still sends lastconnwins and loginkind (1.2 fields)
    "R3": 14,  # its getlist answers carry replyid, which a 2.x server never sends
    "M4": 1,  # it sends ipbxcommand hangup, removed in 15.19 (the class hangup replaced it)
}


def test_the_demo_sessions_check_clean_apart_from_true_findings():
    assert check(_lines("check-demo-plain.jsonl")) == []
    found = {}
    for f in check(_lines("check-demo-tls.jsonl")):
        found[f.rule] = found.get(f.rule, 0) + 1
    assert found == DEMO_TLS_FINDINGS


# --- the command -----------------------------------------------------------------------

def _write(tmp_path, records) -> str:
    path = tmp_path / "session.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


def _main(argv, capfd):
    status = check_command.main(argv)
    out, err = capfd.readouterr()
    return status, out, err


BROKEN = [("client", LOGIN_ID), ("server", LOGIN_ID_OK),
          ("client", {"class": "login_pass", "commandid": 2, "hashedpassword": "ab"})]


def test_cticheck_exit_0_clean_1_findings_2_bad_input(tmp_path, capfd):
    status, out, _ = _main([_write(tmp_path, stream(LOGIN))], capfd)
    assert status == 0 and "clean" in out
    status, out, _ = _main([_write(tmp_path, stream(BROKEN, "server"))], capfd)
    assert status == 1
    assert out.splitlines()[0].endswith("[L3]")
    assert "the server closed the connection 0.010 s after the login_pass at +0.030 that broke [L3]" in out
    assert "=== findings by rule" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"class": "login_id"}\n')  # CTI messages, not a tagged stream
    status, _, err = _main([str(bad)], capfd)
    assert status == 2 and "no tagged-stream record" in err
    bad.write_bytes(orjson.dumps(stream(LOGIN)[0]) + b"\nnot json\n")
    assert _main([str(bad)], capfd)[0] == 2
    status, _, err = _main([str(tmp_path / "missing.jsonl")], capfd)
    assert status == 2 and "cannot read" in err
    with pytest.raises(SystemExit) as stopped:
        check_command.main(["--protocol", "3.0", str(bad)])
    assert stopped.value.code == 2


def test_cticheck_json_one_object_per_finding(tmp_path, capfd):
    status, out, _ = _main(["--json", _write(tmp_path, stream(BROKEN, "server"))], capfd)
    objects = [orjson.loads(line) for line in out.splitlines()]
    assert status == 1 and [o["rule"] for o in objects] == ["L3"]
    assert objects[0]["from"] == "client" and objects[0]["protocol"] == "2.3"


def test_cticheck_protocol_forces_the_version(tmp_path, capfd):
    path = _write(tmp_path, stream(LOGIN))
    status, out, _ = _main(["--protocol", "2.2", path], capfd)
    assert status == 1 and "[V1]" in out and "protocol 2.2, as told" in out


def test_cticheck_rules_lists_the_table(capfd):
    status, out, _ = _main(["--rules"], capfd)
    assert status == 0
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == [
        rule.id for rule in R.RULES]


def test_annotate_passes_the_stream_with_check_events_that_ctipretty_shows(tmp_path, capfd):
    records = stream(BROKEN + [("client", GETLIST)], "server")
    status, out, _ = _main(["--annotate", _write(tmp_path, records)], capfd)
    lines = out.encode().splitlines()
    events = [orjson.loads(line) for line in lines if b'"event":"check"' in line]
    assert [e["rule"] for e in events] == ["L3", "L1"]
    assert len(lines) == len(records) + 2
    assert orjson.loads(lines[4])["event"] == "check"  # right after the login_pass
    assert all("from" not in e for e in events)  # an event, not a data record
    shown = pretty.Pretty(compact=True, color=False, clock="none")
    for line in lines:
        shown.handle(orjson.loads(line), line)
    text = shown.finish().decode()
    assert ('--- session 1 check [L3]: client login_pass: protocol 2.3 expects "password", '
            'not "hashedpassword"; the server closes the connection on this') in text


def test_annotate_into_ctipretty_through_a_pipe(tmp_path):
    path = _write(tmp_path, stream(BROKEN, "server"))
    check = subprocess.Popen(command("cticheck", "--annotate", path), stdout=subprocess.PIPE)
    shown = subprocess.run(command("ctipretty", "--color", "never"), stdin=check.stdout,
                           capture_output=True, timeout=30)
    check.stdout.close()
    assert check.wait(timeout=30) == 1
    assert b"check [L3]: client login_pass" in shown.stdout and shown.returncode == 0


def test_readme_examples_file_gives_the_readme_output(capfd):
    """tests/data/check-readme.jsonl holds the four examples of README's cticheck
    section; the output shown there is tests/data/check-readme.expected."""
    status, out, _ = _main([str(DATA / "check-readme.jsonl")], capfd)
    assert status == 1
    assert out == (DATA / "check-readme.expected").read_text()
    rules = [line.rsplit("[", 1)[1].rstrip("]") for line in out.splitlines()[:4]]
    assert rules == ["L3", "M1", "L6", "R1"]
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert out.splitlines()[0] in readme


def _pcap(packets, port=5003, client_port=40000, header=True) -> bytes:
    """A capture of one TCP connection to `port` (no handshake): (from_client, payload);
    without its header, to follow another connection's in the same file."""
    import struct
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)] if header else []
    seq = {True: 1000, False: 5000}
    for n, (client, data) in enumerate(packets):
        ports = (client_port, port) if client else (port, client_port)
        hosts = (b"\n\0\0\7", b"\n\0\0\1") if client else (b"\n\0\0\1", b"\n\0\0\7")
        tcp = struct.pack("!HHIIBBHHH", *ports, seq[client], seq[not client], 5 << 4, 0x18,
                          65535, 0, 0)
        seq[client] += len(data)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(data), n, 0, 64, 6, 0,
                         *hosts)
        frame = b"\0" * 12 + b"\x08\x00" + ip + tcp + data
        out.append(struct.pack("<IIII", 1764262479 + n, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


# One short connection, client then server, for the direction on any port (below).
ANSWER_THEN_LOGIN = [(True, b'{"class":"answer","uniqueid":"1.2"}\n'),
                     (False, orjson.dumps(LOGIN_ID_OK) + b"\n")]


def test_wireshark_lua_dissector_made_from_the_table(tmp_path, capfd):
    status, lua_text, _ = _main(["--wireshark-lua"], capfd)
    assert status == 0
    assert all(f'["{name}"]' in lua_text for name in R.CLIENT_CLASSES)
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed: the dissector is not run")
    (tmp_path / "cti.lua").write_text(lua_text)
    (tmp_path / "cti.pcap").write_bytes(_pcap([
        (True, orjson.dumps(LOGIN_ID) + b"\n"),
        (False, orjson.dumps(LOGIN_ID_OK) + b"\n"),
        (True, b'{"class":"answer","uniqueid":"1.2"}\n{"class":"ipbxcommand","command":"orig'),
        (True, b'inate"}\n')])  # a message cut across two segments
        # and another connection to 5003, registered without -d: the direction on the
        # default port (test_wireshark_lua_dissector_knows_the_client_on_any_port)
        + _pcap(ANSWER_THEN_LOGIN, client_port=40001, header=False))
    shown = subprocess.run([tshark, "-r", str(tmp_path / "cti.pcap"), "-X",
                            f"lua_script:{tmp_path / 'cti.lua'}", "-T", "fields", "-e", "cti.class",
                            "-e", "_ws.expert.message", "-e", "cti.from", "-e", "_ws.col.Info"],
                           capture_output=True, text=True, timeout=60)
    rows = [line.split("\t") for line in shown.stdout.splitlines()]
    assert len(rows) == 6, shown.stderr
    assert rows[0][:2] == ["login_id", ""] and rows[1][:2] == ["login_id", ""], shown.stderr
    assert rows[2][:2] == ["answer", '[M1] answer needs "unique_id"; the server closes the '
                                     'connection on this']
    assert rows[3][0] == "ipbxcommand" and rows[3][1].startswith("[M4] ipbxcommand command "
                                                                 "originate is unknown")
    assert [row[2:] for row in rows[4:]] == [["client", "C>S answer"], ["server", "S>C login_id"]]


# (port 5003 without -d: test_wireshark_lua_dissector_made_from_the_table)
@pytest.mark.parametrize("port, decode_as", [(6000, ["-d", "tcp.port==6000,cti"]),
                                             (5003, ["-d", "tcp.port==5003,cti"])])
def test_wireshark_lua_dissector_knows_the_client_on_any_port(tmp_path, capfd, port, decode_as):
    """The direction comes from the port the dissector was applied on, not from 5003."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed: the dissector is not run")
    _, lua_text, _ = _main(["--wireshark-lua"], capfd)
    (tmp_path / "cti.lua").write_text(lua_text)
    (tmp_path / "cti.pcap").write_bytes(_pcap(ANSWER_THEN_LOGIN, port))
    shown = subprocess.run([tshark, "-r", str(tmp_path / "cti.pcap"), "-X",
                            f"lua_script:{tmp_path / 'cti.lua'}", *decode_as, "-T", "fields",
                            "-e", "cti.from", "-e", "_ws.col.Info"],
                           capture_output=True, text=True, timeout=60)
    rows = [line.split("\t") for line in shown.stdout.splitlines()]
    assert rows == [["client", "C>S answer"], ["server", "S>C login_id"]], shown.stderr


def test_annotated_stream_reads_in_every_stage_as_the_plain_one(tmp_path, capfd):
    from ctipipe.stages import stats, strip
    records = stream(BROKEN + [("client", GETLIST)], "server")
    _, annotated, _ = _main(["--annotate", _write(tmp_path, records)], capfd)

    def through(stage_, lines):
        out = [stage_.handle(orjson.loads(line), line) for line in lines]
        return [line for line in out if line is not None], stage_.finish()

    plain = [orjson.dumps(r) for r in records]
    lines = annotated.encode().splitlines()
    assert through(stats.Stat(False, True), lines) == through(stats.Stat(False, True), plain)
    kept, _ = through(strip.Strip(["timenow"], set()), lines)
    events = [line for line in lines if b'"event":"check"' in line]
    assert len(kept) == len(lines) and [line for line in kept if line in events] == events
    assert check(records) == check([orjson.loads(line) for line in lines])  # and cticheck again


# --- the shared pairing (stages/replies.py) with the protocol's table --------------------

def _outcomes(steps):
    from ctipipe.stages.replies import Pairing
    pairing = Pairing()
    seen = []
    for ts, (side, message) in enumerate(steps):
        if side == "client":
            seen += pairing.request(message, float(ts))
        else:
            outcome = pairing.reply(message, float(ts))
            seen += [outcome] if outcome else []
    return [(o.request.name, o.reply_ts, o.expected) for o in seen + pairing.end()]


def test_pairing_answers_without_replyid_by_what_they_answer():
    assert _outcomes([("client", GETLIST), ("server", {**GETLIST_OK, "listname": "phones"}),
                      ("server", GETLIST_OK)]) == [("getlist", 2.0, True)]
    update = {"class": "getlist", "commandid": 8, "function": "updateconfig", "listname": "users",
              "tid": "17"}
    answer = {"class": "getlist", "function": "updateconfig", "listname": "users", "tid": 17,
              "config": {}, "timenow": 1.5}
    assert _outcomes([("client", update), ("server", {**answer, "tid": 18}),
                      ("server", answer)]) == [("getlist", 2.0, True)]
    assert _outcomes([("client", {"class": "people_search", "commandid": 9, "pattern": "al"}),
                      ("server", {"class": "people_search_result", "results": []})]) == [
        ("people_search", 1.0, True)]


def test_pairing_knows_what_the_protocol_never_answers():
    assert _outcomes([("server", OFFER), ("client", {"class": "starttls", "commandid": 1,
                                                     "status": True}),
                      ("server", ECHO), ("client", {"class": "starttls", "commandid": 2,
                                                    "status": True}),
                      ("client", {"class": "logout", "commandid": 3})]) == [
        ("starttls", 2.0, True), ("starttls", None, False), ("logout", None, False)]
    # no offer made: the client's starttls is not answered either
    assert _outcomes([("client", {"class": "starttls", "commandid": 1, "status": True})]) == [
        ("starttls", None, False)]


def test_ctistat_shows_what_the_protocol_never_answers_as_no_reply_expected():
    from ctipipe.stages import stats
    records = stream([("server", OFFER), ("client", {"class": "starttls", "commandid": 1,
                                                     "status": True}),
                      ("server", ECHO), ("event", TLS)] + LOGIN
                     + [("client", {"class": "starttls", "commandid": 5, "status": True}),
                        ("client", {"class": "logout", "commandid": 6, "stopper": "disconnect"}),
                        ("client", GETLIST)])
    stat = stats.Stat(False, True)
    out = [stat.handle(r, orjson.dumps(r)) for r in records]
    [summary] = [orjson.loads(line) for line in out if line]
    rows = {name: (row["no_reply"], row["no_reply_expected"])
            for name, row in summary["latency"].items()}
    assert rows["logout"] == (0, 1) and rows["starttls"] == (0, 1)  # the second starttls
    assert rows["getlist"] == (1, 0)  # the server should have answered this one
    assert rows["login_id"] == (0, 0)
    text = stats.format_messages(summary)
    assert any(line.endswith("no reply no reply expected") for line in text.splitlines())


# --- what is not a whole two-sided session: no false findings, and said ---------------

def _summary(records, version="auto") -> str:
    stage = check_command.Check(version, "text")
    for record in records:
        stage.handle(record, orjson.dumps(record))
    stage.finish()
    return "\n".join(stage.summary())


def _without(records, side) -> list:
    """One side's file of ctisplit --jsonl: the other side's data records left out."""
    return [r for r in records if r.get("from") != side]


def _cut(side, text="ame\":\"users\"}", ts=T0 + 0.001) -> dict:
    return {"ts": ts, "conn": 1, "from": side, "size": len(text) + 1, "partial": True, "raw": text}


def _gap(side, ts, **amount) -> dict:
    return {"ts": ts, "conn": 1, "event": "gap", **({"side": side} if side else {}), **amount}


ONE_TWO = [  # a 1.2 session seen after its login: what 2.3 has removed or answers differently
    ("client", {"class": "getlist", "commandid": 11, "function": "listid", "listname": "users"}),
    ("server", {"class": "getlist", "function": "listid", "listname": "users", "list": ["1"],
                "replyid": 11, "timenow": 1.5}),
    ("client", {"class": "ipbxcommand", "command": "originate", "source": "a",
                "destination": "b", "commandid": 12}),
    ("client", {"class": "keepalive", "commandid": 13}),
    ("server", {"class": "keepalive", "replyid": 13, "timenow": 1.5}),
    (7.0, "client", {"class": "keepalive", "commandid": 14}),
    (7.01, "server", {"class": "keepalive", "replyid": 14, "timenow": 1.5}),
]
MID_SESSION = stream(ONE_TWO)
MID_SESSION.insert(1, _cut("client"))  # ctipcap: the first line's start is not in the capture
REPLY_TO_LOST = {"class": "keepalive", "replyid": 9, "timenow": 1.5}
SERVER_SILENT = [r if r.get("event") != "close" else {**r, "bytes": {"client": 9, "server": 0}}
                 for r in stream(LOGIN[::2] + [("client", GETLIST)])]
ALL_CUT = stream([])[:1] + [rec for n in range(50) for rec in (
    _gap("server", T0 + n, missing=100), _cut("server", "x", T0 + n))] + stream([])[1:]

# (name, records, --protocol, rules found, summary says, [summary does not say])
PARTIAL_CASES = [
    ("mid-session capture (the first line cut): no login rule, the version unknown",
     MID_SESSION, "auto", [], "protocol unknown, its login is not in the input): clean; closed by "
     "client; not checked: the login, the version and replies to earlier requests (the capture "
     "began mid-session)"),
    ("no open record", stream(ONE_TWO)[1:], "auto", [], "(the input holds no open record of it)"),
    ("mid-session, --protocol 1.2: rules of 1.2, still no login rule", MID_SESSION, "1.2", [],
     "not checked: the login and replies to earlier requests"),
    ("a whole session of which the login was filtered out", stream(ONE_TWO), "1.2", [],
     "not checked: the login (no login_id in the session)"),
    ("the client's file of ctisplit --jsonl", _without(stream(LOGIN + [("client", GETLIST)]),
                                                        "server"), "auto", [],
     "clean; closed by client; not checked: the login and the pairing (the server side is absent)"),
    ("the server's file of ctisplit --jsonl",
     _without(stream(LOGIN + [("client", {"class": "keepalive", "commandid": 9}),
                              ("server", REPLY_TO_LOST)]), "client"), "auto", [],
     "not checked: the pairing (the client side is absent)"),
    ("a server that said nothing (the close says so): its silence is a finding",
     SERVER_SILENT, "auto", ["R1", "R1", "L1", "L1"], "4 findings (L1 2, R1 2)", "not checked"),
    ("a ctipcap gap on the client side: the request may be in it",
     stream(LOGIN + [("event", {"event": "gap", "side": "client", "missing": 38}),
                     ("server", REPLY_TO_LOST)]), "auto", [],
     "clean; closed by client; not checked: the pairing across the gaps (38 bytes missing)"),
    ("the relay's tap lost records (no side)",
     stream(LOGIN + [("event", {"event": "gap", "lost": 2}), ("server", REPLY_TO_LOST)]), "auto",
     [], "not checked: the pairing across the gaps (2 records lost)"),
    ("a gap on the server side after a request: its answer may be in it",
     stream(LOGIN + [("client", GETLIST), ("event", {"event": "gap", "side": "server",
                                                      "missing": 90})]), "auto", [], "clean"),
    ("a gap before a request does not excuse its missing answer",
     stream(LOGIN + [("event", {"event": "gap", "side": "server", "missing": 90}),
                     ("client", GETLIST)]), "auto", ["R1"], "1 finding (R1 1)"),
    ("a cut line on the server side may be the answer",
     stream(LOGIN + [("client", GETLIST)])[:-1] + [_cut("server", "x", T0 + 1)]
     + stream([])[1:], "auto", [], "clean"),
    ("an upgrade to TLS the input does not hold (ctipcap): the login is not seen",
     stream([("server", OFFER), ("client", {"class": "starttls", "status": True}),
             ("server", ECHO), ("event", {**TLS, "intercepted": False}), (7.0, "event", {
                 "event": "note"})], "server"), "auto", [],
     "not checked: the login (no login_id in the session); what followed the TLS upgrade "
     "(encrypted, not in the input)"),
    ("every line cut: nothing to check", ALL_CUT, "auto", [],
     "nothing to check (no whole line in the input); closed by client; not checked: the login, "
     "the version and replies to earlier requests (the capture began mid-session); the pairing "
     "(the client side is absent); the pairing across the gaps (5000 bytes missing)"),
]


@pytest.mark.parametrize("case", PARTIAL_CASES, ids=[case[0] for case in PARTIAL_CASES])
def test_what_the_input_does_not_hold_gives_no_finding_and_is_said(case):
    name, records, version, rules, says = case[:5]
    assert rules_of(records, version) == rules, check(records, version)
    summary = _summary(records, version)
    assert says in summary
    if len(case) > 5:
        assert case[5] not in summary
    assert "clean" not in summary or "nothing to check" not in summary


def test_one_sided_files_are_told_as_ctistat_tells_them():
    from ctipipe.stages import stats
    records = _without(stream(LOGIN + [("client", GETLIST)]), "server")
    stat = stats.Stat(False, True)
    out = [stat.handle(r, orjson.dumps(r)) for r in records]
    [summary] = [orjson.loads(line) for line in out if line]
    assert summary["absent"] == "server"
    assert "the server side is absent" in _summary(records)


# --- wire values in findings: as JSON, escaped for the terminal -------------------------

WORDING_CASES = [  # (side, message, text of the finding)
    ("client", {"class": "getlist", "function": {"a": 1}},
     'getlist function {"a":1} is unknown to protocol 2.3'),
    ("client", {"class": ["getlist"]}, 'class ["getlist"] is not a string'),
    ("client", {"class": "featuresput", "function": "enablednd", "value": None},
     "featuresput enablednd value null is not a JSON boolean"),
    ("client", {"class": "getlist", "function": "listid", "listname": "a\u202eb"},
     'getlist listid of unknown list "a\\u202eb"'),
    ("client", {"class": "ipbxcommand", "command": {"a": 1}},
     'ipbxcommand command {"a":1} is unknown'),
    ("client", {"class": "getlist", "function": "listid", "listname": ["users"]},
     'getlist listid of unknown list ["users"]'),
    ("server", {"class": ["x"], "replyid": 1, "timenow": 1},
     '["x"] reply with replyid'),
    ("server", {"class": "getlist", "error_string": False, "timenow": 1},
     "getlist error false: not an error the real server sends"),
    ("client", {**LOGIN_ID, "wazoversion": None},
     "no version field (wazoversion is null): a real server answers wazoversion_client:None;2.3"),
    ("client", {**LOGIN_ID, "wazoversion": [2, 3]},
     "[2,3] is not a CTI protocol version (1.2, 2.0, 2.1, 2.2, 2.3): a real server answers "
     "wazoversion_client:[2,3];2.3"),
]


@pytest.mark.parametrize("side, message, text", WORDING_CASES)
def test_findings_show_wire_values_as_json(side, message, text):
    found = check(stream(LOGIN + [(side, message)]))
    assert any(text in f.text for f in found), [f.text for f in found]
    assert not any("None is not" in f.text or "{'" in f.text or "['" in f.text for f in found)


# --- ctistat and ctipretty on what a capture does not hold -------------------------------

@pytest.mark.parametrize("gap, completed, note", [
    ({"side": "server", "missing": 100}, 0, "1 session with bytes missing from the capture"),
    ({"lost": 3}, 0, "1 session with records lost"),
    ({}, 1, None),  # no gap: the run completed
])
def test_ctistat_counts_a_gap_of_either_kind(gap, completed, note):
    from ctipipe.stages import stats
    records = stream(LOGIN + ([("event", {"event": "gap", **gap})] if gap else []))
    stat = stats.Stat(False, False, totals="only")
    for record in records:
        stat.handle(record, orjson.dumps(record))
    text = stat.finish().decode()
    assert f"{completed} of 1 session completed" in text
    assert (note in text) if note else "with records lost" not in text and "missing" not in text


@pytest.mark.parametrize("record", [
    _cut("client"),  # the first line of a capture that began mid-session
    {"ts": T0, "conn": 1, "from": "server", "size": 3, "partial": True, "raw": "{\"c"},  # at a gap
])
def test_ctipretty_says_what_partial_means_not_a_cause(record):
    shown = pretty.Pretty(compact=True, color=False, clock="none")
    shown.handle(record, orjson.dumps(record))
    text = (shown.finish() or b"").decode()
    assert "an incomplete line: its start or its end is not in the stream" in text
    assert "the connection closed before the end of this line" not in text

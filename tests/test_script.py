"""Reading a recording into per-side scripts: pairing, timing, raw lines, bad input."""
import base64
import json

import pytest

from ctipipe.replay import script
from ctipipe.replay.script import ScriptError


def rec(*records) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def msg(ts, side, body, conn=1):
    return {"ts": ts, "conn": conn, "from": side, "size": 0, "msg": body}


OPEN = {"ts": 100.0, "conn": 1, "event": "open", "client": "c:1", "server": "s:2"}


def test_replies_pair_by_replyid_as_number_or_string():
    s = script.load(rec(OPEN,
                        msg(100.1, "client", {"class": "getlist", "commandid": 7}),
                        msg(100.2, "client", {"class": "getlist", "commandid": "8"}),
                        msg(100.3, "server", {"class": "getlist", "replyid": 8}),
                        msg(100.4, "server", {"class": "getlist", "replyid": "7"}),
                        msg(100.5, "server", {"class": "getlist", "replyid": 99})))
    assert [line.answers for line in s.server] == [1, 0, None]
    assert s.client[0].replies == [1] and s.client[1].replies == [0]


def test_login_replies_without_replyid_pair_by_class():
    s = script.load(rec(OPEN,
                        msg(100.1, "client", {"class": "login_id", "commandid": 1}),
                        msg(100.2, "server", {"class": "sheet"}),
                        msg(100.3, "server", {"class": "login_id", "sessionid": "x"}),
                        msg(100.4, "client", {"class": "login_pass", "commandid": 2, "password": "p"}),
                        msg(100.5, "server", {"class": "login_pass", "capalist": [1]})))
    assert [line.answers for line in s.server] == [None, 0, 1]
    assert [line.after for line in s.server] == [1, 1, 2]
    assert [line.after for line in s.client] == [0, 2]


def test_delays_are_from_the_previous_record_of_either_side():
    s = script.load(rec(OPEN,
                        msg(100.5, "server", {"class": "starttls"}),
                        msg(101.0, "client", {"class": "login_id", "commandid": 1}),
                        msg(101.25, "server", {"class": "login_id"})))
    assert [round(line.delay, 3) for line in s.server] == [0.5, 0.25]
    assert round(s.client[0].delay, 3) == 0.5


def test_the_wire_text_is_kept_and_raw_lines_are_sent_as_they_were():
    data = (b'{"ts":1.0,"conn":1,"from":"server","size":31,"msg":{"class": "a",  "x": 1}}\n'
            + rec({"ts": 2.0, "conn": 1, "from": "server", "size": 9, "raw": "not json"},
                  {"ts": 3.0, "conn": 1, "from": "server", "size": 2,
                   "raw_b64": base64.b64encode(b"\xff\xfe").decode()},
                  {"ts": 4.0, "conn": 1, "from": "server", "size": 3, "partial": True, "raw": "abc"},
                  {"ts": 5.0, "conn": 1, "from": "server", "size": 4, "chunk": True, "raw": "x\ny\n"}))
    s = script.load(data)
    assert [line.wire for line in s.server] == [b'{"class": "a",  "x": 1}\n', b"not json\n",
                                                b"\xff\xfe", b"abc", b"x\ny\n"]
    assert s.server[0].msg == {"class": "a", "x": 1} and s.server[1].msg is None


@pytest.mark.parametrize("data", [
    b'{"ts":1.0,"conn":1,"from":"server","size":{"a":1,"msg":2},"msg":{"class":"a"}}\n',
    b'{"ts":1.0,"conn":1,"from":"server","size":1,"msg":{"class":"a"},"size":{"msg":{"x":1}}}\n',
    b'{"ts":1.0,"conn":1,"from":"server","size":1,"msg":{"class":"a"},"ts":1.27}\n',
])
def test_a_msg_key_inside_another_keys_object_or_a_key_after_it_is_not_sent(data):
    """The message's wire text is what the recorded peer sent, never a piece of
    another key (a crafted line): else the message is encoded again."""
    assert [line.wire for line in script.load(data).server] == [b'{"class":"a"}\n']


def test_oversize_pieces_become_one_line():
    data = rec({"ts": 1.0, "conn": 1, "from": "server", "size": 3, "oversize": True, "raw": "abc"},
               {"ts": 1.0, "conn": 1, "from": "server", "size": 3, "oversize": True, "raw": "def"},
               {"ts": 1.0, "conn": 1, "from": "server", "size": 2, "oversize": True, "raw": "g"})
    assert [line.wire for line in script.load(data).server] == [b"abcdefg\n"]


def test_default_session_is_the_first_and_conn_selects_another():
    data = rec(msg(1.0, "server", {"class": "a"}, conn=4), msg(1.0, "server", {"class": "b"}, conn=2))
    assert script.load(data).conn == 4
    assert script.load(data, 2).server[0].msg == {"class": "b"}
    with pytest.raises(ScriptError, match="no session 3 .*its sessions: 4, 2"):
        script.load(data, 3)


@pytest.mark.parametrize("data, why", [
    (b"", "no session"),
    (rec({"ts": 1.0, "event": "start", "stream": 1, "producer": "ctirelay 0.1.0"}), "no session"),
    (rec(OPEN, msg(100.1, "client", {"class": "login_id"})), "no server messages"),
    (rec(OPEN, msg(1.0, "server", {"class": "a"}))[:-9], "cut short"),
    (b"hello\n" + rec(OPEN), "line 1 is not JSON"),
    (b"[1]\n", "line 1 is not a JSON object"),
])
def test_bad_recordings_say_why(data, why):
    with pytest.raises(ScriptError, match=why):
        script.load(data)


def test_a_last_line_without_newline_that_is_whole_is_accepted():
    assert len(script.load(rec(OPEN, msg(1.0, "server", {"class": "a"}))[:-1]).server) == 1


def test_without_starttls_leaves_out_the_upgrade_and_keeps_the_pairing():
    s = script.load(rec(OPEN,
                        msg(100.0, "server", {"class": "starttls"}),
                        msg(100.1, "client", {"class": "starttls", "commandid": 1, "status": True}),
                        msg(100.2, "server", {"class": "starttls", "starttls": True}),
                        {"ts": 100.3, "conn": 1, "event": "tls", "how": "starttls", "intercepted": True},
                        msg(100.4, "client", {"class": "login_id", "commandid": 2}),
                        msg(100.5, "server", {"class": "login_id"})))
    assert s.starttls and s.server[2].answers == 1
    plain = s.without_starttls()
    assert not plain.starttls
    assert [line.cls for line in plain.client] == ["login_id"]
    assert [(line.cls, line.answers, line.after) for line in plain.server] == [("login_id", 0, 1)]
    assert plain.client[0].replies == [0] and plain.client[0].after == 0


def test_hashed_password_is_protocol_1_sha1():
    assert script.hashed_password("21UaGDfst7", "demo") == \
        __import__("hashlib").sha1(b"21UaGDfst7:demo").hexdigest()

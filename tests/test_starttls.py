"""The STARTTLS watcher on its own: events in, (forward, switch) out, no sockets."""
import pytest
from hypothesis import given, settings, strategies as st

from ctipipe.relay.starttls import WATCH_LIMIT, Violation, Watcher

OFFER = b'{"class": "starttls", "timenow": 1795857223.964011}\n'
REQUEST = b'{"class":"starttls","commandid":1534986799,"status":true}\n'
ANSWER = b'{"class": "starttls", "timenow": 1795857223.964377, "starttls": true}\n'
DECLINED = b'{"class": "starttls", "timenow": 1795857223.964377, "starttls": false}\n'
LOGIN = b'{"class":"login_id","userlogin":"alice"}\n'
HELLO = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1"  # a ClientHello's first bytes

# Each case: the reads in order (side, data) and what the watcher says after
# each: "fwd" (forwarded whole, go on), "switch" (forwarded whole, then TLS),
# "plain" (forwarded whole, watching over), "violation" (nothing forwarded).
TABLE = {
    "offer, request, answer": [
        ("server", OFFER, "fwd"), ("client", REQUEST, "fwd"), ("server", ANSWER, "switch")],
    "no offer: the client asks anyway": [("client", REQUEST, "fwd"), ("server", ANSWER, "switch")],
    "the client ignores the offer and logs in": [
        ("server", OFFER, "fwd"), ("client", LOGIN, "plain"), ("server", LOGIN, "fwd-plain")],
    "declined": [("server", OFFER, "fwd"), ("client", REQUEST, "fwd"),
                 ("server", DECLINED, "plain")],
    "answered null": [("client", REQUEST, "fwd"),
                      ("server", b'{"class": "starttls", "starttls": null}\n', "plain")],
    "status false is no request": [
        ("server", OFFER, "fwd"), ("client", b'{"class":"starttls","status":false}\n', "plain")],
    "status missing is no request": [("client", b'{"class":"starttls"}\n', "plain")],
    "the offer pipelined after a request is no answer": [
        ("client", REQUEST, "fwd"), ("server", OFFER, "fwd"), ("server", ANSWER, "switch")],
    "offer and answer in one read": [("client", REQUEST, "fwd"), ("server", OFFER + ANSWER, "switch")],
    "the answer split across reads": [
        ("client", REQUEST, "fwd"), ("server", ANSWER[:20], "fwd"), ("server", ANSWER[20:-1], "fwd"),
        ("server", ANSWER[-1:], "switch")],
    "the request split across reads": [
        ("client", REQUEST[:5], "fwd"), ("client", REQUEST[5:], "fwd"), ("server", ANSWER, "switch")],
    "an answer begun before the request": [
        ("server", ANSWER[:30], "fwd"), ("client", REQUEST, "fwd"), ("server", ANSWER[30:], "switch")],
    "lines pipelined after the request go on in plain": [
        ("client", REQUEST + LOGIN, "fwd"), ("server", ANSWER, "switch")],
    "junk before the answer is passed on": [
        ("client", REQUEST, "fwd"), ("server", b"\x00\xff junk\n[1,2]\n{\"starttls\": true}\n", "fwd"),
        ("server", b'"starttls"\n', "fwd"), ("server", ANSWER, "switch")],
    "a junk first line from the client": [("client", b"\x16\x03\x01junk\n", "plain"),
                                          ("server", ANSWER, "fwd-plain")],
    "a list first line from the client": [("client", b'[{"class":"starttls","status":true}]\n', "plain")],
    "an answer without a request switches nothing": [("server", ANSWER, "fwd"),
                                                    ("client", LOGIN, "plain")],
    "data after the answer cannot be TLS": [("client", REQUEST, "fwd"),
                                            ("server", ANSWER + b"{}\n", "violation")],
    "bytes after the answer's newline too": [("client", REQUEST, "fwd"),
                                             ("server", ANSWER + HELLO, "violation")],
    "nothing is watched after the switch": [("client", REQUEST, "fwd"), ("server", ANSWER, "switch"),
                                           ("client", HELLO, "fwd-plain")],
    "a second exchange after the login is only relayed": [
        ("client", LOGIN, "plain"), ("client", REQUEST, "fwd-plain"), ("server", ANSWER, "fwd-plain")],
}


@pytest.mark.parametrize("events", TABLE.values(), ids=TABLE.keys())
def test_table(events):
    watcher = Watcher()
    for step, (side, data, expected) in enumerate(events):
        if expected == "violation":
            with pytest.raises(Violation, match="data after its starttls answer"):
                watcher.feed(side, data)
            assert not watcher.watching
            continue
        forward, switch = watcher.feed(side, data)
        assert forward == data, step  # the watcher never withholds a byte it lets through
        assert switch == (expected == "switch"), step
        assert watcher.watching == (expected == "fwd"), step


def test_a_client_that_says_too_much_without_a_line_is_plain():
    watcher = Watcher()
    watcher.feed("client", b"x" * WATCH_LIMIT)
    assert watcher.watching
    watcher.feed("client", b"x")
    assert not watcher.watching


def test_a_server_that_says_too_much_without_an_answer_is_plain():
    watcher = Watcher()
    watcher.feed("client", REQUEST)
    for _ in range(WATCH_LIMIT // len(OFFER)):
        watcher.feed("server", OFFER)
    assert watcher.watching
    watcher.feed("server", OFFER)
    assert not watcher.watching
    assert watcher.feed("server", ANSWER) == (ANSWER, False)


@settings(max_examples=60)
@given(st.lists(st.integers(1, len(OFFER + ANSWER) - 1), max_size=6))
def test_any_cut_of_the_server_side_switches_at_its_end(cuts):
    """However the reads cut the offer and the answer, the switch is at the last byte."""
    data = OFFER + ANSWER
    watcher = Watcher()
    watcher.feed("client", REQUEST)
    points = sorted(set(cuts)) + [len(data)]
    last = 0
    for point in points:
        forward, switch = watcher.feed("server", data[last:point])
        assert forward == data[last:point]
        assert switch == (point == len(data))
        last = point

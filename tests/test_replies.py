"""The request/reply pairing that ctistat, ctireport and cticheck share: a table of
sessions (client and server messages in order) and what answered what."""
import pytest

from ctipipe.stages import replies
from ctipipe.stages.replies import Pairing, latency_row, nearest_rank


def C(name, commandid=None, **extra):
    message = {"class": name, **extra}
    if commandid is not None:
        message["commandid"] = commandid
    return ("client", message)


def S(name, replyid=None, **extra):
    message = {"class": name, **extra}
    if replyid is not None:
        message["replyid"] = replyid
    return ("server", message)


def follow(steps, max_pending=replies.MAX_PENDING):
    """Feed the steps (at ts 0, 1, 2...) and return what happened, as
    (request ts, request class, reply ts or None, why) tuples in the order known."""
    pairing = Pairing(max_pending)
    seen = []
    for ts, (side, message) in enumerate(steps):
        if side == "client":
            seen += pairing.request(message, float(ts), ref=ts)
        else:
            outcome = pairing.reply(message, float(ts), ref=ts)
            if outcome is not None:
                assert outcome.reply_ref == ts and outcome.request.ref == outcome.request.ts
                seen.append(outcome)
    seen += pairing.end()
    return [(o.request.ts, o.request.name, o.reply_ts, o.why) for o in seen]


CASES = {
    "replyid answers its commandid": (
        [C("getlist", 5), S("getlist", 5)],
        [(0, "getlist", 1, None)]),
    "5 and '5' are the same request": (
        [C("getlist", 5), S("getlist", "5")],
        [(0, "getlist", 1, None)]),
    "replies out of order": (
        [C("a", 1), C("b", 2), S("b", 2), S("a", 1)],
        [(1, "b", 2, None), (0, "a", 3, None)]),
    "a reply names its request, not its class": (
        [C("getlist", 1), S("other", 1)],
        [(0, "getlist", 1, None)]),
    "an unknown replyid answers nothing": (
        [C("a", 1), S("a", 9)],
        [(0, "a", None, "no reply")]),
    "a second reply to one request answers nothing": (
        [C("a", 1), S("a", 1), S("a", 1)],
        [(0, "a", 1, None)]),
    "a message without commandid is no request": (
        [C("keepalive"), S("keepalive")],
        []),
    "unsolicited server messages answer nothing": (
        [C("a", 1), S("sheet"), S("getlist")],
        [(0, "a", None, "no reply")]),
    "2.x login replies answer their class without replyid": (
        [C("login_id", 11), S("login_id"), C("login_pass", 12), S("login_pass"),
         C("login_capas", 13), S("login_capas")],
        [(0, "login_id", 1, None), (2, "login_pass", 3, None), (4, "login_capas", 5, None)]),
    "an unnumbered reply answers the oldest of its class": (
        [C("login_id", 1), C("login_id", 2), S("login_id"), S("login_id")],
        [(0, "login_id", 2, None), (1, "login_id", 3, None)]),
    "a login reply of another class answers nothing": (
        [C("login_id", 1), S("login_pass", error_string="login_password")],
        [(0, "login_id", None, "no reply")]),
    "the STARTTLS offer answers nothing, the answer does": (
        [S("starttls", timenow=1.0), C("starttls", 7, status=True), S("starttls", starttls=True)],
        [(1, "starttls", 2, None)]),
    "the offer after a request is not its answer": (
        [C("starttls", 7), S("starttls"), S("starttls", starttls=True)],
        [(0, "starttls", 2, None)]),
    "a reused commandid gives the first request up": (
        [C("a", 1), C("b", 1), S("b", 1)],
        [(0, "a", None, "replaced"), (1, "b", 2, None)]),
    "an unnumbered request answered by replyid is not answered twice": (
        [C("login_id", 1), S("login_id", 1), S("login_id")],
        [(0, "login_id", 1, None)]),
    "a message whose class is not a string": (
        [("client", {"class": 3, "commandid": 1}), ("server", {"replyid": 1})],
        [(0, "(no class)", 1, None)]),
    "a message that is no object is neither": (
        [("client", [1]), ("server", "x"), C("a", 1)],
        [(2, "a", None, "no reply")]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pairing(name):
    steps, expected = CASES[name]
    assert follow(steps) == expected


def test_pending_requests_are_bounded_and_the_oldest_given_up():
    steps = [C("a", n) for n in range(5)] + [S("a", 4)]
    assert follow(steps, max_pending=3) == [
        (0, "a", None, "given up"), (1, "a", None, "given up"), (4, "a", 5, None),
        (2, "a", None, "no reply"), (3, "a", None, "no reply")]


def test_outcome_latency_and_expectation():
    pairing = Pairing()
    pairing.request({"class": "getlist", "commandid": 1}, 10.0)
    outcome = pairing.reply({"class": "getlist", "replyid": 1}, 10.0025)
    assert outcome.answered and outcome.expected
    assert outcome.latency == pytest.approx(0.0025)
    assert outcome.latency_ms == pytest.approx(2.5)
    pairing.request({"class": "logout", "commandid": 2}, 11.0)
    [left] = pairing.end()
    assert not left.answered and left.latency is None and left.why == replies.NO_REPLY
    assert "logout" in replies.NO_REPLY_EXPECTED  # the protocol's table (core/protocol.py)
    assert not left.expected


@pytest.mark.parametrize("values, fraction, rank", [
    ([], 0.5, None), ([3.0], 0.99, 3.0), ([1.0, 2.0], 0.5, 1.0), ([1.0, 2.0, 3.0], 0.5, 2.0),
    (list(map(float, range(1, 101))), 0.95, 95.0), (list(map(float, range(1, 101))), 0.99, 99.0),
    (list(map(float, range(1, 21))), 0.95, 19.0), (list(map(float, range(1, 21))), 0.99, 20.0)])
def test_nearest_rank(values, fraction, rank):
    assert nearest_rank(values, fraction) == rank


def test_latency_row_rounds_to_the_microsecond():
    assert latency_row([2.00049, 1.0, 3.0], 2) == {
        "count": 3, "median_ms": 2.0, "p95_ms": 3.0, "p99_ms": 3.0, "max_ms": 3.0, "no_reply": 2,
        "no_reply_expected": 0}
    assert latency_row([], 1) == {"count": 0, "median_ms": None, "p95_ms": None,
                                  "p99_ms": None, "max_ms": None, "no_reply": 1,
                                  "no_reply_expected": 0}


@pytest.mark.parametrize("message", [
    {"class": [], "commandid": 1}, {"class": {}, "commandid": 1},
    {"class": "getlist", "function": [], "listname": {}, "tid": [], "commandid": 1}])
def test_keys_of_any_json_type_pair_without_error(message):
    pairing = Pairing()
    assert pairing.request(message, 1.0) == []
    # a reply of the same shape: whatever it answers, it is said without an error
    pairing.reply({key: value for key, value in message.items() if key != "commandid"}, 2.0)
    assert len(pairing.end()) <= 1

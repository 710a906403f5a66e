"""--no-starttls leaves the STARTTLS lines out of a script: the result is the
script of the same recording without those lines, and the work is linear in
the recording (it was quadratic: 20k+20k messages took 21.9 s)."""
import json

import pytest

from hypothesis import given
from hypothesis import strategies as st

from ctipipe.replay import script


def recording(steps) -> bytes:
    """A recording from (side, class) steps: each client request a fresh
    commandid, each server reply answering the oldest request of its class."""
    records = [{"ts": 0.0, "conn": 1, "event": "open", "client": "c:1", "server": "s:2"}]
    pending: dict[str, list[int]] = {}
    for n, (side, cls) in enumerate(steps):
        body = {"class": cls}
        if side == "client":
            body["commandid"] = n
            pending.setdefault(cls, []).append(n)
        elif cls == "starttls":
            body["starttls"] = True  # an answer (or an offer when none is pending)
        elif pending.get(cls):
            body["replyid"] = pending[cls].pop(0)
        records.append({"ts": float(n), "conn": 1, "from": side, "size": 0, "msg": body})
    records.append({"ts": float(len(steps)), "conn": 1, "event": "close", "by": "server"})
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def shape(s: script.Script) -> list:
    return [[(line.cls, line.wire, line.after, line.answers, line.replies) for line in side]
            for side in (s.client, s.server)]


STEPS = st.lists(st.tuples(st.sampled_from(["client", "server"]),
                           st.sampled_from(["starttls", "getlist", "login_id", "sheet"])),
                 max_size=40).map(lambda steps: steps + [("server", "sheet")])


@given(STEPS)
def test_leaving_starttls_out_is_the_recording_without_it(steps):
    full = script.load(recording(steps))
    kept = [step for step in steps if step[1] != "starttls"]
    plain = script.load(recording(kept))
    # The commandids are the steps' positions, which differ: compare the
    # pairings, positions and classes, and the wire of a line without ids.
    without = full.without_starttls()
    assert [[t[:1] + t[2:] for t in side] for side in shape(without)] == \
        [[t[:1] + t[2:] for t in side] for side in shape(plain)]
    assert not without.starttls


# Not a timing assert: a bound on a hang. Linear, this takes about a second;
# counting anew for each line (quadratic) took 48 s on this machine.
@pytest.mark.timeout(30)
def test_a_long_recording_keeps_every_pairing():
    steps = [("server", "starttls"), ("client", "starttls"), ("server", "starttls")]
    for _ in range(20_000):
        steps += [("client", "getlist"), ("server", "getlist")]
    without = script.load(recording(steps)).without_starttls()
    assert len(without.client) == len(without.server) == 20_000
    assert [line.after for line in without.client] == list(range(20_000))
    assert [line.after for line in without.server] == list(range(1, 20_001))
    assert all(line.answers == line.index for line in without.server)
    assert all(line.replies == [line.index] for line in without.client)

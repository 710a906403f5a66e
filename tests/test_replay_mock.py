"""The mock in-process (memory streams, autojump_clock): the recorded pauses
to the exact virtual second, a client that leaves during one, and the cap on
what a hostile client gets said."""
import pytest
import trio

from ctipipe.replay import report
from replay_peers import msg, rec, received, serving_one


def pause_recording(gap: float) -> bytes:
    return rec({"ts": 100.0, "conn": 1, "event": "open", "client": "c:1", "server": "s:2"},
               msg(100.0, "client", {"class": "login_id", "commandid": 1}),
               msg(100.01, "server", {"class": "login_id", "sessionid": "abc"}),
               msg(100.01 + gap, "server", {"class": "sheet", "n": 1}),
               {"ts": 100.02 + gap, "conn": 1, "event": "close", "by": "server"})


@pytest.mark.parametrize("pace, gap", [(1.0, 2.0), (10.0, 0.2), (float("inf"), 0.0)])
async def test_a_recorded_pause_is_kept_at_the_pace_asked(autojump_clock, pace, gap):
    async with trio.open_nursery() as nursery:
        server, ours = serving_one(pause_recording(2.0), nursery, pace=pace)
        start = trio.current_time()
        await ours.send_all(b'{"class":"login_id","commandid":42}\n')
        got = await received(ours)  # until the mock closes, as the recorded server did
    assert [(round(when - start, 9), m["class"]) for when, m in got] == \
        [(round(0.01 / pace, 9), "login_id"), (round(0.01 / pace + gap, 9), "sheet")]
    assert report.run_report(server.results)[0] == "session 1: followed the recording"


async def test_a_client_that_leaves_during_a_recorded_pause_ends_the_session_at_once(autojump_clock):
    # The mock slept through the recorded pause (a minute) before it noticed.
    recording = rec(msg(1.0, "server", {"class": "hello"}), msg(61.0, "server", {"class": "later"}),
                    {"ts": 62.0, "conn": 1, "event": "close", "by": "server"})
    async with trio.open_nursery() as nursery:
        server, ours = serving_one(recording, nursery)
        start = trio.current_time()
        assert (await ours.receive_some(1 << 16)).startswith(b'{"class":"hello"')
        await ours.aclose()
    assert trio.current_time() - start < 1.0
    assert report.run_report(server.results)[0] == (
        "session 1: diverged: the client left with 1 recorded server messages still to come")


async def test_a_client_sending_only_unexpected_messages_gets_ten_lines_said(autojump_clock):
    recording = rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                    msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}))
    async with trio.open_nursery() as nursery:
        server, ours = serving_one(recording, nursery, timeout=5.0)
        for n in range(500):
            await ours.send_all(b'{"class":"evil%d","commandid":%d}\n' % (n, n))
        await ours.send_all(b'{"class":"login_id","commandid":7}\n')
        got = await received(ours)
    assert [m["class"] for _, m in got] == ["login_id"]
    said = server.notices.lines
    assert len(said) == 10
    assert said[0] == ("session 1: unexpected client message evil0 (the recording has login_id "
                       "next): not answered")
    assert said[9] == ("session 1: unexpected client message evil9: not answered; further ones "
                       "are counted in the session's line at the end")
    assert report.run_report(server.results)[0].startswith(
        "session 1: diverged: 500 unexpected (evil0, evil1, evil2, evil3, evil4, evil5, ...)")


async def test_a_request_that_never_comes_is_waited_for_timeout_seconds_exactly(autojump_clock):
    """--timeout: the mock waits that long for the request the recording has next,
    says so, and closes (the recorded client's request never came)."""
    recording = rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                    msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}))
    async with trio.open_nursery() as nursery:
        server, ours = serving_one(recording, nursery, timeout=7.0)
        start = trio.current_time()
        assert await received(ours) == []  # nothing sent, then closed
        waited = trio.current_time() - start
    assert waited == 7.0
    assert report.run_report(server.results)[0].startswith("session 1: diverged")
    assert "login_id" in report.run_report(server.results)[0]


async def test_the_recorded_clients_close_is_waited_for_timeout_seconds_exactly(autojump_clock):
    """The recorded client closed the session: the live one must too, within --timeout;
    a client that stays is closed by the mock after exactly that long, and said."""
    recording = rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                    msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}),
                    {"ts": 2.0, "conn": 1, "event": "close", "by": "client"})
    async with trio.open_nursery() as nursery:
        server, ours = serving_one(recording, nursery, timeout=3.0, pace=float("inf"))
        await ours.send_all(b'{"class":"login_id","commandid":42}\n')
        got = await received(ours)
    assert [(when, m["class"]) for when, m in got] == [(0.0, "login_id")]
    assert trio.current_time() == 3.0  # the reply at once, then the wait for the close
    assert "client's close" in report.run_report(server.results)[0]

"""ctireplay --to against servers in-process (memory streams, autojump_clock):
the recorded pauses are kept to the exact virtual second, and a server that
leaves ends its session at once, even in the middle of a recorded pause."""
import pytest
import trio

from replay_peers import answer, msg, play, rec, run

CLOSE_BY_CLIENT = {"ts": 70.0, "conn": 1, "event": "close", "by": "client"}


def login_then_getlist(pause: float, closed_by: str = "client") -> bytes:
    """login_id, its reply, then getlist `pause` seconds after that reply."""
    return rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
               msg(1.5, "server", {"class": "login_id", "sessionid": "abc"}),
               msg(1.5 + pause, "client", {"class": "getlist", "commandid": 2}),
               msg(2.0 + pause, "server", {"class": "getlist", "replyid": 2, "list": []}),
               {"ts": 3.0 + pause, "conn": 1, "event": "close", "by": closed_by})


def replies(request):
    if request["class"] == "login_id":
        return [{"class": "login_id", "sessionid": "abc"}]
    return [{"class": request["class"], "replyid": request["commandid"], "list": []}]


@pytest.mark.parametrize("pace, at", [(1.0, 5.0), (10.0, 0.5), (float("inf"), 0.0)])
async def test_the_recorded_think_time_is_kept(autojump_clock, pace, at):
    arrived = {}

    async def server(stream):
        def reply(request):
            arrived[request["class"]] = trio.current_time() - start
            return replies(request)
        await answer(stream, reply, close_after="getlist")

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        lines = await run(play(login_then_getlist(5.0, closed_by="server"), nursery, server,
                               pace=pace))
    assert arrived["login_id"] == 0.0
    assert arrived["getlist"] == pytest.approx(at, abs=1e-9)
    assert lines == ["session 1: followed the recording", "1 of 1 session followed the recording"]


async def test_a_server_that_closes_during_a_recorded_pause_ends_the_session_at_once(autojump_clock):
    # The session slept through the recorded minute after the server had gone.
    async def server(stream):
        await answer(stream, replies, close_after="login_id")

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        crowd = play(login_then_getlist(60.0), nursery, server)
        lines = await run(crowd)
    assert trio.current_time() - start < 1.0  # not the recorded 60 s
    assert lines[0] == ("session 1: diverged: 1 expected and not seen (reply getlist); the server "
                        "closed the connection with 1 recorded client messages still to send")
    assert lines[-1] == "0 of 1 session followed the recording; diverged: 1"


async def test_a_server_that_closes_while_a_reply_is_awaited_ends_it_at_once(autojump_clock):
    async def server(stream):
        await answer(stream, lambda request: [], close_after="login_id")  # no reply, then gone

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        lines = await run(play(login_then_getlist(60.0), nursery, server, timeout=30.0))
    assert trio.current_time() - start < 1.0  # neither the timeout nor the pause
    assert lines[0] == ("session 1: diverged: 2 expected and not seen (reply login_id, reply "
                        "getlist); the server closed the connection with 1 recorded client "
                        "messages still to send")


async def test_a_server_that_closes_where_the_recorded_one_did_is_followed(autojump_clock):
    async def server(stream):
        await answer(stream, replies, close_after="getlist")

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        lines = await run(play(login_then_getlist(60.0, closed_by="server"), nursery, server))
    assert trio.current_time() - start == pytest.approx(60.0)
    assert lines[0] == "session 1: followed the recording"


async def test_ramp_spreads_the_starts_evenly(autojump_clock):
    connected = []

    async def server(stream):
        connected.append(trio.current_time() - start)
        await answer(stream, replies, close_after="getlist")

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        lines = await run(play(login_then_getlist(0.0, closed_by="server"), nursery, server,
                               clients=3, ramp=1.5))
    assert connected == [0.0, 0.5, 1.0]
    assert lines[-1] == "3 of 3 sessions followed the recording"

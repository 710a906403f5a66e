"""ctireplay's live clients in-process: a Crowd whose sessions reach a fake
server over trio memory streams, for tests that run under autojump_clock."""
import json
import os

import trio
import trio.testing

from ctipipe.relay.tap import Tap
from ctipipe.replay import report, script
from ctipipe.replay.crowd import Crowd


def rec(*records) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def msg(ts, side, body):
    return {"ts": ts, "conn": 1, "from": side, "size": 0, "msg": body}


LOGIN = rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
            msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}),
            msg(1.2, "client", {"class": "getlist", "commandid": 2}),
            msg(1.3, "server", {"class": "getlist", "replyid": 2, "list": []}),
            {"ts": 1.4, "conn": 1, "event": "close", "by": "server"})


async def answer(stream, reply, close_after: str = "getlist") -> None:
    """A CTI server over one stream: reply(request) for each request; closes
    once it has answered a request of class `close_after`."""
    buffer = b""
    async with stream:
        while data := await stream.receive_some(1 << 16):
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                request = json.loads(line)
                for out in reply(request):
                    await stream.send_all(json.dumps(out).encode() + b"\n")
                if request["class"] == close_after:
                    return


def play(recording: bytes, nursery, server, **options) -> Crowd:
    """A crowd whose sessions reach server(stream) over memory streams, its
    records going to /dev/null."""
    tap = Tap(os.open(os.devnull, os.O_WRONLY), raw=False, max_line=1 << 20,
              notify=lambda message: None)
    nursery.start_soon(tap.run)

    async def connect():
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(server, theirs)
        return ours, "memory"
    settings = {"clients": 1, "ramp": 0.0, "pace": 1.0, "timeout": 10.0, **options}
    crowd = Crowd(script.load(recording), host="server", port=5003, password=None, tap=tap,
                  max_line=1 << 20, connect=connect, **settings)
    crowd.tap_fd = tap.fd
    return crowd


async def run(crowd: Crowd) -> list[str]:
    await crowd.run("recording.jsonl")
    crowd.tap.close()
    await crowd.tap.finished.wait()
    os.close(crowd.tap_fd)
    return report.run_report(crowd.results)

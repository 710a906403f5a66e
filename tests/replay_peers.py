"""ctireplay in-process over trio memory streams, for tests that run under
autojump_clock: a Crowd whose sessions reach a fake server, a Mock that
serves a test's client."""
import json
import os

import trio
import trio.testing

from ctipipe.relay.tap import Tap
from ctipipe.replay import report, script
from ctipipe.replay.crowd import Crowd
from ctipipe.replay.mock import Mock


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


def devnull_tap(nursery) -> Tap:
    """A tap whose records go to /dev/null, running in `nursery`."""
    return file_tap(nursery, os.devnull)


def file_tap(nursery, path) -> Tap:
    """A tap whose records go to the file `path` (read it once the tap is closed)."""
    tap = Tap(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), raw=False,
              max_line=1 << 20, notify=lambda message: None)
    nursery.start_soon(tap.run)
    return tap


async def close_tap(tap: Tap) -> None:
    tap.close()
    await tap.finished.wait()
    os.close(tap.fd)


def play(recording: bytes, nursery, server, **options) -> Crowd:
    """A crowd whose sessions reach server(stream) over memory streams, its
    records going to /dev/null."""
    tap = devnull_tap(nursery)

    async def connect():
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(server, theirs)
        return ours, "memory"
    settings = {"clients": 1, "ramp": 0.0, "pace": 1.0, "timeout": 10.0, **options}
    return Crowd(script.load(recording), host="server", port=5003, password=None, tap=tap,
                 max_line=1 << 20, connect=connect, **settings)


async def run(crowd: Crowd) -> list[str]:
    await crowd.run("recording.jsonl")
    await close_tap(crowd.tap)
    return report.run_report(crowd.results)


class Said:
    """Standard error as a list of what was said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, message: str) -> None:
        self.lines.append(message)


def mock(recording: bytes | script.Script, nursery, tap: Tap | None = None,
         **options) -> Mock:
    """A mock of `recording` whose records go to /dev/null (or to `tap`); serve one
    client with nursery.start_soon(serve_one, mock, stream); what it says is in
    mock.notices.lines."""
    settings = {"pace": 1.0, "timeout": 10.0, "max_line": 1 << 20, "notices": Said(), **options}
    loaded = recording if isinstance(recording, script.Script) else script.load(recording)
    return Mock(loaded, source="replay:recording.jsonl#1", tap=tap or devnull_tap(nursery),
                loop=False, listen_addr=None, listen_port=0, **settings)


async def serve_one(server: Mock, stream) -> None:
    """Serve one client, then close the tap (the nursery can then end)."""
    await server.play(stream, "peer")
    await close_tap(server.tap)


def serving_one(recording, nursery, **options) -> tuple[Mock, trio.StapledStream]:
    """A mock of `recording` serving one client in `nursery`; the mock and the client's end."""
    server = mock(recording, nursery, **options)
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_one, server, theirs)
    return server, ours


async def received(stream) -> list[tuple[float, dict]]:
    """Every message the peer sends until it closes, with the trio time it came."""
    got, buffer = [], b""
    while data := await stream.receive_some(1 << 16):
        *lines, buffer = (buffer + data).split(b"\n")
        got += [(trio.current_time(), json.loads(line)) for line in lines]
    return got

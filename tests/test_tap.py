"""The tap in-process: its output is a pipe the test reads (or does not read)."""
import collections
import json
import os
import threading
import time

import orjson
import trio

from ctipipe.relay import tap as tap_module
from ctipipe.relay.tap import Tap

MESSAGE = b'{"class":"getlist","function":"updatestatus","listname":"agents","tid":7}\n'


class Reader:
    """Reads the tap's pipe in a thread: stopped, throttled, or at full speed."""

    def __init__(self, fd: int, rate: float | None = None, running: bool = True) -> None:
        self.fd = fd
        self.rate = rate  # bytes per second, None: as fast as it can
        self.data = bytearray()
        self.running = threading.Event()
        if running:
            self.running.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.running.wait()
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return
            self.data += chunk
            if self.rate:
                time.sleep(len(chunk) / self.rate)

    def records(self) -> list[dict]:
        self.thread.join(10)
        return [json.loads(line) for line in self.data.splitlines()]


def pipe_tap(**options) -> tuple[Tap, int]:
    read_end, write_end = os.pipe()
    return Tap(write_end, raw=options.pop("raw", False), max_line=1 << 20,
               notify=options.pop("notify", lambda message: None), **options), read_end


async def pump(tap: Tap, side, data: bytes, reads: int, waits: list | None = None) -> None:
    """What a relay pump does with each read: wait only while the tap is full."""
    for _ in range(reads):
        if tap.full:
            if waits is not None:
                waits.append(side.session.conn)
            await tap.room()
        tap.data(side, time.time(), data)
        await trio.lowlevel.checkpoint()


async def finish(tap: Tap) -> None:
    tap.close()
    await tap.finished.wait()
    os.close(tap.fd)


async def test_a_slow_reader_never_holds_up_the_sessions():
    """A reader at 2 MB/s: 24 MB (over four times what the tap holds for a slow
    reader, OUTPUT_LIMIT and its 1 MiB pipe) go through the tap long before the
    reader could have read half; what it could not take is dropped and counted
    in gaps."""
    tap, read_end = pipe_tap()
    reader = Reader(read_end, rate=2e6)
    chunk = MESSAGE * 800  # 60 KB, one read
    reads = 24_000_000 // len(chunk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.run)
        session = tap.session(1)
        await pump(tap, session.server, chunk, reads)
        behind = len(reader.data)
        reader.rate = None
        tap.closed(session, time.time(), {"by": "server"})
        await finish(tap)
    assert behind < 12_000_000, "the sessions were paced by the reader"
    records = reader.records()
    lost = sum(r["lost"] for r in records if r.get("event") == "gap")
    assert lost > 0
    assert sum(1 for r in records if "msg" in r) + lost == reads * 800
    assert records[-1]["event"] == "close"


async def test_a_saturated_tap_loses_nothing_when_the_output_keeps_up(tmp_path):
    """The tap saturates the CPU, the output (a file) never waits on a reader:
    the sessions wait for the tap's CPU work instead of losing records.
    Eight sessions each hand it a 60 KB read per turn of the event loop, more
    than the formatter takes in a turn (WRITE_BATCH): 5.8 MB in all, five times
    its queue (QUEUE_LIMIT), which fills."""
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    tap = Tap(fd, raw=False, max_line=1 << 20, notify=lambda message: None)
    chunk = MESSAGE * 800
    sessions, reads = 8, 12
    assert sessions * reads * len(chunk) > 5 * tap_module.QUEUE_LIMIT
    waits: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.run)
        live = [tap.session(conn) for conn in range(1, sessions + 1)]
        async with trio.open_nursery() as pumps:
            for session in live:
                pumps.start_soon(pump, tap, session.client, chunk, reads, waits)
        for session in live:
            tap.closed(session, time.time(), {"by": "client"})
        await finish(tap)
    assert waits, "the tap was never full: the test did not test"
    records = [orjson.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()]
    assert not [r for r in records if r.get("event") == "gap"]
    per_session = collections.Counter(r["conn"] for r in records if "msg" in r)
    assert per_session == {conn: reads * 800 for conn in range(1, sessions + 1)}


async def test_events_count_against_the_bound_when_nobody_reads():
    """30,000 short sessions while stdout is not read: what the tap holds stays bounded."""
    tap, read_end = pipe_tap()
    reader = Reader(read_end, running=False)
    held = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.run)
        for conn in range(1, 30_001):
            session = tap.session(conn)
            tap.opened(session, b'{"ts":1.0,"conn":%d,"event":"open","client":"127.0.0.1:5",'
                                b'"server":"xivo:5003"}\n' % conn)
            tap.data(session.client, 1.5, MESSAGE)
            tap.closed(session, 2.0, {"by": "client", "bytes": {"client": 1, "server": 0}})
            if tap.full:
                await tap.room()
            if conn % 100 == 0:
                await trio.lowlevel.checkpoint()
                held.append(tap.held)
        reader.running.set()
        await finish(tap)
    bound = tap_module.QUEUE_LIMIT + tap_module.OUTPUT_LIMIT + tap_module.EVENT_ROOM + (1 << 20)
    assert max(held) < bound
    records = reader.records()
    closes = [r for r in records if r.get("event") == "close"]
    assert 0 < len(closes) < 30_000  # some were dropped, and counted:
    assert tap.unwritten > 0


async def test_raw_gaps_count_chunks_and_come_before_the_next_record():
    tap, read_end = pipe_tap(raw=True)
    reader = Reader(read_end, running=False)
    chunk = b"a\nb\nc\n" * 10_000  # 60 KB, 30,000 newlines: one chunk each
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.run)
        session = tap.session(1)
        await pump(tap, session.server, chunk, 400)
        await trio.sleep(0)
        while tap.queue:
            await trio.sleep(0.01)
        reader.running.set()
        while tap.held:  # the backlog is read
            await trio.sleep(0.01)
        await pump(tap, session.server, b"last", 1)
        tap.closed(session, time.time(), {"by": "server"})
        await finish(tap)
    records = reader.records()
    [gap] = [r for r in records if r.get("event") == "gap"]
    chunks = [r for r in records if r.get("chunk")]
    assert len(chunks) + gap["lost"] == 401
    after = records[records.index(gap) + 1]
    assert after.get("raw") == "last"


async def test_shutdown_writes_whole_records_and_counts_the_rest(autojump_clock):
    """A reader that does not read at all: after flush_timeout the tap gives up,
    having written only whole records, and says how many it did not write."""
    tap, read_end = pipe_tap(flush_timeout=5.0)
    reader = Reader(read_end, running=False)
    line = b'{"class":"x","pad":"' + b"p" * 1000 + b'"}\n'
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.run)
        session = tap.session(1)
        for _ in range(3000):  # 3 MB: more than the pipe holds, under the drop limit
            tap.data(session.client, 1.0, line)
            await trio.lowlevel.checkpoint()
        tap.closed(session, 2.0, {"by": "client"})
        with trio.fail_after(60):
            await finish(tap)
    reader.running.set()
    records = reader.records()  # each line parses: whole records only
    assert tap.unwritten > 0
    assert len(records) + tap.unwritten == 3001

"""The end of a replay: every diverged session named, the followers counted,
one summary line always; nothing a peer sends grows the report without bound.
In-process: the report is pure, the crowd runs over memory streams."""
import os
import re
import threading

import pytest
import trio

from ctipipe.core.notices import NOTICE_BACKLOG_BYTES, NOTICE_CHARS, Notices
from ctipipe.replay import report
from ctipipe.replay.report import Divergence, Tally
from replay_peers import LOGIN, answer, play, run


def followed() -> Divergence:
    return Divergence()


def diverged(note: str = "getlist answered with error 'x'") -> Divergence:
    d = Divergence()
    d.note(note)
    return d


def interrupted() -> Divergence:
    d = Divergence()
    d.interrupted = True
    return d


# --- the run's report, as a table --------------------------------------------------

SUMMARIES = [
    ([], "no session was played"),
    ([(1, followed())], "1 of 1 session followed the recording"),
    ([(1, diverged())], "0 of 1 session followed the recording; diverged: 1"),
    ([(c, diverged() if c in (12, 404, 977) else followed()) for c in range(1, 1001)],
     "997 of 1,000 sessions followed the recording; diverged: 12, 404, 977"),
    ([(c, diverged() if 3 <= c <= 5 or c == 9 else followed()) for c in range(1, 11)],
     "6 of 10 sessions followed the recording; diverged: 3-5, 9"),
    ([(1, followed()), (2, interrupted()), (3, interrupted())],
     "1 of 3 sessions followed the recording; interrupted before the end: 2-3"),
]


@pytest.mark.parametrize("results, says", SUMMARIES)
def test_the_summary_line_names_every_diverged_session(results, says):
    assert report.summary(results) == says
    assert report.run_report(results)[-1] == says


def test_followers_lines_are_capped_and_counted_diverged_ones_never():
    results = [(c, diverged(f"note {c}") if c % 7 == 0 or c == 1000 else followed())
               for c in range(1000, 0, -1)]  # in any order: reported in session order
    lines = report.run_report(results, followers_shown=20)
    named = [line for line in lines if line.startswith("session ")]
    diverged_lines = [line for line in named if ": diverged: " in line]
    assert [int(line.split()[1].rstrip(":")) for line in diverged_lines] == \
        sorted(c for c in range(1, 1001) if c % 7 == 0 or c == 1000)
    assert "session 1000: diverged: note 1000" in lines
    assert sum(": followed the recording" in line for line in named) == 20
    followers = 1000 - len(diverged_lines)
    assert f"({followers - 20:,} lines not shown: sessions that followed the recording)" in lines
    assert lines[-1].startswith(f"{followers} of 1,000 sessions followed the recording; diverged: 7, 14, ")


def test_nothing_is_said_to_be_cut_when_nothing_is():
    lines = report.run_report([(c, followed()) for c in range(1, 4)], followers_shown=20)
    assert lines == ["session 1: followed the recording", "session 2: followed the recording",
                     "session 3: followed the recording", "3 of 3 sessions followed the recording"]


def test_interrupted_sessions_count_with_the_followers():
    lines = report.run_report([(c, interrupted()) for c in range(1, 6)], followers_shown=2)
    assert lines == ["session 1: interrupted", "session 2: interrupted",
                     "(3 lines not shown: sessions that followed the recording or were interrupted)",
                     "0 of 5 sessions followed the recording; interrupted before the end: 1-5"]


# --- what a peer sends is bounded ---------------------------------------------------

def test_a_tally_keeps_a_bounded_number_of_cut_names_and_counts_every_message():
    tally = Tally()
    for n in range(600):
        tally.add(f"{n:04d}" + "x" * (1 << 16))
    assert tally.total == 600
    assert len(tally.counts) == report.NAMES_KEPT and tally.others == 600 - report.NAMES_KEPT
    assert all(len(name) < report.NAME_CHARS + 40 for name in tally.counts)
    assert len(str(tally)) < 1000 and str(tally).endswith(", ...")
    assert "0000" + "x" * 60 + "... (65,476 more characters)" in str(tally)  # says how much


def test_a_session_line_stays_short_whatever_the_peer_sent():
    d = Divergence()
    for n in range(1000):
        d.unexpected.add(report.label(f"evil{n}" + "y" * 100_000))
        d.note(f"getlist answered with error {report.shown('e' * 100_000)}")
    line = d.summary()
    assert line.startswith("diverged: 1000 unexpected (evil0yyy")
    assert f"{1000 - report.NOTES_KEPT} more notes" in line
    assert len(line) < 6000


def test_labels_quote_what_came_cut():
    assert report.label(None) == "a line that is not a CTI message"
    assert report.label("getlist") == "getlist"
    assert report.label(17) == "17"
    assert report.label("z" * 100) == "z" * 64 + "... (36 more characters)"


# --- standard error: the report written whole, the backlog bounded in bytes --------

class Pipe:
    """A pipe standing in for standard error, read on demand."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def read_all_later(self) -> list[bytes]:
        out = []
        thread = threading.Thread(target=lambda: out.append(self._drain()), daemon=True)
        thread.start()
        self.thread = thread
        return out

    def _drain(self) -> bytes:
        chunks = []
        while chunk := os.read(self.read_fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)

    def close_writer(self) -> None:
        os.close(self.write_fd)


def test_the_final_report_is_written_whole_while_notices_are_counted_away():
    pipe = Pipe()
    notices = Notices(fd=pipe.write_fd, prog="ctireplay")
    for n in range(2000):  # nobody reads yet: past the backlog, counted
        notices.say(f"notice {n} " + "n" * 100)
    got = pipe.read_all_later()
    lines = [f"session {n}: diverged: 1 unexpected (x)" for n in range(1, 3001)]
    assert notices.say_all(lines, timeout=10)
    assert notices.flush(10)
    pipe.close_writer()
    pipe.thread.join(10)
    text = got[0].decode()
    for line in lines:
        assert f"ctireplay: {line}\n" in text
    assert "messages were not shown: standard error was not being read" in text
    os.close(pipe.read_fd)


def test_the_notices_backlog_is_bounded_in_bytes_and_a_long_message_is_cut():
    pipe = Pipe()
    notices = Notices(fd=pipe.write_fd, prog="ctireplay")
    for n in range(80):  # under the backlog's line count, far over its bytes
        notices.say(f"unexpected {n} " + "c" * (1 << 20))
    got = pipe.read_all_later()
    notices.say("the end")
    assert notices.flush(10)
    pipe.close_writer()
    pipe.thread.join(10)
    text = got[0].decode()
    lines = text.splitlines()
    assert max(map(len, lines)) < NOTICE_CHARS + 100
    assert f"... ({(1 << 20) + len('unexpected 0 ') - NOTICE_CHARS:,} more characters)" in lines[0]
    kept = sum(line.startswith("ctireplay: unexpected ") for line in lines)
    assert kept <= NOTICE_BACKLOG_BYTES // NOTICE_CHARS + 10  # (and what the pipe holds)
    # what was not shown is counted, in one notice or several (one each time the
    # writer made room again, which depends on how fast the reader came)
    said = sum(int(n) for n in re.findall(r"\((\d+) messages were not shown", text))
    assert said == 80 - kept and said > 0
    assert len(text) < NOTICE_BACKLOG_BYTES + 200_000
    os.close(pipe.read_fd)


# --- a crowd in-process: the report of a real run ------------------------------------

async def test_a_crowd_of_300_where_only_the_last_diverged_names_it(autojump_clock):
    accepted = 0

    async def server(stream):
        nonlocal accepted
        accepted += 1
        mine = accepted

        def reply(request):
            if request["class"] == "login_id":
                return [{"class": "login_id", "sessionid": "abc"}]
            error = {"error_string": "overloaded"} if mine == 300 else {}
            return [{"class": "getlist", "replyid": request["commandid"], "list": [], **error}]
        await answer(stream, reply)

    async with trio.open_nursery() as nursery:
        # A ramp of 1 s between starts: the 300th connection is session 300.
        crowd = play(LOGIN, nursery, server, clients=300, ramp=300.0)
        lines = await run(crowd)
    assert lines[-1] == "299 of 300 sessions followed the recording; diverged: 300"
    assert "session 300: diverged: getlist answered with error 'overloaded'" in lines
    assert "(279 lines not shown: sessions that followed the recording)" in lines
    assert len(lines) == 20 + 1 + 1 + 1


async def test_a_hostile_server_s_class_names_are_kept_bounded(autojump_clock):
    async def server(stream):
        def reply(request):
            if request["class"] == "login_id":
                return ([{"class": f"evil{n}" + "\x1b" * 10_000} for n in range(300)]
                        + [{"class": "login_id", "sessionid": "abc"}])
            return [{"class": "getlist", "replyid": request["commandid"], "list": []}]
        await answer(stream, reply)

    async with trio.open_nursery() as nursery:
        crowd = play(LOGIN, nursery, server)
        lines = await run(crowd)
    divergence = crowd.results[0][1]
    assert divergence.unexpected.total == 300
    assert len(divergence.unexpected.counts) == report.NAMES_KEPT
    assert all(len(name) < 200 for name in divergence.unexpected.counts)
    assert lines[0].startswith("session 1: diverged: 300 unexpected (evil0\x1b")
    assert len(lines[0]) < 2000

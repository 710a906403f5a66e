"""A hostile client cannot grow the mock: unexpected messages with class names
of a megabyte are counted in bounded memory and said in short lines. A real
process, since the figure is its peak resident memory."""
import json
import socket
import subprocess
from pathlib import Path

import pytest

from helpers import LOCALHOST, WAIT, Proc, command

pytestmark = pytest.mark.heavy

# The mock's peak resident memory with 120 messages of 1 MiB class names: the
# interpreter with trio (~27 MB), one line being read and decoded (a few
# MiB), the tap's queue and output backlog (5 MiB), the allocator's slack.
# Before the names were bounded, each was kept whole: 157 MB here (and 600
# such messages: 39 MB now, 625 MB then).
MOCK_MEMORY_BOUND_MB = 70

MESSAGES = 120
NAME = 1 << 20


def peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_megabyte_class_names_keep_the_mock_small_and_its_lines_short(tmp_path):
    path = tmp_path / "login.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in (
        {"ts": 1.0, "conn": 1, "from": "client", "size": 0,
         "msg": {"class": "login_id", "commandid": 1}},
        {"ts": 1.1, "conn": 1, "from": "server", "size": 0,
         "msg": {"class": "login_id", "sessionid": "abc"}})))
    mock = Proc(command("ctireplay", str(path), "--listen-addr", LOCALHOST, "--listen-port", "0",
                        "--pace", "asap", "--timeout", "60"), stdout=subprocess.DEVNULL)
    mock.wait_for(lambda p: "listening on" in p.err, what="the mock to listen")
    port = int(mock.err.split("listening on ")[1].split(":")[1])
    sock = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    name = "x" * NAME
    for n in range(MESSAGES):
        sock.sendall(b'{"class":"%d%s","commandid":%d}\n' % (n, name.encode(), n))
    sock.sendall(b'{"class":"login_id","commandid":7}\n')
    with sock.makefile("rb") as reader:  # answered once every line before it was read
        assert json.loads(reader.readline())["class"] == "login_id"
    peak = peak_mb(mock.pid)
    sock.close()
    assert mock.finish(30) == 1
    print(f"mock peak RSS {peak:.1f} MB after {MESSAGES} messages of {NAME >> 20} MiB class names, "
          f"{len(mock.err)} bytes on standard error")
    assert peak <= MOCK_MEMORY_BOUND_MB, f"mock peak RSS {peak:.1f} MB"
    assert len(mock.err) < 20_000, len(mock.err)
    assert max(map(len, mock.err.splitlines())) < 1000
    assert f"session 1: diverged: {MESSAGES} unexpected (0xxx" in mock.err
    assert mock.err.count("unexpected client message") == 10

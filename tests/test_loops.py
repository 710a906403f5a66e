"""A relay pointed at itself: refused at start, and a loop that forms anyway stopped."""
import os
import subprocess

import pytest
import trio
import trio.testing

from helpers import LOCALHOST, WAIT, command, free_port
from ctipipe.relay import loops
from ctipipe.relay.command import Relay
from ctipipe.relay.tap import Tap


@pytest.mark.parametrize("server,listening,loop", [
    ([("127.0.0.1", 5003)], [("127.0.0.1", 5003)], True),
    ([("127.0.0.1", 5003)], [("127.0.0.1", 50030)], False),
    ([("127.0.0.2", 5003)], [("0.0.0.0", 5003)], True),  # every address: 127/8 is this machine
    ([("192.0.2.7", 5003)], [("0.0.0.0", 5003)], False),  # TEST-NET: not this machine
    ([("::1", 5003)], [("::", 5003)], True),
    ([("::1", 5003)], [("0.0.0.0", 5003)], False),  # (another family's listener)
    ([("192.0.2.7", 5003), ("127.0.0.1", 5003)], [("127.0.0.1", 5003)], True),
])
def test_points_at_itself(server, listening, loop):
    assert loops.points_at_itself(server, listening) is loop


async def test_loopback_names_the_session_whose_connection_came_back():
    table = loops.Loopback()
    relay = ("127.0.0.1", 50030)
    table.connecting(1)
    table.connected(1, ("127.0.0.1", 40000), relay)
    assert await table.came_back(("127.0.0.1", 40000), relay) == 1
    assert await table.came_back(("127.0.0.1", 40001), relay) is None
    # the same local port towards another place: another connection
    assert await table.came_back(("127.0.0.1", 40000), ("127.0.0.1", 50031)) is None
    assert await table.came_back(("192.0.2.7", 40000), relay) is None  # not from this machine
    table.ended(1)
    assert await table.came_back(("127.0.0.1", 40000), relay) is None


async def test_a_client_from_this_machine_waits_for_connections_in_progress():
    table = loops.Loopback()
    table.connecting(1)
    answers = []
    async with trio.open_nursery() as nursery:
        async def ask() -> None:
            answers.append(await table.came_back(("127.0.0.1", 40000), ("127.0.0.1", 5003)))
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []
        table.connected(1, ("127.0.0.1", 40000), ("127.0.0.1", 5003))
    assert answers == [1]


def test_a_relay_pointed_at_itself_is_refused_at_start():
    port = str(free_port())
    result = subprocess.run(command("ctirelay", LOCALHOST, "--port", port, "--listen-addr",
                                    LOCALHOST, "--listen-port", port, "--loop"),
                            capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ctirelay: error: {LOCALHOST}:{port} is this relay itself (it listens on "
        f"{LOCALHOST}:{port}): give the CTI server's HOST and --port"]
    assert result.stdout == ""


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = trio.Event()

    def say(self, message: str) -> None:
        self.lines.append(message)
        self.changed.set()
        self.changed = trio.Event()


async def test_a_loop_that_forms_anyway_ends_at_its_first_turn(monkeypatch):
    """As if HOST led back here by a way the start could not see (a port forward):
    the relay's own connection comes back as a client, and is closed."""
    monkeypatch.setattr(loops, "points_at_itself", lambda server, listening: False)
    read_end, write_end = os.pipe()
    said = Said()
    tap = Tap(write_end, raw=False, max_line=1 << 20, notify=said.say)
    port = free_port()
    relay = Relay(LOCALHOST, port, listen_addr=LOCALHOST, listen_port=port, loop=True, tap=tap,
                  verbose=False, connect_timeout=WAIT, notices=said)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tap.run)
            await nursery.start(relay.serve)
            client = await trio.open_tcp_stream(LOCALHOST, port)
            try:
                assert await client.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass  # (reset)
            while not any("came back" in line for line in said.lines):
                await said.changed.wait()
            await client.aclose()
            while relay.handshakes.live:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    tap.close()
    os.close(read_end)
    assert relay.sessions == 2
    assert [line for line in said.lines if "came back" in line] == [
        f"session 2: session 1's connection to {LOCALHOST}:{port} came back to this relay "
        f"(a loop: HOST and --port lead back here); ended"]

"""ctipcap on real captures: tcpdump (and dumpcap) around a demo session
through ctirelay, compared with the relay's own stream, and tshark as an
oracle for the bytes of each side.

These tests need tcpdump and tshark (root, or capture rights, on lo): they
skip in one line when either is missing.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from capturing import Capture, need_tools
import trio

from helpers import LOCALHOST, WAIT, Proc, Relay, command
from ctipipe.demo import client as demo_client
from ctipipe.pcap import command as pcap_command
from ctipipe.stages import stats


def ctipcap(capfd, path, port) -> list[bytes]:
    """ctipcap in-process: its records, checking that it said nothing."""
    assert pcap_command.main([str(path), "--port", str(port)]) == 0
    out, err = capfd.readouterr()
    assert err == ""
    return out.encode().splitlines()


def records_of(lines):
    return [json.loads(row) for row in lines]


def by_side(records, side):
    return [(r["size"], r.get("msg", r.get("raw"))) for r in records if r.get("from") == side]


def stat_of(lines) -> list[dict]:
    """ctistat -m --json of a stream, without what differs between producers (times, addresses)."""
    stage = stats.Stat(network=False, as_json=True)
    out = []
    for row in lines:
        got = stage.handle(json.loads(row), row)
        if got:
            out.append(json.loads(got))
    return [{"messages": s["messages"], "bytes": s["bytes"],
             "latency": {k: (v["count"], v["no_reply"]) for k, v in s["latency"].items()}}
            for s in out]


def wire_bytes(lines, side) -> bytes:
    """A side's bytes as they were on the wire, from the records (the demo's
    lines have no whitespace around the JSON, so a message is its text and a newline)."""
    out = []
    for row in lines:
        record = json.loads(row)
        if record.get("from") != side:
            continue
        if "msg" in record:
            text = row[row.index(b',"msg":') + 7:-1]
            assert len(text) + 1 == record["size"]
            out.append(text + b"\n")
        else:
            out.append(record["raw"].encode() + (b"" if record.get("partial") else b"\n"))
    return b"".join(out)


def follow(path, client, server) -> dict[str, bytes]:
    """tshark -z follow,tcp,raw: the bytes each node of the connection between
    `client` and `server` ("host:port") sent, by "host:port"."""
    result = subprocess.run(["tshark", "-r", str(path), "-q", "-z",
                             f"follow,tcp,raw,{client},{server}"],
                            capture_output=True, text=True, timeout=WAIT * 3, check=True)
    nodes, sent = [], {}
    for text in result.stdout.splitlines():
        if text.startswith("Node "):
            nodes.append(text.split(": ", 1)[1])
            sent[nodes[-1]] = b""
        elif nodes and text and not text.startswith(("=", "Follow", "Filter")):
            node = nodes[1] if text.startswith("\t") else nodes[0]
            sent[node] += bytes.fromhex(text.strip())
    return sent


async def _demo_client(port: int) -> None:
    with trio.fail_after(WAIT * 2):
        await demo_client.run_client(LOCALHOST, port, "alice", 0, starttls=False)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One plain demo session through ctirelay, captured three ways at once:
    tcpdump on lo (pcap, Ethernet), tcpdump on any (Linux cooked v2), dumpcap
    on lo (pcapng). Returns the relay's stream, the ports and the files."""
    need_tools()
    tmp = tmp_path_factory.mktemp("live")
    server = Proc(command("ctidemo", "server", "--port", "0", "--no-starttls"))
    try:
        server.wait_for(lambda p: "listening on" in p.err, what="the demo server")
        server_port = int(server.err.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        relay = Relay(server_port)
        ports = (server_port, relay.port)
        captures = {"lo": Capture(tmp / "lo.pcap", ports, wait=False),
                    "any": Capture(tmp / "any.pcap", ports, interface="any", wait=False),
                    "pcapng": Capture(tmp / "lo.pcapng", ports, tool="dumpcap", wait=False)}
        for one in captures.values():  # (started side by side)
            one.started()
        # The demo client in-process, plain as the server: it waits for no offer.
        trio.run(_demo_client, relay.port)
        assert relay.finish() == 0, relay.err
        for one in captures.values():
            one.stop(legs=2)
        yield {"relay": relay.out.splitlines(), "server_port": server_port,
               "relay_port": relay.port, **{name: c.path for name, c in captures.items()}}
    finally:
        server.kill()


@pytest.mark.parametrize("which", ["lo", "any", "pcapng"])
def test_both_legs_give_the_relays_stream(session, which, capfd):
    relay = session["relay"]
    relayed = records_of(relay)
    for port in (session["server_port"], session["relay_port"]):
        lines = ctipcap(capfd, session[which], port)
        records = records_of(lines)
        for side in ("client", "server"):
            assert by_side(records, side) == by_side(relayed, side)
        close = [r for r in records if r.get("event") == "close"]
        relay_close = [r for r in relayed if r.get("event") == "close"]
        assert len(close) == 1 and close[0]["bytes"] == relay_close[0]["bytes"]
        assert close[0]["by"] == relay_close[0]["by"] == "client"
        assert not [r for r in records if r.get("event") == "gap"]
        assert stat_of(lines) == stat_of(relay)


def test_tshark_follow_is_the_oracle(session, capfd):
    lines = ctipcap(capfd, session["lo"], session["server_port"])
    opened = [r for r in records_of(lines) if r.get("event") == "open"][0]
    sent = follow(session["lo"], opened["client"], opened["server"])
    assert sent[opened["client"]] == wire_bytes(lines, "client")
    assert sent[opened["server"]] == wire_bytes(lines, "server")
    assert len(sent[opened["server"]]) > 1000

"""ctipcap on crafted captures, in-process: every record checked."""
import gzip
import json

import pytest

from ctipipe.pcap import command
from pcapcraft import (ACK, CLIENT6, CPORT, PSH, SERVER6, SPORT, Talk, line, pcap,
                       pcapng_section)

LOGIN = line('{"class":"login_id","commandid":1}')
REPLY = line('{"class": "login_id", "replyid": 1}')


def ctipcap(tmp_path, capfd, data: bytes, *args, name="c.pcap"):
    path = tmp_path / name
    path.write_bytes(data)
    status = command.main([str(path), *args])
    out, err = capfd.readouterr()
    return status, [json.loads(row) for row in out.splitlines()], err


def data_records(records, side=None):
    return [r for r in records if "from" in r and (side is None or r["from"] == side)]


def events(records, name):
    return [r for r in records if r.get("event") == name]


def simple_talk(**options) -> Talk:
    talk = Talk(**options).handshake()
    talk.send("client", LOGIN, ack=True)
    talk.send("server", REPLY, ack=True)
    talk.fin("client")
    talk.fin("server")
    talk.ack("client")
    return talk


def test_a_session(tmp_path, capfd):
    status, records, err = ctipcap(tmp_path, capfd, pcap(simple_talk().packets))
    assert status == 0 and err == ""
    start, opened = records[0], records[1]
    assert start["event"] == "start" and start["producer"].startswith("ctipcap ")
    assert start["files"] == [str(tmp_path / "c.pcap")] and start["stream"] == 1
    assert opened == {"ts": 1700000000.001, "conn": 1, "event": "open",
                      "client": f"10.0.0.1:{CPORT}", "server": f"10.0.0.2:{SPORT}"}
    client, server = data_records(records, "client"), data_records(records, "server")
    assert [r["msg"] for r in client] == [{"class": "login_id", "commandid": 1}]
    assert [r["size"] for r in client] == [len(LOGIN)]
    assert [r["msg"] for r in server] == [{"class": "login_id", "replyid": 1}]
    close = records[-1]
    assert close["event"] == "close" and close["by"] == "client"
    assert close["bytes"] == {"client": len(LOGIN), "server": len(REPLY)}
    assert close["reads"] == {"client": 1, "server": 1}
    # SYN, ACK, data, ACK of the reply, FIN / SYN-ACK, ACK of the login, data, FIN
    assert close["packets"] == {"client": 5, "server": 4}
    assert close["wire_bytes"]["client"] == 5 * 40 + len(LOGIN)
    assert close["wire_bytes"]["server"] == 4 * 40 + len(REPLY)
    assert close["duration"] == pytest.approx(close["ts"] - opened["ts"], abs=2e-6)
    # The server's spacing is kept, as the relay keeps it.
    server_line = [row for row in capfd_lines(tmp_path, capfd) if b'"from":"server"' in row][0]
    assert server_line.endswith(b'"msg":{"class": "login_id", "replyid": 1}}')


def capfd_lines(tmp_path, capfd):
    command.main([str(tmp_path / "c.pcap")])
    return capfd.readouterr()[0].encode().splitlines()


def test_out_of_order_retransmitted_and_overlapping(tmp_path, capfd):
    talk = Talk().handshake()
    text = line('{"class":"getlist","commandid":7,"function":"listid"}')
    seq = talk.seq["client"]
    pieces = [(0, text[:10]), (10, text[10:30]), (30, text[30:])]
    frames = [talk.frame("client", seq + at, PSH | ACK, piece) for at, piece in pieces]
    talk.add(frames[2])  # the last piece first
    talk.add(frames[0])
    talk.add(frames[0])  # retransmitted
    talk.add(talk.frame("client", seq + 5, PSH | ACK, text[5:20]))  # overlapping
    talk.add(frames[1])
    talk.seq["client"] += len(text)
    talk.ack("server")
    talk.fin("client")
    talk.fin("server")
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    client = data_records(records, "client")
    assert [r["msg"] for r in client] == [json.loads(text)]
    assert records[-1]["bytes"]["client"] == len(text)
    assert records[-1]["reads"]["client"] == 5  # every segment that carried data


def test_a_hole_is_a_gap_and_the_line_across_it_is_not_glued(tmp_path, capfd):
    talk = Talk().handshake()
    talk.send("client", b'{"class":"a"}\n{"class":')
    talk.send("client", b'"lost-part","x":1', keep=False)  # never captured
    talk.send("client", b'}\n{"class":"c"}\n')
    talk.ack("server")  # the server received it all
    talk.fin("client")
    talk.fin("server")
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    client = data_records(records, "client")
    assert client[0]["msg"] == {"class": "a"}
    assert client[1] == {**client[1], "raw": '{"class":', "partial": True, "size": 9}
    gap = events(records, "gap")
    assert [(g["side"], g["missing"]) for g in gap] == [("client", len(b'"lost-part","x":1'))]
    assert client[2] == {**client[2], "raw": "}", "partial": True, "size": 2}
    assert client[3]["msg"] == {"class": "c"}
    assert records.index(gap[0]) == records.index(client[1]) + 1
    sizes = sum(r["size"] for r in client) + gap[0]["missing"]
    assert sizes == records[-1]["bytes"]["client"]


def test_a_capture_started_mid_stream(tmp_path, capfd):
    talk = Talk()  # no handshake: the connection was open before the capture
    talk.send("server", b'ass":"x"}\n{"class":"y"}\n')
    talk.send("client", b'{"class":"z"}\n')
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    server = data_records(records, "server")
    assert server[0] == {**server[0], "raw": 'ass":"x"}', "partial": True, "size": 10}
    assert server[1]["msg"] == {"class": "y"}
    # The client side began at a line's start as far as anyone knows, but the
    # capture cannot tell: its first line is flagged too.
    assert data_records(records, "client")[0]["partial"] is True
    assert records[1]["event"] == "open" and records[1]["client"] == f"10.0.0.1:{CPORT}"
    close = records[-1]
    assert close["by"] == "capture-end"
    assert close["ts"] == pytest.approx(talk.packets[-1][0], abs=1e-6)


def test_snap_length_shorter_than_the_segments(tmp_path, capfd):
    talk = Talk().handshake()
    long_line = line('{"class":"getlist","padding":"' + "p" * 200 + '"}')
    talk.send("server", long_line, ack=True)
    talk.send("server", long_line, ack=True)
    talk.fin("server")
    talk.fin("client")
    # 14 + 20 + 20 bytes of headers, then 46 bytes of each segment's data.
    status, records, err = ctipcap(tmp_path, capfd, pcap(talk.packets, snaplen=100))
    server = data_records(records, "server")
    gaps = events(records, "gap")
    assert [g["missing"] for g in gaps] == [len(long_line) - 46] * 2
    assert all(r.get("partial") and "msg" not in r for r in server)
    assert records[-1]["bytes"]["server"] == 2 * len(long_line)


def test_ipv6(tmp_path, capfd):
    talk = simple_talk(client=(CLIENT6, CPORT), server=(SERVER6, SPORT))
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    assert records[1]["client"] == f"[fd00::1]:{CPORT}" and records[1]["server"] == f"[fd00::2]:{SPORT}"
    assert [r["msg"]["class"] for r in data_records(records)] == ["login_id", "login_id"]


@pytest.mark.parametrize("vlans", [((0x8100, 7),), ((0x88A8, 100), (0x8100, 7))],
                         ids=["802.1Q", "QinQ"])
def test_vlan_tags(tmp_path, capfd, vlans):
    status, records, _ = ctipcap(tmp_path, capfd, pcap(simple_talk(vlans=vlans).packets))
    assert len(data_records(records)) == 2 and records[-1]["by"] == "client"


def test_sequence_wrap(tmp_path, capfd):
    talk = Talk(cisn=(1 << 32) - 20).handshake()
    for i in range(5):
        talk.send("client", line('{"class":"keepalive","commandid":%d}' % i), ack=True)
    talk.fin("client")
    talk.fin("server")
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    assert [r["msg"]["commandid"] for r in data_records(records)] == [0, 1, 2, 3, 4]
    assert not events(records, "gap")


def test_two_interleaved_connections(tmp_path, capfd):
    one = Talk(client=("10.0.0.1", 40001), t0=100.0, step=0.01).handshake()
    two = Talk(client=("10.0.0.3", 40002), t0=100.005, step=0.01).handshake()
    for i in range(3):
        one.send("client", line('{"class":"a","n":%d}' % i), ack=True)
        two.send("client", line('{"class":"b","n":%d}' % i), ack=True)
    two.fin("client")
    two.fin("server")
    one.fin("server")
    one.fin("client")
    packets = sorted(one.packets + two.packets)
    status, records, _ = ctipcap(tmp_path, capfd, pcap(packets))
    assert [r["ts"] for r in records[1:]] == sorted(r["ts"] for r in records[1:])
    opens = events(records, "open")
    assert [o["client"] for o in opens] == ["10.0.0.1:40001", "10.0.0.3:40002"]
    by_conn = {1: [], 2: []}
    for r in data_records(records):
        by_conn[r["conn"]].append(r["msg"]["class"])
    assert by_conn == {1: ["a"] * 3, 2: ["b"] * 3}
    assert {c["conn"]: c["by"] for c in events(records, "close")} == {1: "server", 2: "client"}


def test_truncated_file(tmp_path, capfd):
    data = pcap(simple_talk().packets)
    status, records, err = ctipcap(tmp_path, capfd, data[:-100])  # into the server's FIN
    assert status == 0
    assert len(err.splitlines()) == 1 and "ends inside a packet" in err
    assert len(data_records(records)) == 2
    assert records[-1]["event"] == "close" and records[-1]["by"] == "capture-end"


@pytest.mark.parametrize("content", [b"not a capture at all\n", b"", b"\xd4\xc3"],
                         ids=["text", "empty", "too short"])
def test_not_a_capture(tmp_path, capfd, content):
    status, records, err = ctipcap(tmp_path, capfd, content)
    assert status == 2 and records == []
    assert len(err.splitlines()) == 1 and err.startswith("ctipcap: error: ")


def test_gzip(tmp_path, capfd):
    plain = ctipcap(tmp_path, capfd, pcap(simple_talk().packets))[1]
    status, records, _ = ctipcap(tmp_path, capfd, gzip.compress(pcap(simple_talk().packets)),
                                 name="c.pcap.gz")
    assert status == 0 and records[1:] == plain[1:]


@pytest.mark.parametrize("order,nano", [(">", False), ("<", True), (">", True)],
                         ids=["big-endian", "nanoseconds", "big-endian nanoseconds"])
def test_pcap_variants_give_the_same_stream(tmp_path, capfd, order, nano):
    packets = simple_talk(t0=1700000000.123456).packets
    expected = ctipcap(tmp_path, capfd, pcap(packets))[1][1:]
    records = ctipcap(tmp_path, capfd, pcap(packets, order=order, nano=nano))[1][1:]
    assert records == expected


def test_pcapng_sections_and_interfaces(tmp_path, capfd):
    """Two sections (little- then big-endian), the second with two interfaces
    of different link types and timestamp resolutions."""
    eth = simple_talk(t0=1700000000.0).packets
    raw = Talk(client=("10.0.0.5", 40005), t0=1700000001.0, link="raw").handshake()
    raw.send("client", LOGIN, ack=True)
    raw.fin("client")
    raw.fin("server")
    first = pcapng_section([(1, None)], [(0, ts, data) for ts, data in eth[:5]])
    second = pcapng_section([(1, 9), (101, 3)],
                            [(0, ts, data) for ts, data in eth[5:]]
                            + [(1, ts, data) for ts, data in raw.packets], order=">")
    status, records, err = ctipcap(tmp_path, capfd, first + second, name="c.pcapng")
    assert status == 0 and err == ""
    assert [(r["conn"], r["msg"]["class"]) for r in data_records(records)] == [
        (1, "login_id"), (1, "login_id"), (2, "login_id")]
    assert events(records, "open")[1]["ts"] == pytest.approx(1700000001.001, abs=1e-3)
    assert [c["by"] for c in events(records, "close")] == ["client", "client"]


def test_linux_cooked_capture(tmp_path, capfd):
    """`tcpdump -i any` before libpcap 1.10 wrote Linux cooked v1 (SLL)."""
    packets = [(ts, b"\x00\x00\x03\x04\x00\x06" + b"\x00" * 8 + b"\x08\x00" + data[14:])
               for ts, data in simple_talk().packets]
    status, records, _ = ctipcap(tmp_path, capfd, pcap(packets, linktype=113))
    assert len(data_records(records)) == 2


def test_close_by_server_reset(tmp_path, capfd):
    talk = Talk().handshake()
    talk.send("client", LOGIN, ack=True)
    talk.rst("server")
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    assert records[-1]["by"] == "server" and len(events(records, "close")) == 1


def test_starttls_without_keys(tmp_path, capfd):
    talk = Talk().handshake()
    talk.send("server", line('{"class": "starttls", "timenow": 1.5}'), ack=True)
    talk.send("client", line('{"class":"starttls","commandid":9,"status":true}'), ack=True)
    talk.send("server", line('{"class": "starttls", "timenow": 1.6, "starttls": true}'))
    talk.send("client", b"\x16\x03\x01\x02\x00" + bytes(100), ack=True)  # a ClientHello
    talk.send("server", b"\x16\x03\x03\x00\x40" + bytes(64) + b"\n{}\n", ack=True)
    talk.fin("client")
    talk.fin("server")
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    tls = events(records, "tls")
    assert tls == [{**tls[0], "how": "starttls", "intercepted": False}]
    assert records.index(tls[0]) > records.index(data_records(records, "server")[-1])
    assert [r["msg"]["class"] for r in data_records(records)] == ["starttls"] * 3
    close = records[-1]
    assert close["bytes"]["client"] == sum(len(d) for d in (
        line('{"class":"starttls","commandid":9,"status":true}'),)) + 105
    assert close["bytes"]["server"] == (len(line('{"class": "starttls", "timenow": 1.5}'))
                                        + len(line('{"class": "starttls", "timenow": 1.6, "starttls": true}'))
                                        + 5 + 64 + 4)


def test_starttls_refused_stays_plain(tmp_path, capfd):
    talk = Talk().handshake()
    talk.send("client", line('{"class":"starttls","commandid":9,"status":true}'), ack=True)
    talk.send("server", line('{"class": "starttls", "starttls": false}'), ack=True)
    talk.send("client", LOGIN, ack=True)
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    assert not events(records, "tls") and len(data_records(records)) == 3


def test_implicit_tls_port(tmp_path, capfd):
    talk = Talk(server=("10.0.0.2", 5013)).handshake()
    talk.send("client", b"\x16\x03\x01" + bytes(50), ack=True)
    talk.fin("client")
    talk.fin("server")
    status, records, _ = ctipcap(tmp_path, capfd, pcap(talk.packets))
    assert [r.get("event") for r in records] == ["start", "open", "tls", "close"]
    assert records[2]["how"] == "implicit" and records[2]["intercepted"] is False
    assert records[-1]["bytes"]["client"] == 53


def test_port_and_server_options(tmp_path, capfd):
    data = pcap(simple_talk(server=("10.0.0.2", 6000)).packets)
    status, records, err = ctipcap(tmp_path, capfd, data)
    # only the start: nothing on port 5003 or 5013, said in one line naming the port seen
    assert len(records) == 1 and status == 2
    assert err.count("\n") == 1 and "no TCP connection on port 5003 or 5013" in err
    assert "6000 (" in err and "--port" in err
    assert len(data_records(ctipcap(tmp_path, capfd, data, "--port", "6000")[1])) == 2
    assert len(data_records(ctipcap(tmp_path, capfd, data, "--server", "10.0.0.2:6000")[1])) == 2
    assert len(data_records(ctipcap(tmp_path, capfd, data, "--server", "10.0.0.9:6000")[1])) == 0


def test_unknown_link_type(tmp_path, capfd):
    status, records, err = ctipcap(tmp_path, capfd, pcap(simple_talk().packets, linktype=147))
    assert status == 2 and len(err.splitlines()) == 1 and "link type 147" in err


def test_several_files_read_as_one_capture(tmp_path, capfd):
    packets = simple_talk().packets
    (tmp_path / "a.pcap").write_bytes(pcap(packets[:5]))
    (tmp_path / "b.pcap").write_bytes(pcap(packets[5:]))
    status = command.main([str(tmp_path / "a.pcap"), str(tmp_path / "b.pcap")])
    records = [json.loads(row) for row in capfd.readouterr()[0].splitlines()]
    assert status == 0 and len(data_records(records)) == 2 and records[-1]["by"] == "client"
    assert len(events(records, "open")) == 1


def test_ctistat_network_prints_the_measured_figures(tmp_path, capfd):
    from ctipipe.stages import stats
    status, records, _ = ctipcap(tmp_path, capfd, pcap(simple_talk().packets))
    stage = stats.Stat(network=True, as_json=False)
    text = b"".join(stage.handle(r, b"") or b"" for r in records).decode()
    assert "Client IP packets:\t5\nServer IP packets:\t4\nTotal IP packets:\t9\n" in text
    wire = 9 * 40 + len(LOGIN) + len(REPLY)
    assert f"Client wire bytes:\t{5 * 40 + len(LOGIN)}\n" in text
    assert f"Total wire bytes:\t{wire}\n" in text
    assert text.endswith("(IP packets and wire bytes as measured in the capture, not estimated from reads)")


def test_ctipretty_shows_a_capture_gap(tmp_path, capfd):
    from ctipipe.stages import pretty
    line_ = b'{"ts":1.0,"conn":1,"event":"gap","side":"client","missing":17}'
    stage = pretty.Pretty(compact=True, color=False, clock="none")
    stage.handle(json.loads(line_), line_)
    assert b"--- session 1: 17 bytes from the client missing from the capture" in stage.finish()


def test_standard_input_live():
    """`tcpdump -U -w - | ctipcap -`: each record comes out as soon as the packets
    that make it are in the pipe, not at the end of the capture."""
    import subprocess
    from helpers import Proc, command
    data = pcap(simple_talk().packets)
    cut = data.index(LOGIN) + len(LOGIN)  # up to the end of the client's message
    proc = Proc(command("ctipcap", "-"), stdin=subprocess.PIPE)
    proc.popen.stdin.write(data[:cut])
    proc.popen.stdin.flush()
    proc.wait_for(lambda p: b'"class":"login_id","commandid":1' in p.out, what="the first message")
    proc.popen.stdin.write(data[cut:])
    proc.popen.stdin.close()
    assert proc.finish() == 0
    records = [json.loads(row) for row in proc.out.splitlines()]
    assert records[0]["files"] == ["-"] and records[-1]["by"] == "client"


def test_gzip_cut_short(tmp_path, capfd):
    data = gzip.compress(pcap(simple_talk().packets))
    status, records, err = ctipcap(tmp_path, capfd, data[:len(data) * 2 // 3], name="c.pcap.gz")
    assert status == 0 and "ends inside a packet" in err and len(err.splitlines()) == 1
    assert records[0]["event"] == "start" and records[-1]["event"] == "close"


def test_open_sessions_are_bounded(tmp_path, capfd, monkeypatch):
    from ctipipe.pcap import sessions
    monkeypatch.setattr(sessions, "MAX_OPEN", 3)
    packets = []
    for n in range(5):  # five SYNs nobody answers
        talk = Talk(client=("10.0.0.1", 41000 + n), t0=100.0 + n)
        talk.add(talk.frame("client", 1000, 0x02, ack=0))
        packets += talk.packets
    status, records, _ = ctipcap(tmp_path, capfd, pcap(packets))
    closes = events(records, "close")
    assert [c["conn"] for c in closes[:2]] == [1, 2] and "more than 3" in closes[0]["error"]
    assert [c["by"] for c in closes[2:]] == ["capture-end"] * 3

"""TCP reassembly of one direction (ctipipe.pcap.reassembly), as tables of segments."""
import pytest

from ctipipe.pcap.reassembly import MAX_PENDING, Direction

ISN = 1000
W = 1 << 32  # sequence numbers wrap here


def run(steps):
    """Feed steps to a Direction; the stream items it gave, adjacent data joined."""
    direction = Direction()
    items = []
    for step in steps:
        kind, *args = step
        if kind == "syn":
            items += direction.segment(args[0], b"", syn=True)
        elif kind == "seg":
            seq, data, *rest = args
            missing = rest[0] if rest else 0
            items += direction.segment(seq % W, data, missing)
        elif kind == "fin":
            items += direction.segment(args[0] % W, args[1] if len(args) > 1 else b"", fin=True)
        elif kind == "ack":
            items += direction.acked(args[0] % W)
        elif kind == "flush":
            items += direction.flush()
    joined = []
    for item in items:
        if joined and type(item) is bytes and type(joined[-1]) is bytes:
            joined[-1] += item
        else:
            joined.append(item)
    return joined, direction


S = ISN + 1  # the first data byte after the SYN

TABLE = [
    # (name, steps, expected items)
    ("in order", [("syn", ISN), ("seg", S, b"abc"), ("seg", S + 3, b"def")], [b"abcdef"]),
    ("out of order", [("syn", ISN), ("seg", S + 3, b"def"), ("seg", S, b"abc")], [b"abcdef"]),
    ("three reversed", [("syn", ISN), ("seg", S + 6, b"ghi"), ("seg", S + 3, b"def"),
                        ("seg", S, b"abc")], [b"abcdefghi"]),
    ("retransmitted", [("syn", ISN), ("seg", S, b"abc"), ("seg", S, b"abc"), ("seg", S + 3, b"d")],
     [b"abcd"]),
    ("retransmission of held segment", [("syn", ISN), ("seg", S + 3, b"def"), ("seg", S + 3, b"def"),
                                        ("seg", S, b"abc")], [b"abcdef"]),
    ("overlap, first copy kept", [("syn", ISN), ("seg", S, b"abcd"), ("seg", S + 2, b"XXef")],
     [b"abcdef"]),
    ("overlap held", [("syn", ISN), ("seg", S + 2, b"cdef"), ("seg", S + 4, b"XXgh"),
                      ("seg", S, b"ab")], [b"abcdefgh"]),
    ("covering retransmission", [("syn", ISN), ("seg", S + 2, b"cd"), ("seg", S, b"abcdef")],
     [b"abcdef"]),
    ("hole acknowledged", [("syn", ISN), ("seg", S, b"ab"), ("seg", S + 5, b"fg"), ("ack", S + 7)],
     [b"ab", 3, b"fg"]),
    ("hole acknowledged beyond what was seen", [("syn", ISN), ("seg", S, b"ab"), ("ack", S + 10)],
     [b"ab", 8]),
    ("ack of what was seen gives nothing", [("syn", ISN), ("seg", S, b"ab"), ("ack", S + 2),
                                            ("ack", S)], [b"ab"]),
    ("hole at flush", [("syn", ISN), ("seg", S, b"ab"), ("seg", S + 5, b"fg"), ("flush",)],
     [b"ab", 3, b"fg"]),
    ("snap length cut", [("syn", ISN), ("seg", S, b"ab", 4), ("seg", S + 6, b"gh")],
     [b"ab", 4, b"gh"]),
    ("snap cut held", [("syn", ISN), ("seg", S + 6, b"gh"), ("seg", S, b"ab", 4)],
     [b"ab", 4, b"gh"]),
    ("mid-stream start", [("seg", 777, b"xy"), ("seg", 779, b"z")], [b"xyz"]),
    ("wrap-around", [("syn", W - 3), ("seg", W - 2, b"ab"), ("seg", W, b"cd"), ("seg", W + 2, b"e")],
     [b"abcde"]),
    ("wrap-around out of order", [("syn", W - 3), ("seg", W, b"cd"), ("seg", W - 2, b"ab")],
     [b"abcd"]),
    ("old data across the wrap", [("syn", W - 3), ("seg", W - 2, b"abcd"), ("seg", W - 2, b"ab")],
     [b"abcd"]),
    ("FIN after a hole, flushed", [("syn", ISN), ("seg", S, b"ab"), ("fin", S + 4), ("flush",)],
     [b"ab", 2]),
    ("ack of the FIN is not a missing byte", [("syn", ISN), ("seg", S, b"ab"), ("fin", S + 2),
                                              ("ack", S + 3)], [b"ab"]),
]


@pytest.mark.parametrize("name,steps,expected", TABLE, ids=[row[0] for row in TABLE])
def test_reassembly(name, steps, expected):
    assert run(steps)[0] == expected


def test_fin_in_order_finishes():
    _, direction = run([("syn", ISN), ("seg", S, b"ab"), ("fin", S + 2)])
    assert direction.finished


def test_fin_out_of_order_waits_for_the_bytes_before_it():
    _, direction = run([("syn", ISN), ("fin", S + 2)])
    assert not direction.finished
    items, direction = run([("syn", ISN), ("fin", S + 2), ("seg", S, b"ab")])
    assert direction.finished and items == [b"ab"]


def test_mid_stream_start_is_flagged():
    assert run([("seg", 5, b"x")])[1].cut_start
    assert not run([("syn", 4), ("seg", 5, b"x")])[1].cut_start


def test_begin_from_the_peers_ack():
    direction = Direction()
    direction.begin(S)  # the SYN-ACK acknowledged a SYN the capture missed
    assert direction.segment(S + 2, b"cd") == []
    assert direction.segment(S, b"ab") == [b"ab", b"cd"]
    assert not direction.cut_start


def test_memory_is_bounded_behind_a_hole():
    """Behind a hole nobody acknowledges, at most MAX_PENDING bytes wait: then
    the hole is given up as a gap and the bytes flow."""
    direction = Direction()
    direction.segment(ISN, b"", syn=True)
    piece = b"x" * 65536
    given = []
    for i in range(MAX_PENDING // len(piece) + 2):
        given += direction.segment(S + 10 + i * len(piece), piece)
        assert direction.pending_bytes <= MAX_PENDING
    assert given[0] == 10 and sum(len(item) for item in given[1:]) > 0


def test_a_stream_longer_than_4_gib():
    """Offsets are kept relative to the next byte: the sequence space wraps twice."""
    direction = Direction()
    direction.segment(W - 100, b"", syn=True)
    seq, total = W - 99, 0
    chunk = b"y" * 60000
    for _ in range(2 * W // len(chunk) + 5):
        out = direction.segment(seq % W, chunk)
        assert out == [chunk]
        seq += len(chunk)
        total += len(chunk)
    assert direction.offset == total

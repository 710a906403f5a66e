"""Real packet captures for the tests: tcpdump or dumpcap on 127.0.0.1, each on
the ports of its own test (a BPF filter), known to have begun and flushed."""
from __future__ import annotations

import shutil
import signal
import socket
import time

import pytest

from helpers import LOCALHOST, WAIT, Proc, Server
from ctipipe.pcap import capture, packets
from ctipipe.pcap.sessions import Sessions

TOOLS = ("tcpdump", "tshark", "dumpcap")


def need_tools():
    if not all(shutil.which(tool) for tool in TOOLS):
        pytest.skip("apt-get install tcpdump tshark")


class Capture:
    """tcpdump (or dumpcap) writing packets to a file as they come, on the given ports."""

    def __init__(self, path, ports, *, interface="lo", tool="tcpdump", wait=True) -> None:
        """Start the capture and wait until it has begun (or, with wait=False, leave
        that wait to started(): several captures then start side by side)."""
        self.path = path
        self.ports = ports
        self.tool = tool
        self.probe = Server()  # connections to it show when the capture has really begun
        bpf = " or ".join(f"tcp port {port}" for port in (*ports, self.probe.port))
        if tool == "tcpdump":
            # Packet-buffered and in immediate mode, so that the file holds each
            # packet at once; immediate mode gives each packet a ring slot of the
            # snap length, so -s and -B keep enough slots for a burst.
            argv = ["tcpdump", "-i", interface, "-U", "--immediate-mode", "-s", "65535",
                    "-B", "16384", "-n", "-w", str(path), bpf]
            self.ready = "listening on"
        else:
            argv = ["dumpcap", "-q", "-i", interface, "-f", bpf, "-w", str(path)]
            self.ready = "Capturing on"
        self.proc = Proc(argv)
        if wait:
            self.started()

    def started(self) -> None:
        """Wait until the capture has begun."""
        probe = self.probe
        self.proc.wait_for(lambda p: self.ready in p.err, what=f"{self.tool} to start")
        # Its line can come before the capture begins (dumpcap's does): knock
        # on the probe's port until the file holds a packet to it.
        deadline = time.monotonic() + WAIT
        try:
            while not self._holds_port(probe.port):
                assert time.monotonic() < deadline, f"{self.tool} does not capture: {self.proc.err}"
                socket.create_connection((LOCALHOST, probe.port), timeout=WAIT).close()
                probe.accept().close()
                time.sleep(0.02)
        finally:
            probe.close()

    def _packets(self):
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if len(data) < 4:
            return []
        found = []
        for ts, linktype, frame in capture.Parser().feed(data):
            segment = packets.decode(linktype, frame)
            if not isinstance(segment, str):
                found.append((ts, segment))
        return found

    def _holds_port(self, port) -> bool:
        return any(port in (s.sport, s.dport) for _, s in self._packets())

    def stop(self, legs: int) -> None:
        """Wait until the file holds the end of `legs` connections, then end the capture."""
        deadline = time.monotonic() + WAIT
        while not self._ended(legs):
            assert time.monotonic() < deadline, f"the capture {self.path} misses packets"
            time.sleep(0.05)
        self.proc.signal(signal.SIGINT)
        assert self.proc.finish() == 0, self.proc.err
        assert "\n0 packets dropped by kernel" in self.proc.err or "tcpdump" not in self.proc.err, \
            f"a lossy capture: {self.proc.err}"

    def _ended(self, legs: int) -> bool:
        """Does the file hold `legs` connections closed by a FIN or RST?"""
        sessions = Sessions(frozenset(self.ports))
        records = []
        for ts, segment in self._packets():
            if segment.dport in self.ports or segment.sport in self.ports:
                sessions.packet(ts, segment, records)
        return sum(b'"event":"close"' in r for r in records) >= legs



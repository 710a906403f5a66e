"""A relay pointed at itself: refused at start when the server's address is one
it listens on, and a loop that forms anyway (another address of this machine, a
port forward, two relays pointed at each other) stopped at its first session.

A connection is seen from both of its ends: a session's server connection,
from its local address to the server's, is the client the relay accepts when
that connection comes back, from the same address to the same (both ends
compared: two connections to different places may share a local port).
"""
from __future__ import annotations

import ipaddress
import socket

import trio

_WILDCARDS = {"0.0.0.0", "::"}


def points_at_itself(server: list[tuple[str, int]], listening: list[tuple[str, int]]) -> bool:
    """Is one of the server's addresses (ip, port) one the relay listens on?
    A listener on every address (0.0.0.0, ::) takes every address of this machine."""
    for ip, port in server:
        for listen_ip, listen_port in listening:
            if port != listen_port:
                continue
            if _same(ip, listen_ip) or (listen_ip in _WILDCARDS and _family(ip) == _family(listen_ip)
                                        and is_local(ip)):
                return True
    return False


def is_local(ip: str) -> bool:
    """Is this an address of this machine? (Only those can be bound.)"""
    family = _family(ip)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
        return True
    except OSError:
        return False


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return a == b


class Loopback:
    """Our server connections' addresses on this machine, to know a client that
    is one of them come back.

    A session calls `connecting(conn)` before it connects to the server and
    `connected(conn, local, remote)` once it has; `ended(conn)` when it ends. For
    each client, `await came_back(peer, local)` says which session's server
    connection it is (or None). A client from this machine first waits for the connections in
    progress to be made (each is bounded by --connect-timeout): the relay may
    take in a connection of its own before that connection's session learns
    its address.
    """

    def __init__(self) -> None:
        self._locals: dict[tuple, int] = {}  # our server connections' local addresses -> conn
        self._mine: dict[int, tuple] = {}
        self._connecting: dict[int, trio.Event] = {}

    def connecting(self, conn: int) -> None:
        self._connecting[conn] = trio.Event()

    def connected(self, conn: int, local: tuple, remote: tuple) -> None:
        key = _key(local), _key(remote)
        self._locals[key] = conn
        self._mine[conn] = key
        self._made(conn)

    def ended(self, conn: int) -> None:
        self._made(conn)
        key = self._mine.pop(conn, None)
        if key is not None and self._locals.get(key) == conn:
            del self._locals[key]

    async def came_back(self, peer: tuple, local: tuple) -> int | None:
        key = _key(peer), _key(local)
        if not self._locals and not self._connecting or not is_local(key[0][0]):
            return None
        for made in list(self._connecting.values()):
            await made.wait()
        return self._locals.get(key)

    def _made(self, conn: int) -> None:
        made = self._connecting.pop(conn, None)
        if made is not None:
            made.set()


def _key(address: tuple) -> tuple:
    """(ip, port), the same whatever the socket's family said of it."""
    ip, port = address[0], address[1]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, port

"""The STARTTLS watcher: when a plain session switches to TLS, with no I/O.

The exchange on the plain CTI port (XiVO 15.20 to Wazo 19.03):

    S>C {"class": "starttls", "timenow": ...}                   the offer (optional)
    C>S {"class":"starttls","commandid":...,"status":true}      the request
    S>C {"class": "starttls", "timenow": ..., "starttls": true} the answer
        then the client's ClientHello, sent once it has read the answer

The interface, one watcher per session, fed every read of either side in
the order the reads happened:

    watcher = Watcher()
    forward, switch = watcher.feed("client", data)   # forward is all of data
    forward, switch = watcher.feed("server", data)   # data up to the answer
    watcher.watching                                 # False: plain for good

- A client that wants TLS asks for it in its first line; any other first
  line means a plain session (the offer is just passed on).
- Only a `starttls` message holding the key `starttls` answers the request
  (the offer, pipelined after a request, does not). A true answer switches:
  `forward` ends with the answer line and `switch` is True. Anything else
  (false, null) ends the watching.
- Bytes after a true answer in the same read cannot be TLS (the client has
  not sent its ClientHello yet): `feed` raises Violation, nothing forwarded.
- A side that said WATCH_LIMIT bytes without the exchange ends the watching:
  the buffers are bounded and a long session pays nothing after its login.
"""
from __future__ import annotations

import orjson

# Bytes of each side watched for the STARTTLS exchange. A login is a few
# hundred bytes; a session that has said this much without one is past it.
WATCH_LIMIT = 1 << 16


class Violation(Exception):
    """The server broke the exchange; the message says how, in one line."""


def _message(line: bytes) -> dict | None:
    """The line as a `starttls` message, or None (cheap for every other line)."""
    if b"starttls" not in line:
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and value.get("class") == "starttls" else None


class Watcher:
    """The STARTTLS state of one session (see the module's docstring)."""

    __slots__ = ("watching", "requested", "switched", "_buffers", "_seen")

    def __init__(self) -> None:
        self.watching = True  # False once the session is plain for good, or switched
        self.requested = False  # the client asked; the server's answer is awaited
        self.switched = False
        self._buffers = {"client": b"", "server": b""}  # each side's unfinished line
        self._seen = {"client": 0, "server": 0}

    def feed(self, side: str, data: bytes) -> tuple[bytes, bool]:
        """One read of `side`: (what to forward now, whether to switch to TLS after it)."""
        if not self.watching:
            return data, False
        self._seen[side] += len(data)
        if side == "client":
            self._client(data)
            return data, False
        return self._server(data)

    def _client(self, data: bytes) -> None:
        if self.requested:
            return  # waiting for the answer: nothing more to learn from the client
        buffer = self._buffers["client"] + data
        newline = buffer.find(b"\n")
        if newline >= 0:
            message = _message(buffer[:newline])
            if message is not None and message.get("status"):
                self.requested = True
                self._buffers["client"] = b""
            else:
                self._stop()
        elif self._seen["client"] > WATCH_LIMIT:
            self._stop()
        else:
            self._buffers["client"] = buffer

    def _server(self, data: bytes) -> tuple[bytes, bool]:
        buffer = self._buffers["server"]
        if not self.requested:  # only keep track of where lines begin
            newline = data.rfind(b"\n")
            self._buffers["server"] = data[newline + 1:] if newline >= 0 else buffer + data
        else:
            joined = buffer + data
            start = 0
            while (end := joined.find(b"\n", start)) >= 0:
                message = _message(joined[start:end])
                start = end + 1
                if message is None or "starttls" not in message:
                    continue
                if not message["starttls"]:
                    self._stop()  # refused: the session stays plain
                    return data, False
                cut = end + 1 - len(buffer)  # just past the answer, in data
                if cut < len(data):
                    self._stop()
                    raise Violation("the server sent data after its starttls answer")
                self.switched = True
                self._stop()
                return data, True
            self._buffers["server"] = joined[start:]
        if self._seen["server"] > WATCH_LIMIT:  # no answer in all this: not a STARTTLS server
            self._stop()
        return data, False

    def _stop(self) -> None:
        self.watching = False
        self.requested = False
        self._buffers = {"client": b"", "server": b""}

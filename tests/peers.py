"""A CTI server and client that do TLS exactly as the real XiVO ones do.

The server follows the real server code (xivo-ctid's interface_cti.py and
client_connection.py, as README's TLS section tells): an unsolicited
`starttls` offer right after accept, the client's `status` echoed under the
key `starttls`, then a TLS 1.0-only handshake with a 0.5 s socket timeout;
a second `starttls` is ignored; logins in protocol 1.x (hashed password,
replies with replyid) or 2.x (clear password inside TLS, no replyid).

The client behaves like the XiVO client (baseengine.cpp): it takes the offer,
sends its ClientHello only after reading the answer line, speaks TLS 1.0,
ignores certificate errors, and sends a second `starttls` inside TLS (a bug
of the real client) before its 2.x `login_pass` with the password in clear.

Blocking sockets and threads: the peers are deliberately nothing like the
relay's code, so that the relay is tested against an independent
implementation.
"""
from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import warnings

from helpers import LOCALHOST, WAIT

PASSWORD = "s3cret"
HANDSHAKE_TIMEOUT = 0.5  # the real server's socket timeout for the handshake
SESSIONID = "21UaGDfst7"


def tls_context(server: bool, cert=None, key=None, *, tls10_only: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        if tls10_only:
            context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if server:
        context.load_cert_chain(cert, key)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # ignoreSslErrors()
    return context


def line(message: dict, *, spaced: bool = True) -> bytes:
    # The real server is Python 2: `json.dumps` with spaces after separators.
    return (json.dumps(message) if spaced else json.dumps(message, separators=(",", ":"))).encode() + b"\n"


class LineSocket:
    """Line reading over a socket (plain or TLS) that keeps what it read ahead."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buffer = b""

    def readline(self) -> bytes:
        while b"\n" not in self.buffer:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("connection closed")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\n")
        return head + b"\n"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class XivoServer:
    """One listening socket; each accepted client served in a thread.

    offer: send the unsolicited offer (XiVO 15.20 to 19.03 by default).
    protocol: "2" (clear password inside TLS) or "1" (hashed password).
    implicit: TLS from the first byte (the old CTIS port 5013), no offer.
    What happened is kept in `log`, one dict per session.
    """

    def __init__(self, cert, key, *, offer: bool = True, protocol: str = "2",
                 implicit: bool = False, drop_handshake: bool = False,
                 password: str = PASSWORD) -> None:
        self.context = tls_context(True, cert, key, tls10_only=True)
        self.offer, self.protocol, self.implicit = offer, protocol, implicit
        self.drop_handshake, self.password = drop_handshake, password
        self.sock = socket.socket()
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.log: list[dict] = []
        self.threads: list[threading.Thread] = []
        self.closed = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record: dict = {"received": [], "tls": None, "error": None}
            self.log.append(record)
            thread = threading.Thread(target=self._serve, args=(conn, record), daemon=True)
            self.threads.append(thread)
            thread.start()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for thread in self.threads:
            thread.join(WAIT)

    def _handshake(self, conn: socket.socket, record: dict):
        if self.drop_handshake:
            conn.close()
            record["error"] = "dropped"
            return None
        conn.settimeout(HANDSHAKE_TIMEOUT)
        try:
            wrapped = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as error:
            record["error"] = f"handshake: {error}"
            conn.close()
            return None
        wrapped.settimeout(WAIT)
        record["tls"] = {"version": wrapped.version(), "cipher": wrapped.cipher()[0]}
        return wrapped

    def _serve(self, conn: socket.socket, record: dict) -> None:
        conn.settimeout(WAIT)
        try:
            if self.implicit:
                wrapped = self._handshake(conn, record)
                if wrapped is None:
                    return
                conn = wrapped
            peer = LineSocket(conn)
            if self.offer and not self.implicit:
                peer.send(line({"class": "starttls", "timenow": 1795857223.964011}))
            upgraded = self.implicit
            while True:
                try:
                    text = peer.readline()
                except EOFError:
                    break
                message = json.loads(text)
                record["received"].append(message)
                kind = message.get("class")
                if kind == "starttls":
                    if upgraded or not self.offer:
                        continue  # only the first exchange counts
                    status = message.get("status")
                    peer.send(line({"class": "starttls", "timenow": 1795857223.964377,
                                    "starttls": status}))
                    if status:
                        upgraded = True
                        if peer.buffer:  # the real server would lose these bytes
                            record["error"] = "plaintext after the starttls answer"
                            return
                        wrapped = self._handshake(conn, record)
                        if wrapped is None:
                            return
                        conn = wrapped
                        peer = LineSocket(conn)
                    continue
                for reply in self._answer(message):
                    peer.send(reply)
                if kind == "logout":
                    break
        except (OSError, ValueError) as error:
            record["error"] = record["error"] or str(error)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, message: dict) -> list[bytes]:
        kind, commandid = message.get("class"), message.get("commandid")
        two = self.protocol == "2"
        if kind == "login_id":
            reply = {"class": "login_id", "sessionid": SESSIONID, "timenow": 1.5}
            reply.update({"wazoversion": "18.03"} if two else {"xivoversion": "1.2", "replyid": commandid})
            return [line(reply)]
        if kind == "login_pass":
            if two:
                ok = message.get("password") == self.password
            else:
                ok = message.get("hashedpassword") == hashlib.sha1(
                    f"{SESSIONID}:{self.password}".encode()).hexdigest()
            reply = {"class": "login_pass", "capalist": [1]} if ok else \
                {"class": "login_pass", "error_string": "login_password"}
            if not two:
                reply["replyid"] = commandid
            return [line(reply)]
        if kind == "login_capas":
            reply = {"class": "login_capas", "userid": "3", "presence": "available",
                     "capas": {"services": ["fwdunc"], "userstatus": {"available": {"longname": "Disponible é"}}}}
            if not two:
                reply["replyid"] = commandid
            return [line(reply)]
        if kind == "logout":
            return []
        return [line({"class": kind, "replyid": commandid, "timenow": 2.5})]


class XivoClient:
    """A client session as the XiVO client runs it; `run()` returns what it saw.

    wants_tls: answer the offer with status true (16.02 and later always do);
    False: ignore the offer and log in plain.
    """

    def __init__(self, port: int, *, wants_tls: bool = True, implicit: bool = False,
                 protocol: str = "2", user: str = "alice", password: str = PASSWORD,
                 extra: list[dict] | None = None) -> None:
        self.port, self.wants_tls, self.implicit = port, wants_tls, implicit
        self.protocol, self.user, self.password = protocol, user, password
        self.extra = extra or []
        self.received: list[dict] = []
        self.sent: list[bytes] = []
        self.tls: dict | None = None
        self.commandid = 1534986799

    def _send(self, peer: LineSocket, message: dict) -> None:
        self.commandid += 1
        data = line({**message, "commandid": self.commandid}, spaced=False)
        self.sent.append(data)
        peer.send(data)

    def _read(self, peer: LineSocket, skip_offer: bool = False) -> dict:
        while True:
            message = json.loads(peer.readline())
            self.received.append(message)
            if not (skip_offer and message.get("class") == "starttls"):
                return message

    def _upgrade(self, conn: socket.socket) -> ssl.SSLSocket:
        wrapped = tls_context(False, tls10_only=True).wrap_socket(conn)
        self.tls = {"version": wrapped.version(), "cipher": wrapped.cipher()[0]}
        return wrapped

    def run(self) -> list[dict]:
        conn = socket.create_connection((LOCALHOST, self.port), timeout=WAIT)
        try:
            if self.implicit:
                conn = self._upgrade(conn)
            peer = LineSocket(conn)
            if not self.implicit and self.wants_tls:  # waits for the offer
                first = self._read(peer)
                if first.get("class") == "starttls":
                    self._send(peer, {"class": "starttls", "status": True})
                    answer = self._read(peer)  # the ClientHello only after this line
                    assert answer.get("class") == "starttls", answer
                    if answer.get("starttls"):
                        assert not peer.buffer, "plaintext after the starttls answer"
                        conn = self._upgrade(conn)
                        peer = LineSocket(conn)
            self._login(peer)
            for message in self.extra:
                self._send(peer, message)
                self._read(peer)
            # As the XiVO client does: logout, then disconnect.
            self._send(peer, {"class": "logout", "stopper": "disconnect"})
        finally:
            conn.close()
        return self.received

    def _login(self, peer: LineSocket) -> None:
        two = self.protocol == "2"
        self._send(peer, {"class": "login_id", "company": "default", "ident": "X11-LE-24079",
                          "userlogin": self.user, "version": "9999",
                          **({"wazoversion": "18.03"} if two else {"xivoversion": "1.2"})})
        if self.tls is not None and not self.implicit:
            # The XiVO client's bug: a second starttls inside TLS, ignored by the server.
            self._send(peer, {"class": "starttls", "status": True})
        reply = self._read(peer, skip_offer=True)  # a declined offer is just ignored
        if two:
            self._send(peer, {"class": "login_pass", "password": self.password})
        else:
            hashed = hashlib.sha1(f"{reply['sessionid']}:{self.password}".encode()).hexdigest()
            self._send(peer, {"class": "login_pass", "hashedpassword": hashed})
        reply = self._read(peer)
        if "error_string" in reply:
            raise RuntimeError(f"login refused: {reply}")
        self._send(peer, {"class": "login_capas", "capaid": reply["capalist"][0],
                          "lastconnwins": False, "loginkind": "user", "state": "available"})
        self._read(peer)

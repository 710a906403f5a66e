"""TLS: the relay's certificate and contexts, the XiVO-like peers, the demo's STARTTLS."""
from __future__ import annotations

import _socket
import hashlib
import json
import os
import signal
import socket
import struct
import ssl
import stat
import subprocess
import threading
import time
from functools import partial

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (LOCALHOST, PYTHON, WAIT, Proc, Relay, command, free_port, is_closed,
                     recv_all, reset)
from peers import PASSWORD, LineSocket, XivoClient, XivoServer, tls_context

from ctipipe.core import cli
from ctipipe.demo import client as demo_client
from ctipipe.demo import command as demo
from ctipipe.demo import server as demo_server
from ctipipe.relay import certs as tls
from ctipipe.relay import command as relay_module


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "ctipipe"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A certificate and key for the test peers (made the way the relay makes its own)."""
    cert, key, _ = tls.relay_certificate(tmp_path_factory.mktemp("peer-cert"))
    return cert, key


# --- the certificate ------------------------------------------------------------

def test_certificate_is_made_once_kept_private_and_reused(data_home):
    cert, key, made = tls.relay_certificate()
    assert made and cert.parent == data_home
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_home.stat().st_mode) == 0o700
    again = tls.relay_certificate()
    assert again == (cert, key, False)
    assert tls.fingerprint(cert) == tls.fingerprint(again[0])
    assert not [p for p in data_home.iterdir() if p.name.endswith(".tmp")]


def test_data_dir_falls_back_to_local_share(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tls.data_dir() == tmp_path / ".local" / "share" / "ctipipe"


def test_fingerprint_is_sha256_of_the_der(data_home):
    cert, _, _ = tls.relay_certificate()
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    import hashlib
    assert tls.fingerprint(cert).replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert len(tls.fingerprint(cert).split(":")) == 32


def test_relays_starting_at_once_make_one_pair(data_home):
    """Processes racing to make the certificate end with one matching pair."""
    script = ("from ctipipe.relay import certs as tls; c, k, made = tls.relay_certificate(); "
              "print(tls.fingerprint(c), made)")
    procs = [subprocess.Popen([PYTHON, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "XDG_DATA_HOME": str(data_home.parent)})
             for _ in range(4)]
    results = [p.communicate(timeout=WAIT)[0].split() for p in procs]
    assert len({r[0] for r in results}) == 1
    assert sorted(r[1] for r in results) == ["False", "False", "False", "True"]
    cert, key, _ = tls.relay_certificate()
    tls.client_leg_context(cert, key)  # the key matches the certificate


def test_no_cryptography_import_when_the_certificate_exists(data_home):
    tls.relay_certificate()
    script = ("import sys; from ctipipe.relay import certs as tls; tls.relay_certificate(); "
              "print(any(m.startswith('cryptography') for m in sys.modules))")
    out = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=WAIT,
                         env={**os.environ, "XDG_DATA_HOME": str(data_home.parent)})
    assert out.stdout.strip() == "False", out.stderr


def test_unusable_files_are_one_clear_error(tmp_path, pair):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(cli.CommandError, match="cannot use the certificate"):
        tls.client_leg_context(bad, pair[1])
    with pytest.raises(cli.CommandError, match="cannot use --server-ca"):
        tls.server_leg_context(tmp_path / "missing.pem")
    with pytest.raises(cli.CommandError, match="cannot read the certificate"):
        tls.fingerprint(bad)


def test_unwritable_data_directory_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    with pytest.raises(cli.CommandError, match="cannot keep the relay's certificate"):
        tls.relay_certificate()


def test_contexts_speak_tls10_with_a_tls10_only_peer(pair):
    """OpenSSL 3 refuses TLS 1.0 by default: both legs' contexts must allow it."""
    server_ctx = tls_context(True, *pair, tls10_only=True)
    for ours, theirs_is_server in ((tls.server_leg_context(), True),
                                   (tls.client_leg_context(*pair), False)):
        listener = socket.socket()
        listener.bind((LOCALHOST, 0))
        listener.listen()
        seen = {}

        def serve():
            conn, _ = listener.accept()
            ctx = server_ctx if theirs_is_server else ours
            with ctx.wrap_socket(conn, server_side=True) as wrapped:
                seen["server"] = wrapped.version()

        thread = threading.Thread(target=serve)
        thread.start()
        ctx = ours if theirs_is_server else tls_context(False, tls10_only=True)
        with ctx.wrap_socket(socket.create_connection(listener.getsockname(), timeout=WAIT)) as c:
            seen["client"] = c.version()
        thread.join(WAIT)
        listener.close()
        assert seen == {"client": "TLSv1", "server": "TLSv1"}


def test_server_ca_rejects_another_certificate(pair, tmp_path):
    other, _, _ = tls.relay_certificate(tmp_path / "other")
    assert tls.server_leg_context(other).verify_mode == ssl.CERT_REQUIRED
    server = XivoServer(*pair, implicit=True)
    try:
        with pytest.raises(ssl.SSLCertVerificationError) as raised:
            tls.server_leg_context(other).wrap_socket(
                socket.create_connection((LOCALHOST, server.port), timeout=WAIT))
        assert "certificate did not verify" in tls.handshake_error(raised.value)
        # and the right CA is accepted
        with tls.server_leg_context(pair[0]).wrap_socket(
                socket.create_connection((LOCALHOST, server.port), timeout=WAIT)) as ok:
            assert ok.version() == "TLSv1"
    finally:
        server.close()


# --- the peers themselves ---------------------------------------------------------

def test_peers_do_starttls_like_xivo(pair):
    server = XivoServer(*pair)
    try:
        client = XivoClient(server.port)
        received = client.run()
    finally:
        server.close()
    assert client.tls["version"] == "TLSv1" and server.log[0]["tls"]["version"] == "TLSv1"
    classes = [m["class"] for m in server.log[0]["received"]]
    assert classes == ["starttls", "login_id", "starttls", "login_pass", "login_capas", "logout"]
    assert server.log[0]["received"][3]["password"] == PASSWORD
    assert [m["class"] for m in received] == ["starttls", "starttls", "login_id", "login_pass",
                                              "login_capas"]
    assert received[1]["starttls"] is True
    assert server.log[0]["error"] is None


def test_peer_server_drops_a_client_that_does_not_start_its_handshake(pair):
    server = XivoServer(*pair)
    try:
        with socket.create_connection((LOCALHOST, server.port), timeout=WAIT) as conn:
            conn.recv(1 << 16)
            conn.sendall(b'{"class":"starttls","status":true}\n')
            conn.settimeout(WAIT)
            data = b""
            while b"\n" not in data:
                data += conn.recv(1 << 16)
            assert conn.recv(1 << 16) == b""  # dropped after 0.5 s
    finally:
        server.close()
    assert "handshake" in server.log[0]["error"]


# --- the demo ---------------------------------------------------------------------
# The demo server and client are trio code: here they run in-process (the client
# under autojump_clock where it waits for an offer), against the independent
# threaded peers or a scripted server; `ctidemo` as processes is the whole demo below.

async def _serve_demo(nursery, **options) -> int:
    return await nursery.start(partial(demo_server.serve, LOCALHOST, 0, **options))


async def test_demo_server_offers_starttls_to_a_xivo_client(capsys):
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await _serve_demo(nursery)
            client = XivoClient(port, password=demo.PASSWORD, extra=[{"class": "keepalive"}])
            received = await trio.to_thread.run_sync(client.run)
            nursery.cancel_scope.cancel()
    assert client.tls["version"] in ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    assert received[0] == {"class": "starttls", "timenow": received[0]["timenow"]}
    assert received[1]["starttls"] is True
    classes = [m["class"] for m in received[2:]]
    assert classes[:3] == ["login_id", "login_pass", "login_capas"]
    assert "replyid" not in received[3]  # protocol 2.x login replies
    assert capsys.readouterr().err == (f"ctidemo server: listening on 127.0.0.1:{port} "
                                       "(offering STARTTLS)\n")


def _reset_after_the_offer(port: int) -> None:
    with socket.create_connection((LOCALHOST, port), timeout=WAIT) as conn:
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_demo_server_outlives_clients_that_reset(capsys):
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await _serve_demo(nursery)
            for _ in range(5):  # each reads the offer, then resets instead of answering
                await trio.to_thread.run_sync(_reset_after_the_offer, port)
            client = XivoClient(port, password=demo.PASSWORD)
            received = await trio.to_thread.run_sync(client.run)
            nursery.cancel_scope.cancel()  # (an error escaping serve would end the test)
    assert [m["class"] for m in received][2:5] == ["login_id", "login_pass", "login_capas"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "listening on" in err, err  # no session said an error


def _first_line_after_a_login(port: int) -> dict:
    with socket.create_connection((LOCALHOST, port), timeout=WAIT) as conn:
        conn.sendall(b'{"class":"login_id","userlogin":"alice","xivoversion":"1.2",'
                     b'"commandid":7}\n')
        return json.loads(LineSocket(conn).readline())


async def test_demo_server_without_starttls_sends_nothing_first():
    """An offer goes right after the accept, before anything is read: with none,
    the first line a client gets is the reply to its own first request."""
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await _serve_demo(nursery, starttls=False)
            first = await trio.to_thread.run_sync(_first_line_after_a_login, port)
            client = XivoClient(port, wants_tls=False, protocol="1", password=demo.PASSWORD)
            received = await trio.to_thread.run_sync(client.run)
            nursery.cancel_scope.cancel()
    assert first["class"] == "login_id", first
    assert client.tls is None
    assert [m["class"] for m in received] == ["login_id", "login_pass", "login_capas"]


def test_demo_server_port_taken_says_which_address(server, capsys):
    assert demo.main(["server", "--port", str(server.port)]) == 1
    assert capsys.readouterr().err == (
        f"ctidemo: error: cannot listen on 127.0.0.1:{server.port}: Address "
        "already in use (another server running? choose another --port)\n")


def test_demo_client_takes_the_offer_and_logs_in_with_a_clear_password_inside_tls(pair, capsys):
    server = XivoServer(*pair, password=demo.PASSWORD)
    try:
        assert demo.main(["client", "--port", str(server.port), "--pause", "0"]) == 0
    finally:
        server.close()
    assert capsys.readouterr().err == ""
    log = server.log[0]
    assert log["tls"]["version"] == "TLSv1" and log["error"] is None
    classes = [m["class"] for m in log["received"]]
    assert classes[:5] == ["starttls", "login_id", "starttls", "login_pass", "login_capas"]
    assert log["received"][3]["password"] == demo.PASSWORD
    assert classes[-1] == "logout"


async def test_demo_client_declines_nothing_when_no_offer_comes(pair, autojump_clock):
    """No offer within OFFER_WAIT: the client logs in without TLS, protocol 1.x."""
    server = XivoServer(*pair, offer=False, protocol="1", password=demo.PASSWORD)
    try:
        # (the only deadlines are the client's own: the clock jumps over its wait)
        await demo_client.run_client(LOCALHOST, server.port, "alice", 0)
    finally:
        await trio.to_thread.run_sync(server.close)
    assert trio.current_time() >= demo_client.OFFER_WAIT
    assert server.log[0]["tls"] is None and server.log[0]["error"] is None
    classes = [m["class"] for m in server.log[0]["received"]]
    assert classes[:3] == ["login_id", "login_pass", "login_capas"]  # the hashed password passed
    assert classes[-1] == "logout"


async def _read_line(stream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        assert chunk, data
        data += chunk
    return data


async def _demo_client_against(script, starttls: bool = True) -> tuple[str, int, list]:
    """Run the demo client against script(stream, seen) on an in-process listener;
    the client's error, the port, and what the script noted."""
    [listener] = await trio.open_tcp_listeners(0, host=LOCALHOST)
    port = listener.socket.getsockname()[1]
    seen: list = []

    async def serve_one() -> None:
        async with listener:
            stream = await listener.accept()
        await script(stream, seen)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        with pytest.raises(cli.CommandError) as raised:
            await demo_client.run_client(LOCALHOST, port, "alice", 0, starttls=starttls)
    return str(raised.value), port, seen


async def _closes_after_the_login_id(stream, seen) -> None:
    async with stream:
        kind = json.loads(await _read_line(stream))["class"]
        seen.append((trio.current_time(), kind))


async def _not_json(stream, seen) -> None:
    async with stream:
        await stream.send_all(b"this is not json\n")
        while await stream.receive_some():
            pass


async def _garbage_for_a_handshake(stream, seen) -> None:
    async with stream:
        await stream.send_all(b'{"class": "starttls"}\n{"class": "starttls", "starttls": true}\n'
                              b"GARBAGE")
        data = await _read_line(stream)
        seen.append(json.loads(data[:data.index(b"\n")])["class"])
        while data.endswith(b"\n"):  # then the start of its ClientHello
            data += await stream.receive_some()


async def _resets_after_the_login_pass(stream, seen) -> None:
    seen.append(json.loads(await _read_line(stream))["class"])
    await stream.send_all(b'{"class": "login_id", "sessionid": "x", "xivoversion": "1.2"}\n')
    seen.append(json.loads(await _read_line(stream))["class"])
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def test_demo_client_a_server_that_closes_is_said(autojump_clock):
    """No offer: the login_id goes at OFFER_WAIT exactly, and the close that follows is said."""
    said, _, seen = await _demo_client_against(_closes_after_the_login_id)
    assert seen == [(demo_client.OFFER_WAIT, "login_id")]
    assert said == "the server closed the connection while we waited for the reply to login_id"


async def test_demo_client_told_no_starttls_logs_in_at_once(autojump_clock):
    """ctidemo client --no-starttls (a client of before XiVO 15.20): the login_id goes
    at once, without the wait for an offer."""
    _, _, seen = await _demo_client_against(_closes_after_the_login_id, starttls=False)
    assert seen == [(0, "login_id")]


async def test_demo_client_a_line_that_is_not_json_is_said(autojump_clock):
    said, _, _ = await _demo_client_against(_not_json)
    assert trio.current_time() == 0  # read at once, within the wait for an offer
    assert said == ("the server sent a line that is not JSON while we waited for the reply to "
                    "the server's first message: b'this is not json'")


async def test_demo_client_a_failed_handshake_is_said(autojump_clock):
    said, _, seen = await _demo_client_against(_garbage_for_a_handshake)
    assert seen == ["starttls"]
    assert said.startswith("TLS with the server failed: ") and "\n" not in said, said


async def test_demo_client_server_gone_mid_session_is_said(autojump_clock):
    said, port, seen = await _demo_client_against(_resets_after_the_login_pass)
    assert seen == ["login_id", "login_pass"]
    assert said == f"the connection to 127.0.0.1:{port} was lost (Connection reset by peer)"


def test_demo_client_errors_are_one_line(server, capsys):
    """What the client raises reaches the user as one line and status 1."""
    def not_json() -> None:
        conn = server.accept()
        conn.sendall(b"this is not json\n")
        is_closed(conn)
        conn.close()

    thread = threading.Thread(target=not_json)
    thread.start()
    assert demo.main(["client", "--port", str(server.port), "--pause", "0"]) == 1
    thread.join(WAIT)
    assert capsys.readouterr().err == (
        "ctidemo: error: the server sent a line that is not JSON while we waited for the "
        "reply to the server's first message: b'this is not json'\n")


# --- through the relay ------------------------------------------------------------

def _data(records: list[dict]) -> list[tuple[str, dict]]:
    return [(r["from"], r["msg"]) for r in records if "from" in r]


def _one_clean_close(relay: Relay) -> dict:
    closes = relay.closes()
    assert len(closes) == 1, relay.records()
    assert "Traceback" not in relay.err
    return closes[0]


class RelayMain:
    """ctirelay's main() in this process (its signal handling needs the main
    thread) for one session, the test's client in a thread: a relay's records,
    standard error and status without a process start. Tests of what only a
    process shows (signals, its exit) start a `Relay`."""

    def __init__(self, capfd, server_port: int, *args: str) -> None:
        self.capfd = capfd
        self.port = free_port()
        self.argv = [LOCALHOST, "--port", str(server_port), "--listen-addr", LOCALHOST,
                     "--listen-port", str(self.port), "-v", *args]
        self.out, self.err, self.client_error = b"", "", None

    def run(self, client, client_fails: bool = False) -> int:
        """Run the relay until its session ends, client(port) meanwhile (started
        again while the relay does not listen yet); the relay's status. What the
        client raised is raised here, or kept in client_error if it may fail."""
        def connect() -> None:
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    client(self.port)
                    return
                except ConnectionRefusedError:  # (not listening yet)
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
                except Exception as error:  # noqa: BLE001 - for the test to look at
                    self.client_error = error
                    return

        self.capfd.readouterr()
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        status = relay_module.main(self.argv)
        thread.join(WAIT)
        assert not thread.is_alive()
        out, self.err = self.capfd.readouterr()
        self.out = out.encode()
        if self.client_error is not None and not client_fails:
            raise self.client_error
        return status

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines()]

    def closes(self) -> list[dict]:
        return [r for r in self.records() if r.get("event") == "close"]


def test_starttls_is_intercepted_between_xivo_server_and_client(pair, capfd):
    server = XivoServer(*pair)
    relay = RelayMain(capfd, server.port)
    client = XivoClient(relay.port, extra=[{"class": "getlist", "function": "listid"}])
    assert relay.run(lambda port: client.run()) == 0
    received = client.received
    server.close()
    records = relay.records()
    events = [r.get("event") for r in records if "event" in r]
    assert events[-2:] == ["tls", "close"] or events.count("tls") == 1
    tls_event = next(r for r in records if r.get("event") == "tls")
    assert tls_event["how"] == "starttls" and tls_event["intercepted"] is True
    assert tls_event["server"]["version"] == "TLSv1" and tls_event["client"]["version"] == "TLSv1"
    assert tls_event["client"]["cipher"] and tls_event["server"]["cipher"]
    # in order: the three plain lines, the tls event, then the decrypted session
    index = records.index(tls_event)
    before = _data(records[:index])
    assert [(side, m["class"]) for side, m in before] == [
        ("server", "starttls"), ("client", "starttls"), ("server", "starttls")]
    after = _data(records[index:])
    client_side = [m for side, m in after if side == "client"]
    assert [m["class"] for m in client_side] == [
        "login_id", "starttls", "login_pass", "login_capas", "getlist", "logout"]
    assert [m["class"] for side, m in after if side == "server"] == [
        "login_id", "login_pass", "login_capas", "getlist"]
    assert client_side[2]["password"] == PASSWORD  # what --redact is for
    assert [m["class"] for m in received][-3:] == ["login_pass", "login_capas", "getlist"]
    assert server.log[0]["error"] is None and server.log[0]["tls"]["version"] == "TLSv1"
    close = _one_clean_close(relay)
    assert "error" not in close
    sent = sum(len(line) for line in client.sent)
    assert close["bytes"]["client"] == sent  # plaintext, on both legs
    assert "intercepted" in relay.err and "not verified" in relay.err


def test_starttls_pass_forwards_the_encrypted_bytes_unrecorded(pair, capfd):
    server = XivoServer(*pair)
    relay = RelayMain(capfd, server.port, "--starttls", "pass")
    client = XivoClient(relay.port)
    assert relay.run(lambda port: client.run()) == 0
    server.close()
    records = relay.records()
    tls_event = next(r for r in records if r.get("event") == "tls")
    assert tls_event == {**tls_event, "how": "starttls", "intercepted": False}
    assert "client" not in tls_event
    assert not _data(records[records.index(tls_event):])
    assert client.tls["version"] == "TLSv1" and server.log[0]["error"] is None
    close = _one_clean_close(relay)
    assert close["bytes"]["client"] > sum(len(line) for line in client.sent[1:])  # ciphertext


@pytest.mark.parametrize("offer", [False, True])
def test_a_session_without_starttls_stays_plain(pair, offer, capfd):
    """A server that does not offer, and a client that ignores the offer."""
    server = XivoServer(*pair, offer=offer)
    relay = RelayMain(capfd, server.port)
    client = XivoClient(relay.port, wants_tls=False)
    assert relay.run(lambda port: client.run()) == 0
    server.close()
    records = relay.records()
    assert not [r for r in records if r.get("event") == "tls"]
    from_server = [m["class"] for side, m in _data(records) if side == "server"]
    assert from_server[:2] == (["starttls", "login_id"] if offer else ["login_id", "login_pass"])
    assert "login_capas" in from_server and client.tls is None
    close = _one_clean_close(relay)
    assert "error" not in close, json.dumps(close)


def test_implicit_tls(pair, capfd):
    server = XivoServer(*pair, implicit=True)
    relay = RelayMain(capfd, server.port, "--tls")
    client = XivoClient(relay.port, implicit=True)
    assert relay.run(lambda port: client.run()) == 0
    server.close()
    records = relay.records()
    assert [r.get("event") for r in records[:2]][-2:] in (["open", "tls"], ["start", "open"])
    tls_event = next(r for r in records if r.get("event") == "tls")
    assert records.index(tls_event) == next(i for i, r in enumerate(records)
                                            if r.get("event") == "open") + 1
    assert tls_event["how"] == "implicit" and tls_event["intercepted"] is True
    assert [m["class"] for _, m in _data(records)][:2] == ["login_id", "login_id"]
    close = _one_clean_close(relay)
    assert "error" not in close, json.dumps(close)


def test_cert_and_key_are_what_clients_see(pair, tmp_path, capfd):
    cert, key, _ = tls.relay_certificate(tmp_path / "given")
    server = XivoServer(*pair, implicit=True)
    relay = RelayMain(capfd, server.port, "--tls", "--cert", str(cert), "--key", str(key))
    seen = []

    def client(port: int) -> None:
        with tls_context(False).wrap_socket(socket.create_connection((LOCALHOST, port),
                                                                     timeout=WAIT)) as conn:
            seen.append(ssl.DER_cert_to_PEM_cert(conn.getpeercert(binary_form=True)))
    relay.run(client)
    server.close()
    assert [text.strip() for text in seen] == [cert.read_text().strip()]
    assert tls.fingerprint(cert) in relay.err


def test_default_certificate_is_kept_and_reused(pair, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    prints = []

    def client(port: int) -> None:
        with tls_context(False).wrap_socket(socket.create_connection((LOCALHOST, port),
                                                                     timeout=WAIT)) as conn:
            prints.append(hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest())
    for _ in range(2):
        server = XivoServer(*pair, implicit=True)
        relay = RelayMain(capfd, server.port, "--tls")
        relay.run(client)
        server.close()
        assert ("made the relay's TLS certificate" in relay.err) == (len(prints) == 1)
    assert prints[0] == prints[1]
    key = tmp_path / "ctipipe" / tls.KEY_NAME
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_server_ca_mismatch_names_the_server_leg(pair, tmp_path):
    other, _, _ = tls.relay_certificate(tmp_path / "other")
    server = XivoServer(*pair)
    relay = Relay(server.port, "--server-ca", str(other))
    with pytest.raises((OSError, EOFError, ssl.SSLError)):
        XivoClient(relay.port).run()
    assert relay.finish() == 1  # a TLS failure is never silent
    server.close()
    close = _one_clean_close(relay)
    assert close["by"] == "server"
    assert close["error"].startswith("the server's certificate did not verify against --server-ca")
    assert f"ctirelay: error: session 1: {close['error']}\n" in relay.err
    assert close["error"].count("\n") == 0
    assert not [r for r in relay.records() if r.get("event") == "tls"]


def _starttls_plain(port: int) -> socket.socket:
    """A client that asks for STARTTLS and reads the answer, then does what the test wants."""
    conn = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    peer = LineSocket(conn)
    assert json.loads(peer.readline())["class"] == "starttls"
    peer.send(b'{"class":"starttls","status":true}\n')
    assert json.loads(peer.readline())["starttls"] is True
    return conn


def test_client_sending_garbage_instead_of_a_client_hello(pair, capfd):
    server = XivoServer(*pair)
    relay = RelayMain(capfd, server.port)
    closed = []

    def client(port: int) -> None:
        conn = _starttls_plain(port)
        conn.sendall(b'{"class":"login_id","userlogin":"alice"}\n' * 20)
        closed.append(is_closed(conn))
        conn.close()
    assert relay.run(client) == 1  # a TLS failure is never silent
    assert closed == [True] and relay.client_error is None
    server.close()
    close = _one_clean_close(relay)
    assert close["by"] == "client"
    assert close["error"].startswith("the client's TLS handshake failed: "), close
    # nothing of the garbage was recorded or sent on as plaintext
    assert not [m for _, m in _data(relay.records()) if m.get("class") == "login_id"]
    assert [m["class"] for m in server.log[0]["received"]] == ["starttls"]


def test_server_that_drops_the_handshake(pair, capfd):
    server = XivoServer(*pair, drop_handshake=True)
    relay = RelayMain(capfd, server.port)
    assert relay.run(lambda port: XivoClient(port).run(), client_fails=True) == 1  # never silent
    assert isinstance(relay.client_error, (OSError, EOFError, ssl.SSLError)), relay.client_error
    server.close()
    close = _one_clean_close(relay)
    assert close == {**close, "by": "server",
                     "error": "the server closed the connection during the TLS handshake"}


def test_loop_goes_on_after_a_failed_handshake(pair):
    server = XivoServer(*pair)
    relay = Relay(server.port, "--loop")
    conn = _starttls_plain(relay.port)
    conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert is_closed(conn)
    XivoClient(relay.port).run()
    relay.wait_for(lambda p: len(p.closes()) == 2, what="two closes")
    relay.signal(signal.SIGTERM)
    assert relay.finish() == 0
    server.close()
    first, second = relay.closes()
    assert "client's TLS handshake failed" in first["error"] and "error" not in second
    assert "Traceback" not in relay.err


def test_ctispy_shows_the_decrypted_session(pair):
    """A client like the XiVO client through `ctispy` against a server like XiVO 15.20-19.03.
    (Without --redact, ctispy showing the clear password: the whole demo below.)"""
    server = XivoServer(*pair)
    port = free_port()
    spy = Proc(command("ctispy", LOCALHOST, "--port", str(server.port), "--listen-addr",
                       LOCALHOST, "--listen-port", str(port), "--redact"),
               env={**os.environ, "TZ": "UTC"})
    deadline = time.monotonic() + WAIT
    while True:
        try:
            client = XivoClient(port)
            client.run()
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, spy.err
            time.sleep(0.05)
    assert spy.finish() == 0, spy.err
    server.close()
    shown = spy.out.decode()
    assert '"login_pass"' in shown and '"login_capas"' in shown
    assert PASSWORD not in shown  # the 2.x clear password, masked by --redact
    assert "Traceback" not in spy.err


class _StarttlsSink:
    """A server that offers STARTTLS, upgrades (TLS 1.0 only), then reads to EOF
    while sending its own bytes, then half-closes: one connection per example."""

    def __init__(self, cert, key) -> None:
        self.context = tls_context(True, cert, key, tls10_only=True)
        self.sock = socket.socket()
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def serve_one(self, down: bytes, cuts: list[int], got: dict) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(WAIT)
        peer = LineSocket(conn)
        peer.send(b'{"class": "starttls", "timenow": 1.0}\n')
        peer.readline()
        peer.send(b'{"class": "starttls", "timenow": 1.1, "starttls": true}\n')
        conn.settimeout(0.5)  # the real server's handshake deadline
        wrapped = self.context.wrap_socket(conn, server_side=True)
        wrapped.settimeout(WAIT)
        # An SSL object is not to be used by two threads at once: send, then read
        # (the client sends at the same time; a few KiB fit in the socket buffers).
        _send_then_eof(wrapped, down, cuts)
        got["up"] = _read_to_eof(wrapped)
        wrapped.close()


def _send_then_eof(sock, data: bytes, cuts: list[int]) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    last = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        sock.sendall(data[last:cut])
        last = cut
    # A TCP FIN, the end of this direction (SSLSocket.shutdown would also
    # drop the TLS layer of what is still to be read).
    _socket.socket.shutdown(sock, socket.SHUT_WR)


def _read_to_eof(sock) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    return bytes(data)


@pytest.fixture(scope="module")
def tls_loop_relay(pair):
    sink = _StarttlsSink(*pair)
    relay = Relay(sink.port, "--loop", "--raw")
    yield sink, relay
    relay.kill()
    sink.sock.close()


chunks = st.tuples(st.binary(max_size=20000), st.lists(st.integers(0, 20000), max_size=8))


@pytest.mark.heavy
@settings(max_examples=25)
@given(up=chunks, down=chunks)
def test_plaintext_is_forwarded_exactly_through_intercepted_tls(tls_loop_relay, up, down):
    sink, relay = tls_loop_relay
    before = len(relay.closes())
    got: dict = {}
    server = threading.Thread(target=sink.serve_one, args=(down[0], down[1], got))
    server.start()
    conn = _starttls_plain(relay.port)
    client = tls_context(False).wrap_socket(conn)
    client.settimeout(WAIT)
    _send_then_eof(client, up[0], up[1])
    received = _read_to_eof(client)
    server.join(WAIT)
    client.close()
    relay.wait_for(lambda p: len(p.closes()) == before + 1, what="the close")
    close = relay.closes()[-1]
    assert got["up"] == up[0], json.dumps(close)
    assert received == down[0], json.dumps(close)
    answer = len(b'{"class": "starttls", "timenow": 1.1, "starttls": true}\n')
    offer = len(b'{"class": "starttls", "timenow": 1.0}\n')
    assert close["bytes"] == {"client": len(b'{"class":"starttls","status":true}\n') + len(up[0]),
                              "server": offer + answer + len(down[0])}
    assert "error" not in close


def test_whole_demo_shows_the_tls_line_and_the_decrypted_session():
    proc = Proc(command("ctidemo", "--compact", "--pause", "0"), env={**os.environ, "TZ": "UTC"})
    assert proc.finish(timeout=30) == 0, proc.err
    shown = proc.out.decode()
    assert "TLS (STARTTLS): client TLSv" in shown  # ctipretty's line for the tls event
    assert f'"password":"{demo.PASSWORD}"' in shown.replace(" ", "")
    assert "Traceback" not in proc.err
    # The demo ends as a session should: the client's logout and FIN, no reset
    # (a client that closes with status updates unread resets the connection).
    last = shown.rstrip("\n").splitlines()[-1]
    assert "session 1 closed by client after" in last and "reset" not in last, last


def _after_the_login(server, port: int) -> None:
    client = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    upstream = server.accept()
    login = (b'{"class":"login_id","userlogin":"a"}\n{"class":"login_pass","hashedpassword":"x"}\n'
             b'{"class":"login_capas","capaid":1}\n')
    client.sendall(login)
    assert recv_all(upstream, len(login)) == login
    upstream.sendall(b'{"class": "login_capas"}\n')
    assert recv_all(client, 25) == b'{"class": "login_capas"}\n'
    client.sendall(b'{"class":"starttls","status":true}\n')
    assert recv_all(upstream, 35) == b'{"class":"starttls","status":true}\n'
    later = b'{"class": "starttls", "starttls": true}\nplain after it\n'
    upstream.sendall(later)
    assert recv_all(client, len(later)) == later  # forwarded as is, nothing withheld
    client.sendall(b"still plain\n")
    assert recv_all(upstream, 12) == b"still plain\n"
    client.close()
    upstream.close()


def test_a_starttls_exchange_after_the_login_is_only_relayed(server, capfd):
    """Watching ends with the login: a later `starttls` answer switches nothing."""
    relay = RelayMain(capfd, server.port)
    assert relay.run(partial(_after_the_login, server)) == 0
    assert not [r for r in relay.records() if r.get("event") == "tls"]
    close = _one_clean_close(relay)
    assert "error" not in close, json.dumps(close)


def _resets_inside_tls(pair, server, port: int) -> None:
    client = tls_context(False).wrap_socket(socket.create_connection((LOCALHOST, port),
                                                                     timeout=WAIT))
    upstream = tls_context(True, *pair).wrap_socket(server.accept(), server_side=True)
    client.sendall(b'{"class":"keepalive"}\n')
    assert upstream.recv(100) == b'{"class":"keepalive"}\n'
    reset(client)
    # Python's ssl reads a reset as a quiet end: look at the socket under it.
    with pytest.raises(ConnectionResetError):
        _socket.socket.recv(upstream, 100)
    upstream.close()


def test_a_reset_inside_tls_is_passed_on_as_a_reset(pair, server, capfd):
    relay = RelayMain(capfd, server.port, "--tls")
    assert relay.run(partial(_resets_inside_tls, pair, server)) == 0
    close = _one_clean_close(relay)
    assert close["by"] == "client" and close["error"] == "connection reset by client"


def test_implicit_tls_passed_on_untouched(pair, capfd):
    server = XivoServer(*pair, implicit=True)
    relay = RelayMain(capfd, server.port, "--tls", "--starttls", "pass")
    client = XivoClient(relay.port, implicit=True)
    assert relay.run(lambda port: client.run()) == 0
    server.close()
    records = relay.records()
    tls_event = next(r for r in records if r.get("event") == "tls")
    assert tls_event["how"] == "implicit" and tls_event["intercepted"] is False
    assert not _data(records) and client.tls["version"] == "TLSv1"
    close = _one_clean_close(relay)
    assert "error" not in close, json.dumps(close)


def test_bad_tls_options_are_one_line(tmp_path, server, capfd):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    assert relay_module.main([LOCALHOST, "--port", str(server.port), "--listen-port", "0",
                              "--cert", str(bad), "--key", str(bad)]) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("ctirelay: error: cannot use the certificate")
    with pytest.raises(SystemExit) as exited:
        relay_module.main([LOCALHOST, "--cert", str(bad)])
    assert exited.value.code == 2 and "--cert and --key go together" in capfd.readouterr().err
    assert relay_module.main([LOCALHOST, "--server-ca", str(tmp_path / "none.pem")]) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "cannot use --server-ca" in err, err


def test_sigterm_during_an_intercepted_session_closes_it_once(pair, server):
    relay = Relay(server.port, "--tls")
    client = tls_context(False).wrap_socket(relay.connect())
    upstream = tls_context(True, *pair).wrap_socket(server.accept(), server_side=True)
    client.sendall(b'{"class":"keepalive"}\n')
    assert upstream.recv(100) == b'{"class":"keepalive"}\n'
    relay.wait_for(lambda p: b'"from":"client"' in p.out, what="the record")
    relay.signal(signal.SIGTERM)
    assert relay.finish() == 0
    close = _one_clean_close(relay)
    assert close["by"] == "relay" and close["bytes"]["client"] == 22
    client.close()
    upstream.close()


@pytest.mark.heavy
def test_an_unread_output_never_stalls_an_intercepted_session(pair, server):
    relay = Relay(server.port, "--tls", collect=False)  # nobody reads its records
    client = tls_context(False).wrap_socket(relay.connect())
    upstream = tls_context(True, *pair).wrap_socket(server.accept(), server_side=True)
    payload = b'{"class":"getlist","function":"updatestatus","status":{"x":"' + b"y" * 150 + b'"}}\n'
    payload *= 60_000  # about 12 MB, three times what the tap holds
    sender = threading.Thread(target=upstream.sendall, args=(payload,))
    sender.start()
    got = 0
    while got < len(payload):
        got += len(client.recv(1 << 16))
    sender.join(WAIT)
    assert got == len(payload)  # the session went on, whatever the tap dropped
    client.close()
    upstream.close()
    relay.kill()


def test_wrappers_pass_the_tls_options_on():
    from ctipipe import wrappers
    wrapper = cli.Parser("w")
    actions = wrappers.add_relay_options(wrapper)
    relay = cli.Parser("r")
    relay_module.add_relay_options(relay)
    given = ["xivo", "--starttls", "pass", "--tls", "--cert", "c.pem", "--key", "k.pem",
             "--server-ca", "ca.pem"]
    again = relay.parse_args(wrappers.relay_argv(actions, wrapper.parse_args(given)))
    assert (again.starttls, again.tls, again.cert, again.key, again.server_ca) == (
        "pass", True, "c.pem", "k.pem", "ca.pem")
    assert relay.parse_args(wrappers.relay_argv(actions, wrapper.parse_args(["xivo"]))).starttls \
        == "intercept"


def _ends_with_a_bare_fin(pair, server, port: int) -> None:
    # TLS 1.0 as the XiVO client (a TLS 1.3 client that never reads would leave
    # the relay's session tickets unread, and its close would be a reset).
    client = tls_context(False, tls10_only=True).wrap_socket(
        socket.create_connection((LOCALHOST, port), timeout=WAIT))
    upstream = tls_context(True, *pair).wrap_socket(server.accept(), server_side=True)
    client.sendall(b'{"class":"logout"}\n')
    client.close()  # a bare FIN, as the XiVO client ends
    assert _read_to_eof(upstream) == b'{"class":"logout"}\n'
    upstream.close()


def test_a_peer_that_alerts_on_the_passed_on_fin_ends_the_session_cleanly(pair, server, capfd):
    """OpenSSL 3 answers a bare FIN with a decode_error alert: that is its end, not a failure."""
    relay = RelayMain(capfd, server.port, "--tls")
    assert relay.run(partial(_ends_with_a_bare_fin, pair, server)) == 0
    close = _one_clean_close(relay)
    assert close["by"] == "client" and "error" not in close, json.dumps(close)


def test_handshake_failures_are_said_without_cpythons_source_places():
    # "TLS/SSL connection has been closed (EOF) (_ssl.c:1006)" reached users.
    from ctipipe.relay import certs as tls_module
    assert tls_module.handshake_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol "
                                                         "(_ssl.c:1006)")) \
        == "connection closed during the handshake"
    assert tls_module.handshake_error(ssl.SSLError(1, "something odd (_ssl.c:2580)")) == "something odd"

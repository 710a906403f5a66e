"""TLS: the relay's certificate and contexts, the XiVO-like peers, the demo's STARTTLS."""
from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time

import pytest

from helpers import LOCALHOST, PYTHON, WAIT, Proc, command, free_port
from peers import PASSWORD, XivoClient, XivoServer, tls_context

from ctipipe import cli, demo, tls


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
    script = ("from ctipipe import tls; c, k, made = tls.relay_certificate(); "
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
    script = ("import sys; from ctipipe import tls; tls.relay_certificate(); "
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

def _demo_server(*args: str) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(command("ctidemo", "server", "--port", str(port), *args))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return proc, port
        except OSError:
            assert proc.popen.poll() is None, proc.err
            time.sleep(0.05)
    raise AssertionError("the demo server did not listen")


def test_demo_server_offers_starttls_to_a_xivo_client():
    proc, port = _demo_server()
    client = XivoClient(port, password=demo.PASSWORD, extra=[{"class": "keepalive"}])
    received = client.run()
    assert client.tls["version"] in ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    assert received[0] == {"class": "starttls", "timenow": received[0]["timenow"]}
    assert received[1]["starttls"] is True
    classes = [m["class"] for m in received[2:]]
    assert classes[:3] == ["login_id", "login_pass", "login_capas"]
    assert "replyid" not in received[3]  # protocol 2.x login replies
    proc.kill()
    assert "Traceback" not in proc.err


def test_demo_server_without_starttls_sends_nothing_first():
    proc, port = _demo_server("--no-starttls")
    with socket.create_connection((LOCALHOST, port), timeout=WAIT) as conn:
        conn.settimeout(0.5)
        with pytest.raises(socket.timeout):
            conn.recv(1)
    client = XivoClient(port, wants_tls=False, protocol="1", password=demo.PASSWORD)
    client.run()
    assert client.tls is None


def test_demo_client_takes_the_offer_and_logs_in_with_a_clear_password_inside_tls(pair):
    server = XivoServer(*pair, password=demo.PASSWORD)
    try:
        proc = Proc(command("ctidemo", "client", "--port", str(server.port), "--pause", "0"))
        assert proc.finish() == 0, proc.err
    finally:
        server.close()
    log = server.log[0]
    assert log["tls"]["version"] == "TLSv1" and log["error"] is None
    classes = [m["class"] for m in log["received"]]
    assert classes[:5] == ["starttls", "login_id", "starttls", "login_pass", "login_capas"]
    assert log["received"][3]["password"] == demo.PASSWORD
    assert classes[-1] == "logout"


def test_demo_client_declines_nothing_when_no_offer_comes(pair):
    server = XivoServer(*pair, offer=False, protocol="1", password=demo.PASSWORD)
    try:
        proc = Proc(command("ctidemo", "client", "--port", str(server.port), "--pause", "0"))
        assert proc.finish() == 0, proc.err
    finally:
        server.close()
    assert server.log[0]["tls"] is None
    assert [m["class"] for m in server.log[0]["received"]][:2] == ["login_id", "login_pass"]


@pytest.mark.parametrize("behaviour, expected", [
    (b"", "closed the connection while we waited for the reply to"),
    (b"this is not json\n", "not JSON"),
    (b'{"class": "starttls"}\n{"class": "starttls", "starttls": true}\nGARBAGE', "TLS with the server failed"),
])
def test_demo_client_errors_are_one_line(server, behaviour, expected):
    proc = Proc(command("ctidemo", "client", "--port", str(server.port), "--pause", "0"))
    conn = server.accept()
    conn.sendall(behaviour)
    if not behaviour:
        conn.recv(1 << 16)  # its login_id, after waiting for an offer
    else:
        time.sleep(0.2)
    conn.close()
    assert proc.finish() == 1
    assert proc.err.count("\n") == 1 and expected in proc.err, proc.err
    assert proc.err.startswith("ctidemo: error: ")


def test_demo_server_port_taken_says_which_address(server):
    proc = Proc(command("ctidemo", "server", "--port", str(server.port)))
    assert proc.finish() == 1
    assert proc.err == (f"ctidemo: error: cannot listen on 127.0.0.1:{server.port}: Address "
                        "already in use (another server running? choose another --port)\n")

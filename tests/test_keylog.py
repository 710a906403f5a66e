"""ctirelay --keylog: the TLS secrets of both legs in an NSS key log that
tshark decrypts a capture with."""
from __future__ import annotations

import os
import ssl
import stat
import subprocess

import pytest

from helpers import WAIT, Relay
from peers import PASSWORD, XivoClient, XivoServer, tls_context
from capturing import Capture, need_tools

from ctipipe.core.cli import CommandError
from ctipipe.relay import certs as tls
from ctipipe.relay import command as relay_command


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cert, key, _ = tls.relay_certificate(tmp_path_factory.mktemp("peer-cert"))
    return cert, key


def test_the_key_log_is_created_private_and_appended(tmp_path):
    path = tmp_path / "keys.log"
    tls.open_keylog(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("CLIENT_RANDOM 00 11\n")
    tls.open_keylog(path)  # an existing log is appended to, not truncated
    assert path.read_text() == "CLIENT_RANDOM 00 11\n"


def test_a_symbolic_link_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "keys.log").symlink_to(target)
    with pytest.raises(CommandError, match="symbolic link"):
        tls.open_keylog(tmp_path / "keys.log")
    assert not target.exists()


def test_contexts_write_the_secrets(tmp_path, pair):
    path = tls.open_keylog(tmp_path / "keys.log")
    assert tls.client_leg_context(*pair, path).keylog_filename == path
    assert tls.server_leg_context(None, path).keylog_filename == path
    assert tls.server_leg_context(None).keylog_filename is None


class ModernClient(XivoClient):
    """The XiVO client's exchange, with any TLS version up to 1.3."""

    def _upgrade(self, conn):
        wrapped = tls_context(False).wrap_socket(conn)
        self.tls = {"version": wrapped.version(), "cipher": wrapped.cipher()[0]}
        return wrapped


def _session(pair, relay_args, env=None):
    """A STARTTLS session: the server leg in TLS 1.2, the client leg in 1.3."""
    server = XivoServer(*pair)
    server.context.maximum_version = ssl.TLSVersion.TLSv1_2
    server.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return server, Relay(server.port, *relay_args, env=env)


def test_tshark_decrypts_a_capture_with_the_key_log(tmp_path, pair):
    need_tools()
    keylog = tmp_path / "keys.log"
    server, relay = _session(pair, ["--keylog", str(keylog)])
    try:
        capture = Capture(tmp_path / "tls.pcap", (server.port, relay.port))
        client = ModernClient(relay.port)
        client.run()
        assert relay.finish() == 0, relay.err
        capture.stop(legs=2)
    finally:
        server.close()
    tls_events = [r for r in relay.records() if r.get("event") == "tls"]
    assert tls_events[0]["client"]["version"] == "TLSv1.3"
    assert tls_events[0]["server"]["version"] == "TLSv1.2"
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    text = keylog.read_text()
    assert "CLIENT_RANDOM " in text and "CLIENT_TRAFFIC_SECRET_0 " in text
    readers = [subprocess.Popen(  # one per leg, side by side
        ["tshark", "-r", str(tmp_path / "tls.pcap"), "-o", f"tls.keylog_file:{keylog}",
         "-d", f"tcp.port=={port},tls", "-Y", f"tcp.port=={port}", "-x"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for port in (server.port, relay.port)]
    for reader in readers:
        try:
            shown, err = reader.communicate(timeout=WAIT * 3)
        finally:
            reader.kill()
        assert reader.returncode == 0, err
        decrypted = _decrypted(shown)
        assert '"class":"login_id"' in decrypted and '"userlogin":"alice"' in decrypted
        assert f'"password":"{PASSWORD}"' in decrypted


def _decrypted(shown: str) -> str:
    """The text of tshark -x's "Decrypted TLS" dumps."""
    out, inside = [], False
    for text in shown.splitlines():
        if text.startswith("Decrypted TLS"):
            inside = True
            continue
        if inside and not text.strip():
            inside = False
        if inside and len(text) > 56:
            out.append(text[56:])
    return "".join(out)


def test_sslkeylogfile_in_the_environment(tmp_path, pair):
    keylog = tmp_path / "env-keys.log"
    env = {**os.environ, "SSLKEYLOGFILE": str(keylog)}
    server, relay = _session(pair, [], env=env)
    try:
        ModernClient(relay.port).run()
        assert relay.finish() == 0, relay.err
    finally:
        server.close()
    assert "warning: SSLKEYLOGFILE is set" in relay.err and str(keylog) in relay.err
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    assert keylog.read_text().count("\n") >= 5  # both legs' secrets


def test_a_symbolic_link_stops_the_relay(tmp_path, capfd):
    (tmp_path / "keys.log").symlink_to(tmp_path / "elsewhere")
    assert relay_command.main(["127.0.0.1", "--listen-port", "0", "--keylog",
                               str(tmp_path / "keys.log")]) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "symbolic link" in err, err
    assert not (tmp_path / "elsewhere").exists()


def test_an_existing_key_log_others_can_read_is_narrowed_to_0600(tmp_path):
    from ctipipe.relay import certs as certs_module
    keys = tmp_path / "world.keys"
    keys.write_text("CLIENT_RANDOM earlier\n")
    os.chmod(keys, 0o644)
    certs_module.open_keylog(keys)
    assert os.stat(keys).st_mode & 0o777 == 0o600
    assert keys.read_text() == "CLIENT_RANDOM earlier\n"  # appended to, never truncated

"""How intercepted TLS sessions end: a close_notify passed on as a close_notify,
TLS failures said in one line (with a hint where the peer spoke plain text), and
the `tls` event saying which certificates were seen and verified."""
from __future__ import annotations

import json
import os
import socket
import ssl
import threading

import pytest
import trio

from helpers import LOCALHOST, WAIT, Proc, Server, command, free_port
from peers import XivoServer, tls_context
from test_tls import RelayMain

from ctipipe.core import notices as notices_module
from ctipipe.relay import certs
from ctipipe.relay import command as relay_module
from ctipipe.relay import intercept
from ctipipe.relay.tap import Tap

REPLY = b'{"class": "logout", "replyid": 1234567890, "timenow": 1795857223.96}\n'


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cert, key, _ = certs.relay_certificate(tmp_path_factory.mktemp("peer-cert"))
    return cert, key


async def _start_relay(nursery, server_port, out_fd, err_fd, pair, *, implicit=True,
                       server_ca=None, loop=True):
    notices = notices_module.Notices(err_fd)
    tap = Tap(out_fd, raw=False, max_line=1 << 20, notify=notices.say)
    nursery.start_soon(tap.run)
    options = intercept.Options(starttls="intercept", implicit=implicit,
                                client_context=certs.client_leg_context(*pair),
                                server_context=certs.server_leg_context(server_ca),
                                verified=server_ca is not None, cert=str(pair[0]))
    relay = relay_module.Relay(LOCALHOST, server_port, listen_addr=LOCALHOST, listen_port=0,
                               loop=loop, tap=tap, verbose=False, connect_timeout=5,
                               notices=notices, tls_options=options)
    [address] = await nursery.start(relay.serve)
    return relay, int(address.rsplit(":", 1)[1]), tap


def _strict_server(listener: socket.socket, pair, got: dict) -> None:
    """A TLS server with OpenSSL 3's defaults: it reads the request to its end,
    then answers. After a bare FIN (no close_notify) its TLS is broken and it
    cannot write the answer."""
    conn, _ = listener.accept()
    conn.settimeout(WAIT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pair)
    with context.wrap_socket(conn, server_side=True) as tls:
        request = b""
        while chunk := tls.recv(1 << 16):
            request += chunk
        got["request"] = request
        try:
            tls.sendall(REPLY)
            got["sent"] = True
            tls.unwrap()
        except (OSError, ssl.SSLError) as error:
            got["error"] = repr(error)


def _closing_client(port: int, request: bytes) -> bytes:
    """A TLS client that sends its request, ends with close_notify (and no FIN), then
    reads the answer to its end."""
    sock = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(False).wrap_bio(incoming, outgoing)

    def feed() -> bool:
        data = sock.recv(1 << 16)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return bool(data)

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                feed()
        sock.sendall(outgoing.read())
        tls.write(request)
        try:
            tls.unwrap()  # the close_notify
        except ssl.SSLWantReadError:
            pass
        sock.sendall(outgoing.read())
        answer = b""
        while True:
            try:
                data = tls.read(1 << 16)
            except ssl.SSLWantReadError:
                if not feed():
                    break
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not data:
                break
            answer += data
        return answer
    finally:
        sock.close()


async def test_a_close_notify_reaches_a_strict_server_as_a_close_notify(pair, tmp_path):
    """OpenSSL 3 takes a bare FIN for a truncation: the client that ended with
    close_notify got none of the reply; passed on as close_notify, it gets all."""
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen(1)
    listener.settimeout(WAIT)
    got: dict = {}
    server = threading.Thread(target=_strict_server, args=(listener, pair, got), daemon=True)
    server.start()
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            relay, port, _ = await _start_relay(nursery, listener.getsockname()[1], out, out, pair)
            answer = await trio.to_thread.run_sync(_closing_client, port, b'{"class":"logout"}\n')
            await trio.to_thread.run_sync(server.join, WAIT)
            nursery.cancel_scope.cancel()
    listener.close()
    assert got.get("request") == b'{"class":"logout"}\n'
    assert "error" not in got, got
    assert answer == REPLY


# --- TLS failures are never silent ---------------------------------------------------

def _relay(server_port: int, *args: str, name: str = "ctirelay",
           files: tuple = ()) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(command(name, LOCALHOST, *files, "--port", str(server_port), "--listen-addr",
                        LOCALHOST, "--listen-port", str(port), *args))
    return proc, port


def _connect(port: int, proc: Proc) -> socket.socket:
    """A connection to the relay once it listens (a wrapper starts it a little later)."""
    for _ in range(int(WAIT / 0.05)):
        try:
            return socket.create_connection((LOCALHOST, port), timeout=WAIT)
        except ConnectionRefusedError:
            if proc.popen.poll() is not None:
                raise AssertionError(proc.err)
            threading.Event().wait(0.05)
    raise AssertionError(f"the relay did not listen: {proc.err}")


def _attempt_tls(port, proc) -> None:
    """A TLS client through the relay whose handshake is expected to fail."""
    client = _connect(port, proc)
    try:
        tls_context(False).wrap_socket(client)
    except (OSError, ssl.SSLError):
        pass


@pytest.mark.parametrize("name", ["ctirelay", "ctisave"])
def test_a_server_certificate_that_does_not_verify_is_said_and_exits_1(pair, tmp_path, name):
    other, _, _ = certs.relay_certificate(tmp_path / "other")
    server = XivoServer(*pair, implicit=True)
    files = (str(tmp_path / "c"), str(tmp_path / "s")) if name == "ctisave" else ()
    proc, port = _relay(server.port, "--tls", "--server-ca", str(other), name=name, files=files)
    _attempt_tls(port, proc)
    assert proc.finish() == 1
    server.close()
    lines = proc.err.splitlines()
    said = [line for line in lines if "did not verify" in line]
    assert len(said) == 1, proc.err
    assert said[0].startswith(f"{name}: error: session 1: the server's certificate did not "
                              f"verify against --server-ca"), proc.err
    assert "Traceback" not in proc.err


def _fails_tls(port: int) -> None:
    try:
        tls_context(False).wrap_socket(socket.create_connection((LOCALHOST, port), timeout=WAIT))
    except ConnectionRefusedError:
        raise  # (not listening yet: again)
    except (OSError, ssl.SSLError):
        pass


def test_tls_to_a_port_that_starts_in_plain_text_gives_the_hint(pair, capfd):
    """ctirelay --tls against a XiVO port 5003, which sends its offer in plain text."""
    server = XivoServer(*pair)  # plain, with the STARTTLS offer first
    proc = RelayMain(capfd, server.port, "--tls")
    assert proc.run(_fails_tls) == 1
    server.close()
    assert proc.err.count("drop --tls") == 1, proc.err
    [line] = [line for line in proc.err.splitlines() if "drop --tls" in line]
    assert line.startswith("ctirelay: error: session 1: the server's TLS handshake failed: ")
    assert line.endswith("(this port starts in plain text: drop --tls)")


async def test_with_loop_each_tls_failure_is_one_line_and_the_relay_goes_on(pair, tmp_path):
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    err = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT)
    server = Server()  # listens, never answers: only the client's leg matters here
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            relay, port, _ = await _start_relay(nursery, server.port, out, err, pair)
            for _ in range(2):  # a plain client against --tls
                stream = await trio.open_tcp_stream(LOCALHOST, port)
                await stream.send_all(b'{"class":"login_id","userlogin":"alice"}\n')
                try:
                    while await stream.receive_some():
                        pass
                except trio.BrokenResourceError:
                    pass
                await stream.aclose()
            while relay.sessions < 2 or b"session 2" not in (tmp_path / "err").read_bytes():
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    server.close()
    said = (tmp_path / "err").read_text().splitlines()
    failures = [line for line in said if "TLS handshake failed" in line]
    assert [line.split(": ")[1] for line in failures] == ["session 1", "session 2"], said
    assert all(line.endswith("(the client speaks plain text: drop --tls)") for line in failures)
    closes = [json.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()
              if b'"close"' in line]
    assert [c["by"] for c in closes] == ["client", "client"]


# --- what was verified ---------------------------------------------------------------

def _pretty_line(record: dict) -> str:
    from ctipipe.stages.pretty import Pretty
    pretty = Pretty(compact=True, color=False, clock="none")
    line = json.dumps(record).encode()
    pretty.begin_batch(line)
    pretty.handle(record, line)
    return pretty.finish().decode()


@pytest.mark.parametrize("verify", [False, True])
async def test_the_tls_event_says_which_certificates_were_seen_and_verified(pair, tmp_path,
                                                                          verify):
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    server_cert, server_key, _ = certs.relay_certificate(tmp_path / "server")
    server = XivoServer(server_cert, server_key, implicit=True)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            _, port, _ = await _start_relay(nursery, server.port, out, out, pair,
                                            server_ca=server_cert if verify else None)
            sock = await trio.to_thread.run_sync(socket.create_connection, (LOCALHOST, port))
            client = await trio.to_thread.run_sync(tls_context(False).wrap_socket, sock)
            client.close()
            while b'"tls"' not in (tmp_path / "out").read_bytes():
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    server.close()
    event = next(json.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()
                 if b'"event":"tls"' in line)
    assert event["server"] == {**event["server"], "subject": "CN=ctipipe relay,O=ctipipe",
                               "sha256": certs.fingerprint(server_cert), "verified": verify}
    assert event["client"] == {**event["client"], "subject": "CN=ctipipe relay,O=ctipipe",
                               "sha256": certs.fingerprint(pair[0])}
    assert "verified" not in event["client"]  # whether the client checked it, nobody can say
    shown = _pretty_line(event)
    assert shown.count("\n") == 1
    assert (f"(the relay's certificate CN=ctipipe relay,O=ctipipe SHA-256 "
            f"{certs.fingerprint(pair[0])})") in shown
    assert shown.rstrip().endswith(f"(certificate CN=ctipipe relay,O=ctipipe SHA-256 "
                                   f"{certs.fingerprint(server_cert)}, "
                                   f"{'verified' if verify else 'not verified'})")


def test_a_recording_without_certificates_shows_as_before():
    record = {"ts": 1.0, "conn": 1, "event": "tls", "how": "starttls", "intercepted": True,
              "client": {"version": "TLSv1", "cipher": "AES"},
              "server": {"version": "TLSv1", "cipher": "AES"}}
    assert _pretty_line(record) == "--- session 1 TLS (STARTTLS): client TLSv1 AES, server TLSv1 AES\n"


def _demo_certificate_seen(port: int) -> bytes:
    sock = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    with sock:
        reader = sock.makefile("rb")
        assert json.loads(reader.readline())["class"] == "starttls"
        sock.sendall(b'{"class":"starttls","status":true}\n')
        assert json.loads(reader.readline())["starttls"] is True
        with tls_context(False).wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)


async def test_the_demo_server_has_its_own_certificate(tmp_path, monkeypatch):
    """Not the relay's file names nor its subject: nobody takes one for the other."""
    from ctipipe.demo import command as demo
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(demo.serve, LOCALHOST, 0)
            der = await trio.to_thread.run_sync(_demo_certificate_seen, port)
            nursery.cancel_scope.cancel()
    relay_cert, _, _ = certs.relay_certificate()
    assert certs.summary(der)["subject"] == "CN=ctipipe demo server,O=ctipipe"
    assert certs.summary(certs.der(relay_cert))["subject"] == "CN=ctipipe relay,O=ctipipe"
    names = {path.name for path in (tmp_path / "ctipipe").rglob("*.pem")}
    assert names == {"relay-cert.pem", "relay-key.pem", "demo-server-cert.pem",
                     "demo-server-key.pem"}


def _plain_text_after_the_answer(port: int) -> None:
    conn = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    reader = conn.makefile("rb")
    assert json.loads(reader.readline())["class"] == "starttls"
    conn.sendall(b'{"class":"starttls","status":true}\n')
    assert json.loads(reader.readline())["starttls"] is True
    conn.sendall(b'{"class":"login_id","userlogin":"alice"}\n' * 20)
    try:
        while conn.recv(1 << 16):
            pass
    except OSError:
        pass
    conn.close()


def test_plain_text_after_a_starttls_answer_gets_no_tls_hint(pair, capfd):
    """--tls is not on the command line there: telling to drop it would mislead."""
    server = XivoServer(*pair)
    proc = RelayMain(capfd, server.port)
    assert proc.run(_plain_text_after_the_answer) == 1
    server.close()
    assert "the client's TLS handshake failed" in proc.err and "drop --tls" not in proc.err

"""A sink that fails (a full disk) never cuts the relayed session, and says so truly."""
import socket
import time

from helpers import LOCALHOST, WAIT, Proc, command, free_port, recv_all


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return socket.create_connection((LOCALHOST, port), timeout=WAIT)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the relay did not listen"
            time.sleep(0.05)


def test_ctisave_to_a_full_disk_keeps_the_session(server, tmp_path):
    port = free_port()
    tool = Proc(command("ctisave", LOCALHOST, "--port", str(server.port), "--listen-addr", LOCALHOST,
                        "--listen-port", str(port), str(tmp_path / "client"), "/dev/full"))
    tool.wait_for(lambda p: "listening on" in p.err, what="the relay to listen")
    client = connect(port)
    upstream = server.accept()
    upstream.sendall(b'{"class":"login_id","sessionid":"21UaGDfst7"}\n')
    assert recv_all(client, 46)
    tool.wait_for(lambda p: "ctisplit failed" in p.err, what="the sink to fail")
    # the session goes on, both ways
    for n in range(3):
        message = b'{"class":"getlist","n":%d}\n' % n
        upstream.sendall(message)
        assert recv_all(client, len(message)) == message
        client.sendall(message)
        assert recv_all(upstream, len(message)) == message
    assert tool.popen.poll() is None
    client.close()
    assert recv_all(upstream) == b""  # the client's end is passed on
    upstream.close()
    assert tool.finish() == 1
    lines = tool.err.splitlines()
    assert lines[1:3] == [
        "ctisave: error: cannot write /dev/full: No space left on device",
        "ctisave: ctisplit failed: nothing more is recorded; the relay goes on until its "
        "sessions end"]
    assert "the sessions go on being relayed until they end" in tool.err
    assert "Traceback" not in tool.err

"""ctireplay --clients N under a low limit on open files: the soft limit is
raised as ctirelay does, and a hard limit too low for N is said in one line.
Real processes (the limits are the process's), the server in-process."""
import functools
import json
import resource
import subprocess

import trio

from helpers import LOCALHOST, command, free_port

CLIENTS = 100

LOGIN = b"".join(json.dumps(r).encode() + b"\n" for r in (
    {"ts": 1.0, "conn": 1, "from": "client", "size": 0, "msg": {"class": "login_id", "commandid": 1}},
    {"ts": 1.1, "conn": 1, "from": "server", "size": 0, "msg": {"class": "login_id", "sessionid": "a"}},
    {"ts": 1.2, "conn": 1, "event": "close", "by": "server"}))


def limited(soft: int, hard: int | None = None):
    """preexec_fn: the child starts with these limits on open files."""
    def apply() -> None:
        _, current = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current if hard is None else hard))
    return apply


async def test_clients_past_a_low_soft_limit_all_play(tmp_path):
    """A soft limit of 64 (the hard one higher): 100 sessions open at once."""
    path = tmp_path / "login.jsonl"
    path.write_bytes(LOGIN)
    connected = 0
    everyone = trio.Event()

    async def serve(stream) -> None:
        nonlocal connected
        connected += 1
        if connected == CLIENTS:
            everyone.set()
        async with stream:
            await stream.receive_some(1 << 16)
            with trio.move_on_after(10):  # answer once all are open at the same time
                await everyone.wait()
            await stream.send_all(b'{"class":"login_id","sessionid":"a"}\n')

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(30):
            done = await trio.run_process(
                command("ctireplay", str(path), "--to", LOCALHOST, "--port", str(port),
                        "--clients", str(CLIENTS), "--pace", "asap"),
                capture_stdout=True, capture_stderr=True, check=False,
                preexec_fn=limited(64))
        nursery.cancel_scope.cancel()
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert f"{CLIENTS} of {CLIENTS} sessions followed the recording" in err
    assert "Too many open files" not in err and "hard limit" not in err


def test_a_hard_limit_too_low_for_clients_is_said_in_one_line(tmp_path):
    path = tmp_path / "login.jsonl"
    path.write_bytes(LOGIN)
    done = subprocess.run(command("ctireplay", str(path), "--to", LOCALHOST,
                                  "--port", str(free_port()), "--clients", str(CLIENTS)),
                          capture_output=True, timeout=30, preexec_fn=limited(64, 64))
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err.splitlines()[0] == (
        f"ctireplay: warning: the hard limit on open files (64) is too low for --clients "
        f"{CLIENTS}: about 48 sessions can be open at once, the others will fail with "
        f"\"Too many open files\" (raise it: ulimit -Hn)")
    assert f"0 of {CLIENTS} sessions followed the recording; diverged: 1-{CLIENTS}" in err

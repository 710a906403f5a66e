"""No code planted in the working directory runs as the user (a shared /tmp, an
unpacked archive): every bin/ name, the commands that pip installs and the
stages a wrapper starts keep the working directory off the import path."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from ctipipe import __version__
from ctipipe.commands import COMMANDS
from helpers import LOCALHOST, WAIT, Proc, Server, recv_all

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "bin"


def _plant(folder: Path) -> Path:
    """A ctipipe/ package in FOLDER whose import leaves a mark."""
    package = folder / "ctipipe"
    package.mkdir()
    mark = folder / "planted-code-ran"
    code = f"open({str(mark)!r}, 'w').close()\n"
    (package / "__init__.py").write_text(code)
    (package / "__main__.py").write_text(code)
    return mark


def _plant_both(folder: Path) -> Path:
    """An empty ctipipe/ folder and a ctipipe.py module whose import leaves a mark,
    both in FOLDER. With FOLDER anywhere on the import path either one shadows the
    installed package: the module, which a directory without __init__.py does not
    hide, runs and leaves the mark (as a planted package would); with the module
    gone, the empty folder would be imported instead, a namespace without
    __version__ (the command fails). One run thus sees both."""
    (folder / "ctipipe").mkdir()
    mark = folder / "planted-code-ran"
    (folder / "ctipipe.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    return mark


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_planted_ctipipe_in_the_working_directory_never_runs(name, tmp_path):
    mark = _plant_both(tmp_path)
    result = subprocess.run([str(BIN / name), "--version"], cwd=tmp_path, capture_output=True,
                            timeout=WAIT * 3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{name} {__version__}\n"
    assert not mark.exists()


def test_the_stages_of_a_wrapper_never_run_planted_code(tmp_path):
    # ctispy starts `ctirelay | ctipretty` as processes of its own: none of them
    # may import the planted package, and the session is shown as usual.
    mark = _plant(tmp_path)
    server = Server()
    spy = Proc([str(BIN / "ctispy"), LOCALHOST, "--port", str(server.port),
                "--listen-addr", LOCALHOST, "--listen-port", "0", "-v"], cwd=tmp_path)
    spy.wait_for(lambda p: "listening on" in p.err, what="ctispy to listen")
    port = int(spy.err.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    import socket
    client = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    upstream = server.accept()
    client.sendall(b'{"class": "login_id", "commandid": 1}\n')
    client.shutdown(socket.SHUT_WR)
    assert recv_all(upstream) == b'{"class": "login_id", "commandid": 1}\n'
    upstream.close()
    recv_all(client)
    client.close()
    assert spy.finish() == 0, spy.err
    assert b'"class": "login_id"' in spy.out
    assert not mark.exists()
    server.close()


def test_pyproject_and_the_command_table_name_the_same_commands():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"ctipipe.commands:{name}" for name in COMMANDS}
    for name in COMMANDS:
        assert (BIN / name).resolve() == (BIN / "_launch").resolve(), name

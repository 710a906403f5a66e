"""Stages given what is not a tagged stream, or FILE words: the exit status and
the one line on standard error, from each command run in-process
(tests/inprocess.py) but for the bin/ script. The logic is tested through the
pure runner in test_runner.py."""
import os
import subprocess
from pathlib import Path

import pytest

import inprocess
from ctipipe.stages import runner
from helpers import WAIT

GOLDEN = Path(__file__).parent / "golden"
SESSION = (GOLDEN / "session.jsonl").read_bytes()
CLASSIC = b'{\n    "class": "login_id",\n    "userlogin": "alice"\n}\n'


def run(*argv: str, data: bytes = b"", cwd=None) -> inprocess.Result:
    return inprocess.run(*argv, data=data, cwd=cwd)


@pytest.mark.parametrize("name,extra", [("ctipretty", []), ("ctistat", []), ("ctistrip", ["x"]),
                                        ("ctiinclude", ["class=x"]), ("ctiexclude", ["class=x"])])
@pytest.mark.parametrize("kind", ["classic", "binary", "text"])
def test_a_file_that_is_not_a_tagged_stream_is_one_line_and_status_2(tmp_path, name, extra, kind):
    # ctipretty save/c on a classic ctisave file gave 100 "not JSON" warnings and exit 0
    path = tmp_path / kind
    path.write_bytes({"classic": CLASSIC, "binary": b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40,
                      "text": b"root:x:0:0:root:/root:/bin/bash\n" * 30}[kind])
    result = run(name, *extra, str(path))
    assert result.returncode == 2 and result.stdout == b""
    says = {"classic": "it looks like a classic ctisave file (one side's messages as indented JSON), "
                       "which ctidiff reads (ctidiff old/cti-server new/cti-server)",
            "binary": "it is binary data", "text": "its first lines are not JSON records"}[kind]
    assert result.stderr.decode() == f"{name}: error: {path} is not a tagged stream (as ctirelay " \
                                     f"writes): {says}\n"


def test_a_directory_has_the_same_status_as_a_file_argument_or_on_standard_input(tmp_path):
    # `ctipretty /tmp` was 1, `ctipretty < /tmp` 2 (bin/_launch)
    result = run("ctipretty", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.decode() == f"ctipretty: error: {tmp_path} is a directory, not a tagged stream\n"
    launched = subprocess.run([str(Path(__file__).parent.parent / "bin" / "ctipretty")],
                              stdin=os.open(tmp_path, os.O_RDONLY), capture_output=True, timeout=WAIT)
    assert launched.returncode == 2


def test_a_missing_file_is_status_1_in_every_stage(tmp_path):
    for argv in (["ctistat", "missing.jsonl"], ["ctipretty", "missing.jsonl"],
                 ["ctistrip", "x", "missing.jsonl"], ["ctiinclude", "a=b", "missing.jsonl"]):
        result = run(*argv, cwd=tmp_path)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.decode() == f"{argv[0]}: error: cannot read missing.jsonl: No such file or directory\n"


def test_a_file_name_that_is_not_utf8_is_escaped(tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9\x1b[2J.jsonl"
    with open(name, "wb") as file:
        file.write(CLASSIC)
    result = run("ctipretty", os.fsdecode(name))  # (as Python gives a process its arguments)
    assert result.returncode == 2
    assert b"\x1b" not in result.stderr and b"\xe9" not in result.stderr
    assert b"caf\\xe9\\x1b[2J.jsonl is not a tagged stream" in result.stderr


def test_filters_read_file_words_in_order(tmp_path):
    # `ctiinclude class=getlist big.jsonl` said "not a KEY=VALUE expression"
    (tmp_path / "big.jsonl").write_bytes(SESSION)
    piped = run("ctiinclude", "class=getlist", data=SESSION).stdout
    result = run("ctiinclude", "class=getlist", "big.jsonl", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == piped and piped
    result = run("ctiexclude", "big.jsonl", "class=getlist", "-", cwd=tmp_path, data=SESSION)
    assert result.returncode == 0
    assert result.stdout == run("ctiexclude", "class=getlist", data=SESSION).stdout * 2
    result = run("ctiinclude", "class", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (b"ctiinclude: error: not a KEY=VALUE expression: 'class' nor an existing "
                             b"file to read (see ctiinclude --help)\n")


@pytest.mark.parametrize("name", ["ctistrip", "ctiinclude", "ctiexclude"])
def test_filters_say_in_help_that_they_read_files(name):
    result = run(name, "--help")
    assert b"[FILE...]" in result.stdout and b"names an existing file" in result.stdout


def test_file_words_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "capture").write_text("")
    (tmp_path / "folder").mkdir()
    for word in ("-", "capture", "missing.jsonl", "a.json", "old/session"):
        assert runner.is_file_word(word), word
    for word in ("class=getlist", "class!=x", "timenow", "config.lastcall", "folder", "a=b.jsonl"):
        assert not runner.is_file_word(word), word


# --- exit statuses as README gives them -------------------------------------------------

@pytest.mark.parametrize("argv", [["ctirelay", "no-such-host.invalid"],
                                  ["ctispy", "no-such-host.invalid"],
                                  ["ctistat", "no-such-host.invalid"],
                                  ["ctireplay", "{rec}", "--to", "no-such-host.invalid"]])
def test_a_host_that_does_not_resolve_is_status_1_everywhere(argv, tmp_path):
    # ctireplay --to gave 2
    (tmp_path / "rec.jsonl").write_bytes(SESSION)
    argv = [str(tmp_path / "rec.jsonl") if a == "{rec}" else a for a in argv]
    result = run(*argv)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count(b"\n") == 1 and b"cannot resolve" in result.stderr

# (Ctrl-C during the first-run install: exit 0, tests/test_cli.py)

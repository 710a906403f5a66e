"""HOST as people type it: HOST:PORT and [IPv6]:PORT taken, a port typed as HOST refused."""
import argparse
import importlib
import subprocess

import pytest

from helpers import WAIT, command
from ctipipe.core import cli
from ctipipe import wrappers
from ctipipe.commands import COMMANDS

CASES = [
    # (text, host, port given with it)
    ("xivo-new", "xivo-new", None),
    ("xivo-new:5013", "xivo-new", 5013),
    ("127.0.0.1:25003", "127.0.0.1", 25003),
    ("::1", "::1", None),
    ("fe80::1:2", "fe80::1:2", None),
    ("[::1]", "::1", None),
    ("[::1]:5003", "::1", 5003),
    ("1.2.3.4", "1.2.3.4", None),
]


@pytest.mark.parametrize("text,host,port", CASES)
def test_server_host_splits_host_and_port(text, host, port):
    value = cli.server_host(text)
    assert (str(value), getattr(value, "port", None)) == (host, port)


@pytest.mark.parametrize("text,says", [
    ("5003", "5003 looks like a port: use --port 5003"),
    ("25003", "25003 looks like a port: use --port 25003"),
    (":5003", "not a host"),
    ("5003:5003", "not a host"),
    ("[::1]5003", "[ADDR]:PORT"),
    ("[::1", "[ADDR]:PORT"),
    ("xivo:http", "not a server's port number"),
    ("xivo:0", "out of range"),
])
def test_server_host_refuses(text, says):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        cli.server_host(text)
    assert says in str(error.value)


def relay_args(*argv: str) -> argparse.Namespace:
    parser = cli.Parser("ctispy")
    actions = wrappers.add_relay_options(parser)
    args = parser.parse_args(list(argv))
    wrappers.check_relay_options(parser, args)
    args.relay_argv = wrappers.relay_argv(actions, args)
    return args


@pytest.mark.parametrize("argv,host,port", [
    (["xivo-new"], "xivo-new", 5003),
    (["xivo-new:5013"], "xivo-new", 5013),
    (["[::1]:5013", "--port", "5013"], "::1", 5013),
    (["xivo-new", "--port", "6000"], "xivo-new", 6000),
])
def test_relay_takes_the_port_given_with_host(argv, host, port):
    args = relay_args(*argv)
    assert (args.host, args.port) == (host, port)
    assert type(args.host) is str and args.relay_argv[0] == host
    assert (["--port", str(port)] in [args.relay_argv[i:i + 2] for i in range(len(args.relay_argv))]
            or port == 5003)  # (the relay's own default is not repeated)


def test_two_different_ports_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        relay_args("xivo-new:5013", "--port", "6000")
    assert exit_.value.code == 2
    assert "the port is given twice: xivo-new:5013 and --port 6000" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["ctispy", "5003"], ["ctistat", "25003"], ["ctisave", "5003", "c", "s"],
                                  ["ctirelay", "5003"], ["ctireplay", "x.jsonl", "--to", "5003"]])
def test_every_command_refuses_a_port_as_host(argv, tmp_path, monkeypatch, capsys):
    # in-process: the refusal is the parser's, before anything starts
    monkeypatch.chdir(tmp_path)
    module, func = COMMANDS[argv[0]]
    main = getattr(importlib.import_module(f"ctipipe.{module}"), func)
    with pytest.raises(SystemExit) as exit_:
        main(argv[1:])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "looks like a port: use --port" in err
    assert err.count("\n") == 1


def test_a_port_as_host_is_a_usage_error_of_the_process(tmp_path):
    """The same refusal as the process shows it: status 2, one line."""
    result = subprocess.run(command("ctispy", "5003"), capture_output=True, text=True,
                            timeout=WAIT, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ctispy: error: ") and result.stderr.count("\n") == 1
    assert "5003 looks like a port: use --port 5003" in result.stderr

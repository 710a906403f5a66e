"""The one table of ctipipe's commands, and how each one starts.

`[project.scripts]` in pyproject.toml points every name at this module
(`ctirelay = "ctipipe.commands:ctirelay"`), `python -m ctipipe NAME` and the
`bin/` scripts go through `run(NAME)`: the same signal rules for all.
A test checks that pyproject.toml lists exactly the names below.
"""
from __future__ import annotations

import importlib
import os
import signal
import stat
import sys
from typing import Callable

# command name -> (module, entry point)
COMMANDS = {
    "ctirelay": ("relay.command", "main"),
    "ctistrip": ("stages.strip", "main"),
    "ctiinclude": ("stages.include", "main_include"),
    "ctiexclude": ("stages.include", "main_exclude"),
    "ctipretty": ("stages.pretty", "main"),
    "ctisplit": ("stages.split", "main"),
    "ctistat": ("wrappers", "main_ctistat"),  # the sink, or the wrapper given a HOST
    "ctispy": ("wrappers", "main_spy"),
    "ctisave": ("wrappers", "main_save"),
    "ctidemo": ("demo.command", "main"),
    "ctireplay": ("replay.command", "main"),
    "ctidiff": ("diff.command", "main"),
    "ctireport": ("report.command", "main"),
    "ctipcap": ("pcap.command", "main"),
    "cticheck": ("check.command", "main"),
}

# A Ctrl-C before a command has begun its work ends it as SIGINT ends any
# program (a shell's 130): never 0, which would say "equal" for ctidiff and
# "no finding" for cticheck about a comparison or a check that never ran.
INTERRUPTED_EARLY = 130

# Commands that may be a stage reading the relay through a pipe.
STAGES = {"ctistrip", "ctiinclude", "ctiexclude", "ctipretty", "ctisplit", "ctistat", "cticheck",
          "ctireport"}


def _reads_a_pipe() -> bool:
    try:
        return (stat.S_ISFIFO(os.fstat(0).st_mode)
                and os.readlink("/proc/self/fd/0").startswith("pipe:"))
    except OSError:
        return False


def _start(name: str) -> int:
    if name in STAGES and _reads_a_pipe():
        # A stage reading a pipe leaves Ctrl-C to the relay upstream (docs/stream.md):
        # say so now, so that one pressed while we are still importing does
        # not end us before the input does. run_stage then keeps this rule.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    module, func = COMMANDS[name]
    # While the command's modules load, Ctrl-C is only noted: a KeyboardInterrupt
    # raised inside an extension module's initialisation (orjson's) can crash
    # the interpreter (SIGSEGV, seen with two quick Ctrl-C at start-up).
    noted: list[int] = []
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if default:
        signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        try:
            entry = getattr(importlib.import_module(f"ctipipe.{module}"), func)
        finally:
            if default:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if noted:
            return INTERRUPTED_EARLY  # Ctrl-C before the command began, as below
        return entry()
    except KeyboardInterrupt:  # Ctrl-C before the command set its own rule
        return INTERRUPTED_EARLY


def run(name: str) -> int:
    """Run command NAME with sys.argv[1:] as its arguments; its exit status."""
    sys.argv[0] = name
    try:
        return _start(name)
    finally:
        # Done, however it ended (also before the command's own guard ran):
        # a late Ctrl-C must not kill the interpreter as it finalizes.
        from ctipipe.core.cli import ignore_late_signals
        ignore_late_signals()


def __getattr__(name: str) -> Callable[[], int]:
    """`ctipipe.commands:ctirelay` and its siblings, for [project.scripts]."""
    if name in COMMANDS:
        return lambda: run(name)
    raise AttributeError(name)

"""`python -m ctipipe COMMAND [ARGS...]`: how bin/ scripts and wrappers start each stage."""
import importlib
import os
import signal
import stat
import sys

# command name -> (module, entry point); the same table as [project.scripts].
COMMANDS = {
    "ctirelay": ("relay", "main"),
    "ctistrip": ("strip", "main"),
    "ctiinclude": ("include", "main_include"),
    "ctiexclude": ("include", "main_exclude"),
    "ctipretty": ("pretty", "main"),
    "ctisplit": ("split", "main"),
    "ctistat": ("classic", "main_ctistat"),  # the sink, or the wrapper given a HOST
    "ctispy": ("classic", "main_spy"),
    "ctisave": ("classic", "main_save"),
    "ctidemo": ("demo", "main"),
    "ctireplay": ("replay", "main"),
    "ctidiff": ("diff", "main"),
}


# Commands that may be a stage reading the relay through a pipe.
STAGES = {"ctistrip", "ctiinclude", "ctiexclude", "ctipretty", "ctisplit", "ctistat"}


def _reads_a_pipe() -> bool:
    try:
        return (stat.S_ISFIFO(os.fstat(0).st_mode)
                and os.readlink("/proc/self/fd/0").startswith("pipe:"))
    except OSError:
        return False


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python -m ctipipe {%s} [ARGS...]" % ",".join(COMMANDS), file=sys.stderr)
        return 2
    name = sys.argv[1]
    if name in STAGES and _reads_a_pipe():
        # A stage reading a pipe leaves Ctrl-C to the relay upstream (STREAM.md):
        # say so now, so that one pressed while we are still importing does
        # not end us before the input does. run_stage then keeps this rule.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    module, func = COMMANDS[name]
    sys.argv = [name, *sys.argv[2:]]
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
            return 0  # Ctrl-C before the command began: done, as below
        return entry()
    except KeyboardInterrupt:  # Ctrl-C before the command set its own rule: done
        return 0


def _run() -> int:
    try:
        return main()
    finally:
        # Done, however it ended (also before the command's own guard ran):
        # a late Ctrl-C must not kill the interpreter as it finalizes.
        from .cli import ignore_late_signals
        ignore_late_signals()


if __name__ == "__main__":
    sys.exit(_run())

"""`python -m ctipipe COMMAND [ARGS...]`: how bin/ scripts and wrappers start each stage."""
import importlib
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


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python -m ctipipe {%s} [ARGS...]" % ",".join(COMMANDS), file=sys.stderr)
        return 2
    name = sys.argv[1]
    module, func = COMMANDS[name]
    sys.argv = [name, *sys.argv[2:]]
    try:
        entry = getattr(importlib.import_module(f"ctipipe.{module}"), func)
        return entry()
    except KeyboardInterrupt:  # Ctrl-C before the command set its own rule: done
        return 0


if __name__ == "__main__":
    sys.exit(main())

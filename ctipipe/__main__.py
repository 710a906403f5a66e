"""`python -m ctipipe COMMAND [ARGS...]`: how the bin/ scripts and the wrappers start
each command (with `-P`, see core.cli.command_argv)."""
import sys

try:
    from ctipipe.commands import COMMANDS, run
except KeyboardInterrupt:  # Ctrl-C while Python starts: nothing ran (130, as SIGINT)
    sys.exit(130)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python -m ctipipe {%s} [ARGS...]" % ",".join(COMMANDS), file=sys.stderr)
        return 2
    name = sys.argv.pop(1)
    return run(name)


if __name__ == "__main__":
    sys.exit(main())

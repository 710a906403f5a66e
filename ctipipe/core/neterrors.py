"""Network errors and addresses in the words every command uses.

    join("xivo-new", 5003)       -> "xivo-new:5003"   ("[::1]:5003" for IPv6)
    name(sock.getpeername())     -> "127.0.0.1:51234"
    reason(error)                -> "Connection refused"   (why a connect failed)
    is_reset(error)              -> True for a reset or a broken pipe
    lost(side, error)            -> ("connection reset by client", True)
                                    or ("server connection failed: ...", False)

Pure functions of an error or an address, no I/O: the relay, the replay and
the demo say the same thing about the same failure.
"""
from __future__ import annotations

import errno
import os
import socket

from ctipipe.core import cli

# What a peer that went away abruptly looks like to the other end: a reset,
# or a write to a connection it already reset.
RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE)


def join(host: str, port: int) -> str:
    """host:port, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def name(address) -> str:
    """A socket address (getpeername(), getsockname()) as host:port."""
    return join(address[0], address[1])


def reason(error: BaseException) -> str:
    """Why a connection failed, in the system's words ("Connection refused").

    trio tries every address of a name and reports "all attempts failed" with
    the individual errors as its cause: the first of those says it best.
    """
    cause = error.__cause__
    leaves = cli.leaves(cause) if cause is not None else []
    for leaf in [*leaves, error]:
        if isinstance(leaf, OSError) and leaf.errno and not isinstance(leaf, socket.gaierror):
            return os.strerror(leaf.errno)
        if isinstance(leaf, OSError) and leaf.strerror:
            return leaf.strerror
    return str(error)


def is_reset(error: BaseException) -> bool:
    """A reset or a broken pipe, also under trio's BrokenResourceError."""
    for candidate in (error, error.__cause__):
        if isinstance(candidate, OSError) and candidate.errno in RESET_ERRNOS:
            return True
    return False


def lost(side: str, error: BaseException) -> tuple[str, bool]:
    """What a socket error on one side's connection means: (one line, reset?)."""
    if is_reset(error):
        return f"connection reset by {side}", True
    cause = error if isinstance(error, OSError) else error.__cause__
    why = (cause.strerror or str(cause)) if isinstance(cause, OSError) else ""
    return (f"{side} connection failed: {why}" if why else f"{side} connection failed"), False

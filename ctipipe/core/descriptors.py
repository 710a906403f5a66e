"""How many descriptors (sockets, files) a producer may hold open at once."""
from __future__ import annotations

import resource

# The soft limit asked for when the hard one is unlimited.
UNLIMITED_SOFT = 1 << 16


def raise_limit(wanted: int = UNLIMITED_SOFT) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one, as far as the system lets
    us: each session holds sockets, and the usual soft limit (1024) is far
    below what a relay or a crowd of clients needs (`wanted`: how many, when
    the hard limit is unlimited). The (soft, hard) limits now in force (-1
    for unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                        else max(soft, wanted), hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)

import atexit
import os
import shutil
import signal
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

from helpers import Server, kill_started  # noqa: E402

# The relay keeps its certificate in the user's data directory: the tests (and
# every command they start) keep theirs in a directory of their own.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ctipipe-test-data-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)
# Made once now, so that no relay a test starts says it made one.
from ctipipe.relay import certs as tls  # noqa: E402

tls.relay_certificate()

# Bounded examples so the whole suite stays within minutes on two cores.
settings.register_profile("ci", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    yield
    kill_started()


@pytest.fixture(autouse=True)
def default_stop_signals():
    """A command run in-process ends by ignoring SIGINT and SIGTERM (a late
    signal must not change its status): give them back their default actions,
    or every process a later test starts would inherit them ignored (a demo
    server that SIGTERM no longer stops, a ctidiff that Ctrl-C cannot end)."""
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# System tools some tests need (Debian's packages); .ci/run installs them. Without
# them those tests are skipped, and the run ends with one line saying how to get them.
SYSTEM_TOOLS = {"chromium": "chromium", "chromedriver": "chromium-driver",
                "tcpdump": "tcpdump", "tshark": "tshark", "dumpcap": "tshark"}


def pytest_terminal_summary(terminalreporter):
    missing = sorted({package for tool, package in SYSTEM_TOOLS.items()
                      if not shutil.which(tool)})
    if missing:
        terminalreporter.write_line(
            f"system tools missing, their tests skipped: apt-get install {' '.join(missing)}")

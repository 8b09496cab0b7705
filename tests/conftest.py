"""Suite-wide settings: hypothesis profiles, markers, per-test timeouts, external mode.

* ``IOCP_ECHO_SLOW=1``: the "slow" hypothesis profile (2000 examples) and tests marked
  ``slow`` (else skipped, unless selected with ``-m slow``).
* ``IOCP_ECHO_EXTERNAL=host:port`` (+ ``IOCP_ECHO_EXTERNAL_FRAMING``): conformance tests
  run against that server; every test not marked ``conformance`` is skipped.
* Every test gets a timeout (pytest-timeout, thread method: a hang inside a native call
  cannot be interrupted by a signal, so the run is dumped and ended) so it fails, not blocks.
* ``IOCP_ECHO_INSTALLED_UNDER=DIR``: the session stops at once unless ``iocp_echo`` and
  its extension are imported from under DIR (scripts/test-wheel: the installed wheel).
* SIGINT is a KeyboardInterrupt here even when the suite was started with it ignored
  (a background job of a non-interactive shell, as `nohup ... &`): tests stop server
  processes with SIGINT, and a child inherits an ignored SIGINT, but not a handler.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import iocp_echo
import iocp_echo._native as _native
import pytest
from helpers import EXTERNAL, EXTERNAL_SKIP, SLOW
from hypothesis import HealthCheck, settings

TEST_TIMEOUT = 120
"""Seconds any one test may take, unless it sets its own ``timeout`` mark."""

settings.register_profile("fast", max_examples=100, deadline=None)
settings.register_profile(
    "slow",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("slow" if SLOW else "fast")

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "conformance: needs only a native echo server of some framing; runs against "
        "IOCP_ECHO_EXTERNAL too (the Windows leg runs pytest -m conformance)",
    )
    config.addinivalue_line(
        "markers", "slow: long runs, excluded unless IOCP_ECHO_SLOW=1 or -m slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_selected = SLOW or "slow" in (config.getoption("markexpr", "") or "")
    skip_slow = pytest.mark.skip(reason="slow: set IOCP_ECHO_SLOW=1 or use -m slow")
    skip_external = pytest.mark.skip(reason=EXTERNAL_SKIP)
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT, method="thread"))
        if item.get_closest_marker("slow") is not None and not slow_selected:
            item.add_marker(skip_slow)
        if EXTERNAL is not None and item.get_closest_marker("conformance") is None:
            item.add_marker(skip_external)


# The installed-package run (scripts/test-wheel) names the site-packages the suite must
# import iocp_echo from, so it cannot pass on the source tree or an editable install.
INSTALLED_UNDER = os.environ.get("IOCP_ECHO_INSTALLED_UNDER")


def pytest_report_header(config: pytest.Config) -> str:
    return f"iocp_echo: {Path(iocp_echo.__file__ or '').parent} (extension {_native.__file__})"


def pytest_sessionstart(session: pytest.Session) -> None:
    if INSTALLED_UNDER is None:
        return
    site = Path(INSTALLED_UNDER).resolve()
    for module in (iocp_echo, _native):
        path = Path(module.__file__ or "").resolve()
        if site not in path.parents:
            raise pytest.UsageError(
                f"IOCP_ECHO_INSTALLED_UNDER={site}, but {module.__name__} comes from {path}"
            )

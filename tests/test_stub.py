"""The hand-written stub `_native.pyi` agrees with the compiled module (mypy.stubtest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_native_stub_matches_the_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "iocp_echo._native"],
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

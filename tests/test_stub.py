"""The hand-written stub `_native.pyi` agrees with the compiled module (mypy.stubtest)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import iocp_echo


def test_native_stub_matches_the_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "iocp_echo._native"],
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _new_keywords(source: Path, cls: str) -> set[str]:
    """The keyword-only parameters of every ``__new__`` written in class ``cls``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for inner in ast.walk(node):
                if isinstance(inner, ast.FunctionDef) and inner.name == "__new__":
                    names |= {a.arg for a in inner.args.kwonlyargs}
    return names


def test_every_option_is_typed_in_both_server_signatures() -> None:
    """`Server`'s typed signatures (the stub's, and the package's own with ``metrics``)
    list every option of ``OPTIONS``: a new option cannot be left out of either."""
    package = Path(iocp_echo.__file__).parent
    options = {option.name for option in iocp_echo.OPTIONS}
    stub = _new_keywords(package / "_native.pyi", "Server")
    typed = _new_keywords(package / "__init__.py", "Server")
    assert options <= stub, sorted(options - stub)
    assert options <= typed, sorted(options - typed)
    assert stub <= typed, sorted(stub - typed)

"""scripts/check-layers finds import circles in a crate's src/, and only circles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check-layers"


def check(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "src"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(src)], capture_output=True, text=True
    )


LAYERED = {
    "lib.rs": "pub mod contract;\npub mod port;\npub mod uring;\n",
    "contract.rs": "mod op;\npub use op::Op;\n",
    "contract/op.rs": "pub struct Op;\n#[cfg(test)]\nmod tests {\n    use super::Op;\n}\n",
    "uring.rs": "use crate::contract::Op;\n/// [`crate::port::Port`]: a link.\npub struct Ring;\n",
    "port.rs": "use crate::contract::Op;\npub enum Port { Uring(crate::uring::Ring) }\n",
}


def test_a_layered_crate_passes(tmp_path: Path) -> None:
    result = check(tmp_path, LAYERED)
    assert result.returncode == 0, result.stderr
    assert "no circle" in result.stdout


@pytest.mark.parametrize(
    ("name", "text", "circle"),
    [
        # The contract importing a backend: a circle between top-level modules.
        ("contract.rs", "mod op;\npub use op::Op;\nuse crate::uring::Ring;\n", "crate::contract"),
        # A child naming an item of its parent, which uses the child.
        (
            "contract/op.rs",
            "pub struct Op;\nfn f() { let _ = super::Op; }\n",
            "crate::contract::op",
        ),
        # An inline path in code, not a `use`.
        ("uring.rs", "pub struct Ring;\nfn f() -> crate::port::Port { todo!() }\n", "crate::uring"),
    ],
)
def test_each_kind_of_circle_is_found(tmp_path: Path, name: str, text: str, circle: str) -> None:
    result = check(tmp_path, {**LAYERED, name: text})
    assert result.returncode == 1, result.stdout
    assert "circle between" in result.stderr
    assert circle in result.stderr

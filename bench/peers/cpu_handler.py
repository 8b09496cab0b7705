"""A CPU-bound handler for bench/processes.py: each message hashed ROUNDS times with
SHA-256 (under 2 KiB hashlib keeps the GIL), then echoed as it came."""

from __future__ import annotations

import hashlib
import os

ROUNDS = int(os.environ.get("CPU_HANDLER_ROUNDS", "100"))


def work(message: bytes) -> bytes:
    """Hash the message ROUNDS times; reply with the message itself."""
    for _ in range(ROUNDS):
        hashlib.sha256(message).digest()
    return message

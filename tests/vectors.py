"""Access to the RFC 8448 vectors that ship beside the repository (../shared/vectors)."""

from __future__ import annotations

import json
import pathlib
from functools import cache
from typing import Any

_CANDIDATES = [
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "vectors" / "rfc8448.json",
    pathlib.Path(__file__).resolve().parent / "data" / "rfc8448.json",
]


@cache
def rfc8448() -> dict[str, Any]:
    for p in _CANDIDATES:
        if p.exists():
            return json.loads(p.read_text())  # type: ignore[no-any-return]
    raise FileNotFoundError("rfc8448.json not found beside the repository or in tests/data")


def section(name: str) -> dict[str, bytes]:
    """A section's hex values as bytes (non-hex fields are skipped)."""
    out: dict[str, bytes] = {}
    for k, v in rfc8448()[name].items():
        if isinstance(v, str):
            try:
                out[k] = bytes.fromhex(v)
            except ValueError:
                continue
    return out

"""The light part every harness shares: what counts as a finding, the op-stream format, fixed keys.

Kept free of the handshake machinery (fuzz/common.py) so the codec harnesses start fast.
"""

from __future__ import annotations

from collections.abc import Iterator

from tls_privsep.shared.errors import AlertDescription, LocalAlert

# The blob harness and the seed generator share the channel key, channel id and connection id.
BLOB_KEY = bytes(range(32))
BLOB_CHANNEL_ID = bytes(range(100, 116))
BLOB_CONN = 1


def key_material12(length: int, seed: int) -> bytes:
    """Fixed TLS 1.2 key material (write key and IV) of ``length`` bytes: the record harness reads under
    seed 1 (the client's) and writes under seed 2, and the seeds are sealed to match."""
    return bytes((seed + i) % 256 for i in range(length))


class Finding(AssertionError):
    """A harness-level check failed (not an exception the parser raised itself)."""


def check_local_alert(exc: LocalAlert) -> None:
    """internal_error is how the engine wraps an exception it did not expect: a parser let it through."""
    if exc.description == AlertDescription.internal_error:
        raise Finding(f"internal_error: {exc.reason}") from exc


def check_alert_queued(exc: LocalAlert, out: bytes) -> None:
    """A LocalAlert must be a parser's verdict (not a wrapped crash) and leave its alert record last in ``out``."""
    check_local_alert(exc)
    types = record_types(out)
    if not types or types[-1] not in (21, 23):
        raise Finding(f"{exc!r} raised without its alert queued") from exc


def record_types(out: bytes) -> list[int]:
    """Content types of whole records in ``out``; Finding if ``out`` is not whole records."""
    pos, types = 0, []
    while pos < len(out):
        if len(out) - pos < 5:
            raise Finding("output ends in a partial record header")
        types.append(out[pos])
        pos += 5 + int.from_bytes(out[pos + 3 : pos + 5], "big")
    if pos != len(out):
        raise Finding("output ends in a partial record")
    return types


# ---- a simple op stream: [op:1][len:2][payload] ... ----------------------------------------------


def ops(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split ``data`` into (op, payload); a short length field or payload takes what is left."""
    pos = 0
    while pos < len(data):
        op = data[pos]
        n = int.from_bytes(data[pos + 1 : pos + 3], "big")
        payload = data[pos + 3 : pos + 3 + n]
        pos += 3 + n
        yield op, payload


def op(code: int, payload: bytes = b"") -> bytes:
    return bytes([code]) + len(payload).to_bytes(2, "big") + payload

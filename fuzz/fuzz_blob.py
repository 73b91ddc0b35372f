"""Fuzz target `blob`: shared.blob's BlobOpener and the strict CBOR decoder in front of cbor2.

Input: ``[mode][bytes]``. The key and channel id are fixed (fuzz/common.py-style constants shared
with fuzz/seeds.py), and the connection id is 1.
- mode 0: ``bytes`` is a blob for a fresh ``BlobOpener.open``: only BlobError may escape.
- mode 1: ``bytes`` goes to the strict CBOR decoder (shared.cbor.decode): only CBORFault may escape,
  and what it accepts must be exactly what an independent RFC 8949 §4.2.1 encoder (below) gives
  for the value, and what cbor2 decodes the same bytes to.
- mode 2: ``bytes`` is the *inner* plaintext; the harness seals it correctly under the channel key,
  so the fuzzer reaches the inner CBOR and schema checks behind the AEAD. Only BlobError may
  escape; a state that opens must seal and open again to the same fields.

Run: ``python -m fuzz.fuzz_blob CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    import cbor2
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from fuzz.base import BLOB_CHANNEL_ID as CHANNEL_ID
    from fuzz.base import BLOB_CONN as CONN
    from fuzz.base import BLOB_KEY as KEY
    from fuzz.base import Finding
    from tls_privsep.shared import blob as B
    from tls_privsep.shared import cbor
    from tls_privsep.shared.errors import BlobError
    from tls_privsep.shared.state import TrafficState

FIELDS = ("suite", "read_secret", "write_secret", "read_seq", "write_seq", "records_protected", "alpn", "sni",
          "peer_certs", "psk_resumed", "created", "version")


def _head(major: int, arg: int) -> bytes:
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 24:
            return bytes([major << 5 | arg])
        if arg < 1 << (8 * width):
            return bytes([major << 5 | ai]) + arg.to_bytes(width, "big")
    raise Finding(f"argument {arg} does not fit 64 bits")


def reference_encode(value: object) -> bytes:
    """Core deterministic encoding: shortest heads, map keys in bytewise order of their encodings."""
    if value is False or value is True or value is None:
        return {False: b"\xf4", True: b"\xf5", None: b"\xf6"}[value]
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, (bytes, bytearray)):
        return _head(2, len(value)) + bytes(value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(reference_encode(v) for v in value)
    if isinstance(value, dict):
        pairs = sorted((reference_encode(k), reference_encode(v)) for k, v in value.items())
        return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    raise Finding(f"decoder produced a {type(value).__name__}")


def seal_inner(plain: bytes, n: int = 1) -> bytes:
    """An outer blob around arbitrary inner plaintext, correctly sealed for CONN."""
    ct = AESGCM(KEY).encrypt(B.blob_nonce(n), plain, B.blob_aad(CHANNEL_ID, n, CONN))
    return B.cbor_encode({"v": B.BLOB_VERSION, "ch": CHANNEL_ID, "n": n, "ct": ct})


def check_round_trip(state: TrafficState) -> None:
    again = B.BlobOpener(KEY, CHANNEL_ID).open(B.BlobSealer(KEY, CHANNEL_ID).seal(state, CONN), CONN)
    for name in FIELDS:
        if getattr(again, name) != getattr(state, name):
            raise Finding(f"{name} changed across seal and open")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 1:
        try:
            value = cbor.decode(rest, B.MAX_BLOB)
        except cbor.CBORFault:
            return
        if reference_encode(value) != rest:
            raise Finding("accepted CBOR is not the deterministic encoding of its value")
        if cbor2.loads(rest) != value:
            raise Finding("cbor2 reads accepted CBOR as another value")
        return
    blob = rest if mode == 0 else seal_inner(rest)
    try:
        state = B.BlobOpener(KEY, CHANNEL_ID).open(blob, CONN)
    except BlobError:
        return
    check_round_trip(state)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

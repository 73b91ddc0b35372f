"""Fuzz target `client_hello`: secured.messages.parse_client_hello, the one parser every client reaches.

Input: ``[mode][bytes]``. Even mode: ``bytes`` is a ClientHello body, wrapped in a correct 4-byte
handshake header. Odd mode: ``bytes`` is the whole message, header included (the parser trusts the
record layer for the header; it must still never crash on a wrong one).

Only decode_error / illegal_parameter style alerts may escape, never internal_error. A hello that
parses must re-encode to the bytes it came from (nothing ignored, nothing invented), and its PSK
binder split must fall inside the message.

Run: ``python -m fuzz.fuzz_client_hello CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.base import Finding, check_local_alert
    from tls_privsep.secured import messages as m
    from tls_privsep.shared.errors import LocalAlert
    from tls_privsep.shared.wire import u16, vector


def reencode(ch: m.ClientHello) -> bytes:
    body = u16(ch.legacy_version) + ch.random + vector(1, ch.session_id)
    body += vector(2, b"".join(u16(s) for s in ch.cipher_suites)) + vector(1, ch.compression_methods)
    if ch.has_extensions_block:
        body += vector(2, b"".join(m.extension(t, d) for t, d in ch.extensions.items()))
    return body


def test_one_input(data: bytes) -> None:
    if not data:
        return
    raw = m.handshake(1, data[1:]) if data[0] % 2 == 0 else data[1:]
    try:
        ch = m.parse_client_hello(raw)
    except LocalAlert as exc:
        check_local_alert(exc)
        return
    if reencode(ch) != raw[4:]:
        raise Finding("a parsed ClientHello does not re-encode to its bytes")
    if ch.pre_shared_key is not None:
        cut = ch.truncated_for_binders()
        if not 4 < len(cut) < len(raw) or not raw.startswith(cut):
            raise Finding("PSK binders split outside the message")
        if len(ch.pre_shared_key.binders) != len(ch.pre_shared_key.identities):
            raise Finding("identities and binders differ in number")
    if ch.server_name is not None and (not ch.server_name or not ch.server_name.isascii()):
        raise Finding("server_name accepted empty or non-ASCII")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

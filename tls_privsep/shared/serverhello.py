"""What appd learns from the ServerHello it relays: the key-exchange group, for its summary line.

appd holds no handshake key, and neither the channel nor the blob tells it how the handshake was
negotiated (the blob carries only what the record layer needs, docs/blob.md). The ServerHello is the one
message of our TLS 1.3 flight that travels in the clear (RFC 8446 §4.1.3; in TLS 1.2 the whole first flight
does, and its ServerKeyExchange names the group), and appd writes it to the client
itself: the group read here is exactly the one the client was told, from bytes secured produced.

Never raises: a flight that names no group gives None (a HelloRetryRequest, a psk_ke resumption with
no key exchange, a TLS 1.2 resumption, an alert, the encrypted records).
"""

from __future__ import annotations

import hashlib

from tls_privsep.shared.errors import LocalAlert
from tls_privsep.shared.wire import Reader

_HANDSHAKE = 22
_SERVER_HELLO = 2
_SERVER_KEY_EXCHANGE = 12  # TLS 1.2
_NAMED_CURVE = 3  # ECCurveType.named_curve (RFC 8422 §5.4)
_KEY_SHARE = 51
# §4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest") is a HelloRetryRequest.
_HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def negotiated_group(data: bytes) -> int | None:
    """The key-exchange group of our first flight among ``data``'s leading plaintext handshake records, or None.

    TLS 1.3 names it in the ServerHello's key_share (not a HelloRetryRequest's); TLS 1.2 in the
    ServerKeyExchange that follows in the clear (RFC 8422 §5.4), for a full handshake only.
    """
    messages = bytearray()
    pos = 0
    while len(data) - pos >= 5 and data[pos] == _HANDSHAKE:
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        messages += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    try:
        return _group(Reader(bytes(messages), "our first flight"))
    except LocalAlert:
        return None


def _group(r: Reader) -> int | None:
    while r.remaining >= 4:
        msg_type = r.u8()
        body = r.block(3, "handshake message")
        if msg_type == _SERVER_HELLO:
            found = _server_hello_group(body)
            if found is not None:
                return found
        elif msg_type == _SERVER_KEY_EXCHANGE and body.u8() == _NAMED_CURVE:
            return body.u16()
    return None


def _server_hello_group(body: Reader) -> int | None:
    """The key_share group of a ServerHello (§4.1.3, §4.2.8); None for a HelloRetryRequest or without one."""
    body.u16()  # legacy_version
    if body.raw(32) == _HRR_RANDOM:
        return None
    body.vector(1)  # legacy_session_id_echo
    body.u16()  # cipher_suite
    body.u8()  # legacy_compression_method
    if body.at_end():
        return None
    extensions = body.block(2, "ServerHello extensions")
    for ext_type, ext_data in extensions.typed_vectors():
        if ext_type == _KEY_SHARE and len(ext_data) >= 2:
            return int.from_bytes(ext_data[:2], "big")
    return None

"""What appd learns from the ServerHello it relays: the key-exchange group, for its summary line.

appd holds no handshake key, and neither the channel nor the blob tells it how the handshake was
negotiated (the blob carries only what the record layer needs, docs/blob.md). The ServerHello is the one
message of our flight that travels in the clear (RFC 8446 §4.1.3), and appd writes it to the client
itself: the group read here is exactly the one the client was told, from bytes secured produced.

Never raises: anything that is not a plaintext ServerHello with a key_share gives None (a
HelloRetryRequest, a psk_ke resumption with no key exchange, an alert, the encrypted records).
"""

from __future__ import annotations

import hashlib

from tls_privsep.shared.errors import LocalAlert
from tls_privsep.shared.wire import Reader

_HANDSHAKE = 22
_SERVER_HELLO = 2
_KEY_SHARE = 51
# §4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest") is a HelloRetryRequest.
_HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def negotiated_group(data: bytes) -> int | None:
    """The group of the first ServerHello (not a HelloRetryRequest) among ``data``'s leading plaintext
    handshake records, or None."""
    pos = 0
    while len(data) - pos >= 5 and data[pos] == _HANDSHAKE:
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        payload = data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        try:
            group = _server_hello_group(payload)
        except LocalAlert:
            return None
        if group is not None:
            return group
    return None


def _server_hello_group(payload: bytes) -> int | None:
    """The key_share group of a record that starts with a ServerHello (§4.1.3, §4.2.8); None otherwise."""
    r = Reader(payload, "ServerHello record")
    if r.u8() != _SERVER_HELLO:
        return None
    body = r.block(3, "ServerHello")
    body.u16()  # legacy_version
    if body.raw(32) == _HRR_RANDOM:
        return None
    body.vector(1)  # legacy_session_id_echo
    body.u16()  # cipher_suite
    body.u8()  # legacy_compression_method
    extensions = body.block(2, "ServerHello extensions")
    for ext_type, ext_data in extensions.typed_vectors():
        if ext_type == _KEY_SHARE and len(ext_data) >= 2:
            return int.from_bytes(ext_data[:2], "big")
    return None

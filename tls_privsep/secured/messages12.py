"""TLS 1.2 handshake message codecs (RFC 5246 §7.4, RFC 8422 §5, RFC 5077 §3.3, RFC 5746, RFC 7627).

What differs from TLS 1.3's (messages.py, which also parses the ClientHello both versions share): the
ServerHello carries the version and its extensions directly, the Certificate has no request context
and no per-entry extensions, the key exchange is a pair of messages (ServerKeyExchange signed over
both randoms, ClientKeyExchange), and a ServerHelloDone ends our first flight.

Parsing is as strict as for TLS 1.3: every block read to its end, ``decode_error`` otherwise.
"""

from __future__ import annotations

import enum

from tls_privsep.secured.messages import ExtensionType, extension, handshake
from tls_privsep.shared.tls12 import TLS12
from tls_privsep.shared.wire import Reader, u8, u16, u32, vector


class HandshakeType12(enum.IntEnum):
    """The TLS 1.2 message types that TLS 1.3 dropped or does not send from a server."""

    server_key_exchange = 12
    server_hello_done = 14
    client_key_exchange = 16


class ClientCertificateType(enum.IntEnum):
    rsa_sign = 1  # RFC 5246 §7.4.4
    ecdsa_sign = 64  # RFC 8422 §5.5 (covers Ed25519 too)


NAMED_CURVE = 3  # ECCurveType.named_curve (RFC 8422 §5.4); the only type we send
UNCOMPRESSED = 0  # ECPointFormat.uncompressed (RFC 8422 §5.1.2)
# TLS 1.3's downgrade sentinel in a TLS 1.2 ServerHello.random (RFC 8446 §4.1.3).
DOWNGRADE_TLS12 = bytes.fromhex("444f574e47524401")


def server_hello(random: bytes, session_id: bytes, suite: int, extensions: bytes) -> bytes:
    body = u16(TLS12) + random + vector(1, session_id) + u16(suite) + b"\x00"
    if extensions:
        body += vector(2, extensions)
    return handshake(2, body)


def renegotiation_info_ext() -> bytes:
    """RFC 5746 §3.6: on a first handshake, an empty renegotiated_connection."""
    return extension(ExtensionType.renegotiation_info, vector(1, b""))


def ec_point_formats_ext() -> bytes:
    return extension(ExtensionType.ec_point_formats, vector(1, u8(UNCOMPRESSED)))


def certificate(chain: list[bytes]) -> bytes:
    return handshake(11, vector(3, b"".join(vector(3, der) for der in chain)))


def ecdh_params(group: int, public: bytes) -> bytes:
    """ServerECDHParams (RFC 8422 §5.4): named_curve, the group, our public point."""
    return u8(NAMED_CURVE) + u16(group) + vector(1, public)


def server_key_exchange(params: bytes, scheme: int, signature: bytes) -> bytes:
    return handshake(HandshakeType12.server_key_exchange, params + u16(scheme) + vector(2, signature))


def certificate_request(schemes: list[int]) -> bytes:
    """RFC 5246 §7.4.4: the certificate types and schemes we take; no CA names (any of ours will do)."""
    types = bytes((ClientCertificateType.ecdsa_sign, ClientCertificateType.rsa_sign))
    return handshake(13, vector(1, types) + vector(2, b"".join(u16(s) for s in schemes)) + vector(2, b""))


def server_hello_done() -> bytes:
    return handshake(HandshakeType12.server_hello_done, b"")


def new_session_ticket(lifetime_hint: int, ticket: bytes) -> bytes:
    """RFC 5077 §3.3."""
    return handshake(4, u32(lifetime_hint) + vector(2, ticket))


def parse_certificate(body: bytes) -> list[bytes]:
    """A client Certificate body (§7.4.6) -> its DER chain (empty: the client has none)."""
    r = Reader(body, "Certificate")
    entries = r.block(3, "certificate_list")
    r.expect_end()
    chain = []
    while not entries.at_end():
        chain.append(entries.vector(3, min_len=1))
    return chain


def parse_client_key_exchange(body: bytes) -> bytes:
    """ClientECDiffieHellmanPublic (RFC 8422 §5.7): the client's point; an empty one is decode_error
    (the implicit form is for fixed-key certificates, which we never request)."""
    r = Reader(body, "ClientKeyExchange")
    public = r.vector(1, min_len=1)
    r.expect_end()
    return public

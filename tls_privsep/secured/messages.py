"""Handshake message codecs (RFC 8446 §4): parse what a client sends, build what a server sends.

Parsing is strict: every block is read to its end (``decode_error`` otherwise), duplicate
extensions and a ``pre_shared_key`` that is not last are ``illegal_parameter`` (§4.2). Semantic
checks that need configuration (which suites, groups, schemes we take) live in the state machine.
Where RFC 8446 names no alert, docs/alerts.md says which we send and why.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from tls_privsep.shared.errors import DecodeError, IllegalParameter, UnrecognizedName
from tls_privsep.shared.wire import Reader, u8, u16, u24, u32, vector


class ExtensionType(enum.IntEnum):
    server_name = 0
    max_fragment_length = 1
    status_request = 5
    supported_groups = 10
    ec_point_formats = 11  # TLS 1.2 (RFC 8422 §5.1.2)
    signature_algorithms = 13
    use_srtp = 14
    heartbeat = 15
    application_layer_protocol_negotiation = 16
    signed_certificate_timestamp = 18
    client_certificate_type = 19
    server_certificate_type = 20
    padding = 21
    extended_master_secret = 23  # TLS 1.2 (RFC 7627)
    record_size_limit = 28
    session_ticket = 35  # TLS 1.2 (RFC 5077)
    pre_shared_key = 41
    early_data = 42
    supported_versions = 43
    cookie = 44
    psk_key_exchange_modes = 45
    certificate_authorities = 47
    oid_filters = 48
    post_handshake_auth = 49
    signature_algorithms_cert = 50
    key_share = 51
    renegotiation_info = 0xFF01  # TLS 1.2 (RFC 5746)


class NamedGroup(enum.IntEnum):
    secp256r1 = 0x0017
    secp384r1 = 0x0018
    secp521r1 = 0x0019
    x25519 = 0x001D
    x448 = 0x001E
    # The hybrids of draft-ietf-tls-ecdhe-mlkem (§5, IANA): ECDHE and ML-KEM together, TLS 1.3 only.
    secp256r1mlkem768 = 0x11EB
    x25519mlkem768 = 0x11EC


class PskMode(enum.IntEnum):
    psk_ke = 0
    psk_dhe_ke = 1


_PRE_SHARED_KEY = int(ExtensionType.pre_shared_key)

TLS13 = 0x0304
TLS12 = 0x0303
# SHA-256("HelloRetryRequest"): the ServerHello.random that marks a HelloRetryRequest (§4.1.3).
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def handshake(msg_type: int, body: bytes) -> bytes:
    """Wrap a body in the 4-byte handshake header."""
    return u8(msg_type) + u24(len(body)) + body


def extension(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vector(2, data)


@dataclass
class PreSharedKeyOffer:
    identities: list[tuple[bytes, int]]  # (identity, obfuscated_ticket_age)
    binders: list[bytes]
    binders_len: int  # bytes of the binders vector incl. its 2-byte length: what the binder does not cover


@dataclass
class ClientHello:
    raw: bytes  # the whole message with its header (for the transcript and the PSK binder)
    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: list[int]
    compression_methods: bytes
    extensions: dict[int, bytes] = field(default_factory=dict)  # insertion order = wire order
    has_extensions_block: bool = True
    supported_versions: list[int] | None = None
    supported_groups: list[int] | None = None
    key_shares: list[tuple[int, bytes]] | None = None
    signature_algorithms: list[int] | None = None
    signature_algorithms_cert: list[int] | None = None
    server_name: str | None = None
    alpn: list[bytes] | None = None
    psk_modes: list[int] | None = None
    pre_shared_key: PreSharedKeyOffer | None = None
    early_data: bool = False
    cookie: bytes | None = None
    # TLS 1.2 only (a TLS 1.3 server ignores them, §4.1.2):
    extended_master_secret: bool = False  # RFC 7627
    renegotiation_info: bytes | None = None  # RFC 5746: renegotiated_connection (empty on a first handshake)
    ec_point_formats: bytes | None = None  # RFC 8422 §5.1.2
    session_ticket: bytes | None = None  # RFC 5077: b"" asks for a ticket, anything else offers one

    def truncated_for_binders(self) -> bytes:
        """The ClientHello up to (not including) the binders list (§4.2.11.2)."""
        assert self.pre_shared_key is not None
        return self.raw[: len(self.raw) - self.pre_shared_key.binders_len]


def _parse_server_name(r: Reader) -> str | None:
    names = r.block(2, "server_name list", min_len=1)
    host: str | None = None
    seen: set[int] = set()
    while not names.at_end():
        name_type = names.u8()
        value = names.vector(2, min_len=1)
        if name_type in seen:
            raise IllegalParameter("repeated server_name type")
        seen.add(name_type)
        if name_type != 0:  # only host_name is defined; others are ignored (RFC 6066 §3)
            continue
        # A name no server can have (RFC 6066 §3: ASCII, no trailing dot) is unrecognized_name, the
        # alert OpenSSL and BoringSSL send for a NUL in it (docs/alerts.md).
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise UnrecognizedName("server_name is not ASCII") from None
        if "\x00" in text or text.endswith(".") or not text.isprintable():
            raise UnrecognizedName("malformed server_name")
        host = text.lower()
    r.expect_end()
    return host


def _parse_key_shares(r: Reader) -> list[tuple[int, bytes]]:
    block = r.block(2, "key_share")
    shares: list[tuple[int, bytes]] = []
    while not block.at_end():
        group = block.u16()
        key = block.vector(2, min_len=1)
        if any(g == group for g, _ in shares):
            raise IllegalParameter("two key shares for one group")
        shares.append((group, key))
    r.expect_end()
    return shares


def _parse_alpn(r: Reader) -> list[bytes]:
    block = r.block(2, "ALPN list", min_len=2)
    protocols = []
    while not block.at_end():
        protocols.append(block.vector(1, min_len=1))
    r.expect_end()
    return protocols


def _parse_psk(r: Reader) -> PreSharedKeyOffer:
    ids_block = r.block(2, "PSK identities", min_len=7)
    identities = []
    while not ids_block.at_end():
        identity = ids_block.vector(2, min_len=1)
        identities.append((identity, ids_block.u32()))
    binders_len = r.remaining
    b_block = r.block(2, "PSK binders", min_len=33)
    binders = []
    while not b_block.at_end():
        binders.append(b_block.vector(1, min_len=32, max_len=255))
    r.expect_end()
    if len(binders) != len(identities):
        raise IllegalParameter("PSK identities and binders differ in number")
    return PreSharedKeyOffer(identities, binders, binders_len)


def _u16_list_ext(attr: str, length_bytes: int) -> Callable[[ClientHello, Reader], None]:
    """A parser for an extension that is one list of uint16 (versions, groups, signature schemes)."""

    def parse(ch: ClientHello, r: Reader) -> None:
        setattr(ch, attr, r.u16_list(length_bytes, attr))
        r.expect_end()

    return parse


_ext_supported_versions = _u16_list_ext("supported_versions", 1)
_ext_supported_groups = _u16_list_ext("supported_groups", 2)
_ext_signature_algorithms = _u16_list_ext("signature_algorithms", 2)
_ext_signature_algorithms_cert = _u16_list_ext("signature_algorithms_cert", 2)


def _ext_psk_key_exchange_modes(ch: ClientHello, r: Reader) -> None:
    modes = r.vector(1, min_len=1)
    r.expect_end()
    ch.psk_modes = list(modes)


def _ext_early_data(ch: ClientHello, r: Reader) -> None:
    r.expect_end()
    ch.early_data = True


def _ext_cookie(ch: ClientHello, r: Reader) -> None:
    ch.cookie = r.vector(2, min_len=1)
    r.expect_end()


def _ext_key_share(ch: ClientHello, r: Reader) -> None:
    ch.key_shares = _parse_key_shares(r)


def _ext_server_name(ch: ClientHello, r: Reader) -> None:
    ch.server_name = _parse_server_name(r)


def _ext_alpn(ch: ClientHello, r: Reader) -> None:
    ch.alpn = _parse_alpn(r)


def _ext_pre_shared_key(ch: ClientHello, r: Reader) -> None:
    ch.pre_shared_key = _parse_psk(r)


def _ext_extended_master_secret(ch: ClientHello, r: Reader) -> None:
    r.expect_end()  # RFC 7627 §5.1: "extension_data" is empty
    ch.extended_master_secret = True


def _ext_renegotiation_info(ch: ClientHello, r: Reader) -> None:
    ch.renegotiation_info = r.vector(1)
    r.expect_end()


def _ext_ec_point_formats(ch: ClientHello, r: Reader) -> None:
    ch.ec_point_formats = r.vector(1, min_len=1)
    r.expect_end()


def _ext_session_ticket(ch: ClientHello, r: Reader) -> None:
    ch.session_ticket = r.raw(r.remaining)  # RFC 5077 §3.2: the ticket is the whole extension_data


# The extensions we read; every other one is ignored (§4.1.2: unknown extensions MUST be ignored).
# A table rather than an if-chain: each comparison with an enum member costs a class attribute lookup.
_EXTENSION_PARSERS: dict[int, Callable[[ClientHello, Reader], None]] = {
    ExtensionType.supported_versions: _ext_supported_versions,
    ExtensionType.supported_groups: _ext_supported_groups,
    ExtensionType.key_share: _ext_key_share,
    ExtensionType.signature_algorithms: _ext_signature_algorithms,
    ExtensionType.signature_algorithms_cert: _ext_signature_algorithms_cert,
    ExtensionType.server_name: _ext_server_name,
    ExtensionType.application_layer_protocol_negotiation: _ext_alpn,
    ExtensionType.psk_key_exchange_modes: _ext_psk_key_exchange_modes,
    ExtensionType.pre_shared_key: _ext_pre_shared_key,
    ExtensionType.early_data: _ext_early_data,
    ExtensionType.cookie: _ext_cookie,
    ExtensionType.extended_master_secret: _ext_extended_master_secret,
    ExtensionType.renegotiation_info: _ext_renegotiation_info,
    ExtensionType.ec_point_formats: _ext_ec_point_formats,
    ExtensionType.session_ticket: _ext_session_ticket,
}


def _parse_extension(ch: ClientHello, ext_type: int, data: bytes) -> None:
    parse = _EXTENSION_PARSERS.get(ext_type)
    if parse is not None:
        parse(ch, Reader(data, f"extension {ext_type}"))


def parse_client_hello(raw: bytes) -> ClientHello:
    """Parse a whole ClientHello message (with its 4-byte header)."""
    r = Reader(raw, "ClientHello", start=4)
    legacy_version = r.u16()
    random = r.raw(32)
    session_id = r.vector(1, max_len=32)
    suites_block = r.block(2, "cipher_suites", min_len=2)
    if suites_block.remaining % 2:
        raise DecodeError("odd cipher_suites length")
    suites = []
    while not suites_block.at_end():
        suites.append(suites_block.u16())
    compression = r.vector(1, min_len=1)
    ch = ClientHello(raw, legacy_version, random, session_id, suites, compression)
    if r.at_end():
        ch.has_extensions_block = False  # a pre-TLS-1.3 hello; the state machine answers protocol_version
        return ch
    exts = r.block(2, "extensions")
    r.expect_end()
    extensions = ch.extensions
    for ext_type, data in exts.typed_vectors():
        if ext_type in extensions:
            raise IllegalParameter(f"duplicate extension {ext_type}")
        if _PRE_SHARED_KEY in extensions:
            raise IllegalParameter("pre_shared_key is not the last extension")
        extensions[ext_type] = data
    for ext_type, data in ch.extensions.items():
        _parse_extension(ch, ext_type, data)
    return ch


# ---- what the server sends -------------------------------------------------------------------


def server_hello(
    random: bytes,
    session_id: bytes,
    suite: int,
    *,
    key_share: tuple[int, bytes] | None = None,
    selected_psk: int | None = None,
) -> bytes:
    """ServerHello; extension order: pre_shared_key, key_share, supported_versions."""
    exts = b""
    if selected_psk is not None:
        exts += extension(ExtensionType.pre_shared_key, u16(selected_psk))
    if key_share is not None:
        group, public = key_share
        exts += extension(ExtensionType.key_share, u16(group) + vector(2, public))
    exts += extension(ExtensionType.supported_versions, u16(TLS13))
    body = u16(TLS12) + random + vector(1, session_id) + u16(suite) + b"\x00" + vector(2, exts)
    return handshake(2, body)


def hello_retry_request(session_id: bytes, suite: int, group: int, cookie: bytes | None) -> bytes:
    """A HelloRetryRequest: a ServerHello with the special random (§4.1.4)."""
    exts = extension(ExtensionType.key_share, u16(group))
    if cookie is not None:
        exts += extension(ExtensionType.cookie, vector(2, cookie))
    exts += extension(ExtensionType.supported_versions, u16(TLS13))
    body = u16(TLS12) + HRR_RANDOM + vector(1, session_id) + u16(suite) + b"\x00" + vector(2, exts)
    return handshake(2, body)


def message_hash(ch1_digest: bytes) -> bytes:
    """The synthetic message that replaces ClientHello1 in the transcript after an HRR (§4.4.1)."""
    return handshake(254, ch1_digest)


def encrypted_extensions(extensions: bytes) -> bytes:
    return handshake(8, vector(2, extensions))


def certificate_request(context: bytes, extensions: bytes) -> bytes:
    return handshake(13, vector(1, context) + vector(2, extensions))


def certificate(chain: list[bytes], context: bytes = b"") -> bytes:
    entries = b"".join(vector(3, der) + u16(0) for der in chain)
    return handshake(11, vector(1, context) + vector(3, entries))


def certificate_verify(scheme: int, signature: bytes) -> bytes:
    return handshake(15, u16(scheme) + vector(2, signature))


def finished(verify_data: bytes) -> bytes:
    return handshake(20, verify_data)


def new_session_ticket(lifetime: int, age_add: int, nonce: bytes, ticket: bytes, extensions: bytes) -> bytes:
    body = u32(lifetime) + u32(age_add) + vector(1, nonce) + vector(2, ticket) + vector(2, extensions)
    return handshake(4, body)


def alpn_ext(protocol: str | None) -> bytes:
    """The server's ALPN answer (RFC 7301 §3.1): the one protocol chosen; nothing when none was."""
    if protocol is None:
        return b""
    return extension(ExtensionType.application_layer_protocol_negotiation, vector(2, vector(1, protocol.encode())))


def signature_algorithms_ext(schemes: list[int]) -> bytes:
    return extension(ExtensionType.signature_algorithms, vector(2, b"".join(u16(s) for s in schemes)))


# ---- what the client sends after the ServerHello ---------------------------------------------


def parse_certificate(body: bytes) -> tuple[bytes, list[bytes]]:
    """A client Certificate body -> (request context, DER chain); per-entry extensions are ignored."""
    r = Reader(body, "Certificate")
    context = r.vector(1)
    entries = r.block(3, "certificate_list")
    r.expect_end()
    chain = []
    while not entries.at_end():
        chain.append(entries.vector(3, min_len=1))
        entries.vector(2)  # per-entry extensions: read whole, none acted upon (we request none)
    return context, chain


def parse_certificate_verify(body: bytes) -> tuple[int, bytes]:
    r = Reader(body, "CertificateVerify")
    scheme = r.u16()
    signature = r.vector(2, min_len=1)
    r.expect_end()
    return scheme, signature


def certificate_verify_content(transcript_digest: bytes, *, server: bool) -> bytes:
    """What a CertificateVerify signs (§4.4.3)."""
    label = b"TLS 1.3, server CertificateVerify" if server else b"TLS 1.3, client CertificateVerify"
    return b"\x20" * 64 + label + b"\x00" + transcript_digest

"""The handshake engine's shortcuts give the same bytes and the same refusals as the long way round."""

from __future__ import annotations

import pytest

from tests.inmemory import server_config
from tests.tlsclient import Client, Hello
from tls_privsep.secured import messages as m
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared import keyschedule as ks
from tls_privsep.shared.errors import AlertDescription, DecodeError, LocalAlert
from tls_privsep.shared.wire import u16, vector


@pytest.mark.parametrize("hash_name", ["sha256", "sha384"])
def test_no_psk_constants_equal_an_all_zero_psk(hash_name: str) -> None:
    """Without a PSK the early secrets come from a cache; an explicit all-zero PSK takes the long way."""
    zero_psk = bytes(ks.hash_len(hash_name))
    cached, computed = ks.KeySchedule(hash_name), ks.KeySchedule(hash_name, psk=zero_psk)
    assert cached.early_secret == computed.early_secret
    ecdhe = bytes(range(32))
    cached.derive_handshake(ecdhe)
    computed.derive_handshake(ecdhe)
    assert cached.handshake_secret == computed.handshake_secret


def test_hkdf_expand_over_one_block_is_rfc5869() -> None:
    """RFC 5869 A.1: 42 bytes of output take two HMAC blocks (TLS 1.3 itself never needs more than one)."""
    prk = ks.hkdf_extract("sha256", bytes(range(13)), b"\x0b" * 22)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = ks.hkdf_expand("sha256", prk, bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_finished_must_end_its_record() -> None:
    hs = ServerHandshake(server_config(("ecdsa",), ticket_keys=None, tickets=0))
    c = Client()
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(c.protect(c.finished_message() + m.handshake(24, b"\x00")))
    assert exc.value.description == AlertDescription.unexpected_message
    assert exc.value.reason == "handshake data spans a key change"


def _hello_with(ext_type: int, data: bytes) -> bytes:
    hello = Client().hello
    hello.set(ext_type, data)
    return hello.encode()


def _hello_with_extensions_block(block: bytes) -> bytes:
    return m.handshake(1, Hello(omit_extensions_block=True).encode()[4:] + vector(2, block))


REFUSALS = [
    ("extension header cut short", _hello_with_extensions_block(u16(43) + b"\x00"), "truncated extensions"),
    ("extension longer than its block", _hello_with_extensions_block(u16(43) + u16(3) + b"\x02\x03"), "truncated extensions"),
    ("cut in the random", Hello().encode()[:20], "truncated ClientHello"),
    ("odd supported_groups", _hello_with(10, u16(3) + b"\x00\x1d\x00"), "bad length of supported_groups"),
    ("supported_groups past its end", _hello_with(10, u16(4) + b"\x00\x1d"), "truncated extension 10"),
    ("empty supported_versions", _hello_with(43, vector(1, b"")), "bad length of supported_versions"),
    ("signature_algorithms trailer", _hello_with(13, vector(2, u16(0x0403)) + b"\x00"), "1 trailing bytes in extension 13"),
    ("empty ALPN name", _hello_with(16, vector(2, vector(1, b"") + vector(1, b"h2"))), "vector length 0 out of range in ALPN list"),
]


@pytest.mark.parametrize("raw,reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_reader_refusals_keep_their_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as exc:
        m.parse_client_hello(raw)
    assert exc.value.reason == reason

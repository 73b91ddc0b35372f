"""Reading the client's handshake messages: a malformed ClientHello is refused with a reason naming what is
wrong, and the client Finished must end its record (handshake data may not span the key change)."""

from __future__ import annotations

import pytest

from tests.inmemory import server_config
from tests.tlsclient import Client, Hello
from tls_privsep.secured import messages as m
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import AlertDescription, DecodeError, LocalAlert
from tls_privsep.shared.wire import u16, vector


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

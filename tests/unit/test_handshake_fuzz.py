"""Hypothesis against the handshake engine: hostile bytes only ever produce a precise alert.

``internal_error`` counts as a failure here: the engine turns unexpected exceptions into it, so
seeing it means a parser let something through that it should have named.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.inmemory import server_config
from tests.tlsclient import Client, Hello, record
from tls_privsep.secured import messages as m
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.secured.tickets import TicketKeys
from tls_privsep.shared.errors import Alert, AlertDescription, LocalAlert
from tls_privsep.shared.wire import u16, vector

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CONFIG = None


def _server() -> ServerHandshake:
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = server_config(("ecdsa",), ticket_keys=TicketKeys(), alpn=("h2",))
    return ServerHandshake(_CONFIG)


def _last_record_type(out: bytes) -> int:
    pos, last = 0, -1
    while pos < len(out):
        last = out[pos]
        pos += 5 + int.from_bytes(out[pos + 3 : pos + 5], "big")
    assert pos == len(out), "output is not whole records"
    return last


def _feed(hs: ServerHandshake, chunks: list[bytes]) -> None:
    try:
        for chunk in chunks:
            hs.receive_data(chunk)
    except LocalAlert as exc:
        assert exc.description != AlertDescription.internal_error, exc.reason
        assert _last_record_type(hs.data_to_send()) in (21, 23)  # the alert, plain or protected
    except Alert:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_random_bytes(chunks: list[bytes]) -> None:
    _feed(_server(), chunks)


@FUZZ
@given(st.binary(max_size=200))
def test_random_handshake_record(body: bytes) -> None:
    _feed(_server(), [record(22, body)])


def _mutate(data: st.DataObject, original: bytes) -> bytes:
    """``original`` with one to four bytes flipped, runs inserted or deleted, or its tail cut."""
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(raw) > 1:
            del raw[pos]
        if not raw:
            break
    return bytes(raw)


@FUZZ
@given(st.data())
def test_mutated_client_hello(data: st.DataObject) -> None:
    _feed(_server(), [_mutate(data, Client().client_hello_record())])


@FUZZ
@given(st.data())
def test_mutated_client_flight(data: st.DataObject) -> None:
    hs = _server()
    c = Client()
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())
    body = bytearray(c.finished_message())
    pos = data.draw(st.integers(0, len(body) - 1))
    body[pos] ^= data.draw(st.integers(1, 255))
    extra = data.draw(st.binary(max_size=40))
    ctype = data.draw(st.sampled_from([20, 21, 22, 23, 0, 99]))
    _feed(hs, [c.protect(bytes(body) + extra, content_type=ctype)])


def _names(min_size: int = 1) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=20).filter(lambda b: len(b) >= min_size)


@settings(max_examples=200, deadline=None)
@given(
    suites=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20),
    groups=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=10, unique=True),
    schemes=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20),
    alpn=st.lists(_names(), min_size=1, max_size=4),
    sni=st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
    session_id=st.binary(max_size=32),
    unknown=st.dictionaries(st.integers(0x1000, 0xFEFF), st.binary(max_size=30), max_size=4),
)
def test_client_hello_round_trip(suites: list[int], groups: list[int], schemes: list[int], alpn: list[bytes],
                                 sni: str, session_id: bytes, unknown: dict[int, bytes]) -> None:
    exts = [
        (0, vector(2, b"\x00" + vector(2, sni.encode()))),
        (10, vector(2, b"".join(u16(g) for g in groups))),
        (13, vector(2, b"".join(u16(s) for s in schemes))),
        (16, vector(2, b"".join(vector(1, p) for p in alpn))),
        (43, vector(1, u16(0x0304))),
        (51, vector(2, b"".join(u16(g) + vector(2, bytes([g & 0xFF]) * 3) for g in groups))),
        *unknown.items(),
    ]
    hello = Hello(session_id=session_id, cipher_suites=suites, extensions=exts)
    ch = m.parse_client_hello(hello.encode())
    assert ch.cipher_suites == suites and ch.session_id == session_id
    assert ch.supported_groups == groups and ch.signature_algorithms == schemes
    assert ch.alpn == alpn and ch.server_name == sni
    assert [g for g, _ in ch.key_shares or []] == groups
    assert list(ch.extensions) == [t for t, _ in exts]

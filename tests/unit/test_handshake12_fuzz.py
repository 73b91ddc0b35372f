"""Hypothesis against the TLS 1.2 parsers and engine: hostile bytes only ever produce a precise alert.

The engine properties reuse test_handshake_fuzz's server and checks: ``internal_error`` is a failure
(the engine turns unexpected exceptions into it), and an alert must be the last record queued.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from tests.tls12client import CCS, EC_POINT_FORMATS, EMS, RENEGOTIATION_INFO, SESSION_TICKET, Client12
from tests.tlsclient import record
from tests.unit.test_handshake_fuzz import FUZZ, _feed, _mutate, _server
from tls_privsep.secured import messages as m
from tls_privsep.secured import messages12 as m12
from tls_privsep.secured.handshake import ServerHandshake, State
from tls_privsep.shared.errors import DecodeError, IllegalParameter, UnrecognizedName
from tls_privsep.shared.wire import vector

TLS12_EXTENSIONS = (EMS, RENEGOTIATION_INFO, EC_POINT_FORMATS, SESSION_TICKET)


# ---- the TLS 1.2 message parsers --------------------------------------------------------------


def _vector1(min_len: int = 0) -> st.SearchStrategy[bytes]:
    """A well-formed <min_len..255> vector now and then, so both outcomes are drawn."""
    return st.binary(min_size=min_len, max_size=60).map(lambda b: vector(1, b))


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.lists(st.binary(max_size=40), max_size=4).map(
    lambda chain: m12.certificate(chain)[4:])))
def test_parse_certificate(body: bytes) -> None:
    """A body parses only if it is exactly a certificate_list of non-empty entries, which re-encodes to it."""
    try:
        chain = m12.parse_certificate(body)
    except DecodeError:
        return
    assert all(chain)
    assert m12.certificate(chain)[4:] == body


@FUZZ
@given(st.one_of(st.binary(max_size=300), _vector1()))
def test_parse_client_key_exchange(body: bytes) -> None:
    """The point is a <1..2^8-1> vector and nothing else (RFC 8422 §5.7)."""
    well_formed = len(body) >= 2 and body[0] == len(body) - 1
    try:
        public = m12.parse_client_key_exchange(body)
    except DecodeError:
        assert not well_formed
        return
    assert well_formed and vector(1, public) == body


def _tls12_extension_body(ext_type: int) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=80), _vector1(), st.just(b"") if ext_type == EMS else _vector1(1))


@FUZZ
@given(st.sampled_from(TLS12_EXTENSIONS).flatmap(lambda t: st.tuples(st.just(t), _tls12_extension_body(t))))
def test_tls12_extension_in_client_hello(ext: tuple[int, bytes]) -> None:
    """Each TLS 1.2 extension of the ClientHello parses exactly when its body is well formed, to what it says."""
    ext_type, body = ext
    c = Client12()
    c.hello.set(ext_type, body)
    vector_ok = len(body) >= 1 and body[0] == len(body) - 1
    well_formed = {
        EMS: body == b"",  # RFC 7627 §5.1
        RENEGOTIATION_INFO: vector_ok,  # RFC 5746 §3.2
        EC_POINT_FORMATS: vector_ok and len(body) >= 2,  # RFC 8422 §5.1.2: <1..2^8-1>
        SESSION_TICKET: True,  # RFC 5077 §3.2: the whole body is the ticket
    }[ext_type]
    try:
        ch = m.parse_client_hello(c.hello.encode())
    except DecodeError:
        assert not well_formed
        return
    assert well_formed
    got = {
        EMS: ch.extended_master_secret,
        RENEGOTIATION_INFO: ch.renegotiation_info is not None and vector(1, ch.renegotiation_info) == body,
        EC_POINT_FORMATS: ch.ec_point_formats is not None and vector(1, ch.ec_point_formats) == body,
        SESSION_TICKET: ch.session_ticket == body,
    }[ext_type]
    assert got


@FUZZ
@given(st.lists(st.tuples(st.sampled_from((*TLS12_EXTENSIONS, 0, 10, 13, 16, 43)), st.binary(max_size=40)),
                max_size=6))
def test_client_hello_with_random_extensions(extensions: list[tuple[int, bytes]]) -> None:
    """Any list of these extensions, duplicates included: parsed, or refused with one of the parser's alerts."""
    c = Client12()
    c.hello.extensions = extensions
    try:
        m.parse_client_hello(c.hello.encode())
    except (DecodeError, IllegalParameter, UnrecognizedName):
        pass


# ---- the TLS 1.2 engine, after a valid ClientHello ---------------------------------------------


def _after_hello() -> tuple[ServerHandshake, Client12]:
    hs, c = _server(), Client12()
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())
    assert hs.state is State.TLS12
    return hs, c


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_random_bytes_after_hello(chunks: list[bytes]) -> None:
    _feed(_after_hello()[0], chunks)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([20, 21, 22, 23, 0, 99]), st.binary(max_size=120)), max_size=5))
def test_random_records_after_hello(records: list[tuple[int, bytes]]) -> None:
    _feed(_after_hello()[0], [record(t, body) for t, body in records])


@FUZZ
@given(st.data())
def test_mutated_client_hello12(data: st.DataObject) -> None:
    _feed(_server(), [_mutate(data, Client12().client_hello_record())])


@FUZZ
@given(st.data())
def test_mutated_second_flight(data: st.DataObject) -> None:
    hs, c = _after_hello()
    _feed(hs, [_mutate(data, c.full_flight())])


def _sealed_or_plain(c: Client12, payload: bytes, content_type: int = 22) -> bytes:
    """Sealed once the client has keys (as it would after its CCS), plaintext before."""
    return c.protect(payload, content_type) if c.keys is not None else record(content_type, payload)


# The pieces of a second flight, right and wrong, that the next test strings together in any order.
Piece = Callable[[Client12, st.DataObject], bytes]
PIECES: list[Piece] = [
    lambda c, d: record(22, c.client_key_exchange()),
    lambda c, d: record(22, c.client_key_exchange(d.draw(st.binary(min_size=1, max_size=70)))),
    lambda c, d: CCS,
    lambda c, d: _sealed_or_plain(c, c.finished()),
    lambda c, d: record(22, c.finished()),
    lambda c, d: _sealed_or_plain(c, c.finished(corrupt=True)),
    lambda c, d: _sealed_or_plain(c, b"GET /", 23),
    lambda c, d: record(21, bytes([d.draw(st.sampled_from([1, 2])), d.draw(st.integers(0, 255))])),
    lambda c, d: _sealed_or_plain(c, m12.certificate([])),
    lambda c, d: _sealed_or_plain(c, m.certificate_verify(0x0403, d.draw(st.binary(min_size=1, max_size=80)))),
    lambda c, d: _sealed_or_plain(c, c.hello.encode()),
    lambda c, d: _sealed_or_plain(c, d.draw(st.binary(max_size=60)), d.draw(st.sampled_from([20, 21, 22, 23]))),
]


@FUZZ
@given(st.integers(0, 3), st.lists(st.integers(0, len(PIECES) - 1), max_size=6), st.data())
def test_second_flight_pieces_in_any_order(right: int, order: list[int], data: st.DataObject) -> None:
    """The first ``right`` pieces of a correct flight (ClientKeyExchange, CCS, Finished), then any pieces."""
    hs, c = _after_hello()
    chunks = [PIECES[i](c, data) for i in (0, 2, 3)[:right]]
    chunks += [PIECES[i](c, data) for i in order]
    _feed(hs, chunks)

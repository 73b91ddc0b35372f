"""Limits against abuse, without sockets: each at N-1 and N (accepted) and N+1 (the exact alert).

Handshake-phase limits run the server engine against the scriptable client (tests/tlsclient.py) and
check the alert record it queues; record-layer runs after the handshake go through appd's
RecordStream over a memory stream, with a mirror RecordLayer as the client, and check the alert
record that reaches the client. The configuration keys behind them are checked at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from tests.inmemory import client_verifier, imported, server_config
from tests.tlsclient import Client, record
from tls_privsep.appd.stream import RecordStream
from tls_privsep.secured import messages as m
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared import config
from tls_privsep.shared.errors import AlertDescription as AD
from tls_privsep.shared.errors import ConfigError, LocalAlert
from tls_privsep.shared.record import MAX_CLIENT_HELLO, ApplicationData, Protection, RecordLayer
from tls_privsep.shared.state import TrafficState
from tls_privsep.shared.wire import u16, vector

LOG = structlog.get_logger("test")
PADDING = 21  # the padding extension (RFC 7685): any size we like, ignored by the server
SERVER_DEFAULTS = config.SecuredSettings()
APPD_DEFAULTS = config.AppdSettings()


def plain_alert(alert: AD) -> bytes:
    return bytes([21, 3, 3, 0, 2, 2, alert])


def server(**kw: Any) -> ServerHandshake:
    return ServerHandshake(server_config(("ecdsa",), **kw))


def expect_plain_alert(hs: ServerHandshake, data: bytes, alert: AD) -> None:
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(data)
    assert exc.value.description == alert, exc.value.reason
    assert hs.data_to_send() == plain_alert(alert)


def expect_encrypted_alert(hs: ServerHandshake, c: Client, data: bytes, alert: AD) -> None:
    """After our flight the alert goes out under the server application key (nothing else used it yet)."""
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(data)
    assert exc.value.description == alert, exc.value.reason
    out = hs.data_to_send()
    assert c.suite is not None
    assert len(out) == 5 + 2 + 1 + 16  # one record: header, alert, inner type, tag
    assert Protection(c.suite.suite, c._secrets["s_ap"]).open(out[:5], out[5:]) == (21, bytes([2, alert]))


def answered_with_server_hello(hs: ServerHandshake) -> bytes:
    out = hs.data_to_send()
    assert out[:1] == b"\x16" and out[5] == 2, out[:16].hex()  # a plaintext handshake record: ServerHello
    return out


# ---- handshake message size (secured.max_handshake_message, the ClientHello included) ---------


def hello_of_body_size(c: Client, size: int) -> bytes:
    """The client's hello as a handshake message whose body is exactly ``size`` bytes (padded)."""
    c.hello.set(PADDING, b"")
    base = len(c.hello.encode()) - 4
    assert size >= base
    c.hello.set(PADDING, bytes(size - base))
    msg = c.hello.encode()
    assert len(msg) - 4 == size
    return msg


def in_records(msg: bytes, pieces: int = 0) -> bytes:
    """``msg`` as plaintext handshake records: full-size ones, or exactly ``pieces`` of them."""
    if not pieces:
        pieces = -(-len(msg) // 2**14)
    assert 1 <= pieces <= len(msg)
    step, extra = divmod(len(msg), pieces)
    out, at = [], 0
    for i in range(pieces):
        n = step + (1 if i < extra else 0)
        out.append(record(22, msg[at : at + n], 0x0301))
        at += n
    return b"".join(out)


@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_client_hello_size_below_the_default(delta: int) -> None:
    c = Client()
    msg = hello_of_body_size(c, 2048 + delta)
    c.transcript.append(msg)
    hs = server(max_handshake_message=2048)
    if delta <= 0:
        hs.receive_data(in_records(msg))
        c.read_server(answered_with_server_hello(hs))
        hs.receive_data(c.protect(c.finished_message()))
        assert hs.complete
    else:
        expect_plain_alert(hs, in_records(msg), AD.illegal_parameter)


def test_the_largest_tls13_client_hello_completes_and_carries_data() -> None:
    """Every vector of the hello at its largest (131,142 body bytes, 9 records), at the default limits;
    then the session is exported and imported as appd does, and data crosses both ways."""
    assert SERVER_DEFAULTS.max_handshake_message == MAX_CLIENT_HELLO
    c = Client()
    c.make_largest_hello()
    wire = c.client_hello_record()
    assert wire.count(b"\x16\x03\x01") >= 9 and len(wire) > 8 * 2**14
    hs = server(tickets=0)
    hs.receive_data(wire)
    c.read_server(answered_with_server_hello(hs))
    hs.receive_data(c.protect(c.finished_message()))
    assert hs.complete and hs.info.sig_scheme == 0x0403
    rl = imported(hs)
    assert c.suite is not None
    to_server = Protection(c.suite.suite, c._secrets["c_ap"])
    from_server = Protection(c.suite.suite, c._secrets["s_ap"])
    rl.receive_data(to_server.seal(23, b"ping"))
    assert rl.next_event() == ApplicationData(b"ping")
    out = rl.send_application_data(b"pong")
    assert from_server.open(out[:5], out[5:]) == (23, b"pong")


def largest_hello(compression: int) -> bytes:
    """A ClientHello whose every vector is at its maximum, but without supported_versions (so it is
    answered with protocol_version once parsed): 131,396 body bytes with 255 compression methods."""
    body = u16(0x0303) + bytes(32) + vector(1, bytes(32)) + vector(2, bytes(range(2)) * (2**15 - 1))
    body += vector(1, bytes(compression))
    body += vector(2, u16(PADDING) + vector(2, bytes(2**16 - 1 - 4)))
    return m.handshake(1, body)


@pytest.mark.parametrize("delta", [-1, 0], ids=["N-1", "N"])
def test_client_hello_at_the_default_limit_reaches_the_parser(delta: int) -> None:
    # 131,395 and 131,396 body bytes (254 and 255 compression methods): only an older client's hello
    # is that long, but the size passes and the parser answers (protocol_version from a TLS 1.3-only
    # server: no TLS 1.3 offered).
    msg = largest_hello(255 + delta)
    assert len(msg) - 4 == MAX_CLIENT_HELLO + delta
    expect_plain_alert(server(versions=frozenset({0x0304})), in_records(msg), AD.protocol_version)


@pytest.mark.parametrize("limit", [None, 2**24 - 1], ids=["default", "2^24-1"])
def test_client_hello_over_131396_bytes_is_refused_on_its_header(limit: int | None) -> None:
    # No ClientHello can be longer, so no setting lets one through: illegal_parameter, OpenSSL's
    # alert for a message over its size limit, on the header alone (nothing buffered for it).
    hs = server() if limit is None else server(max_handshake_message=limit)
    header = b"\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")
    expect_plain_alert(hs, record(22, header, 0x0301), AD.illegal_parameter)


def after_flight(**kw: Any) -> tuple[ServerHandshake, Client]:
    hs = server(**kw)
    c = Client()
    hs.receive_data(c.client_hello_record())
    c.read_server(answered_with_server_hello(hs))
    return hs, c


@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_any_handshake_message_size_is_refused_on_its_header(delta: int) -> None:
    # A client Certificate of N+1 bytes is refused as soon as its 4-byte header is in: nothing is
    # buffered for it. At N-1 and N the size passes and the message reaches its parser.
    limit = 4096
    hs, c = after_flight(max_handshake_message=limit, client_auth="required", client_verifier=client_verifier())
    header = bytes([11]) + (limit + delta).to_bytes(3, "big")
    if delta > 0:
        expect_encrypted_alert(hs, c, c.protect(header), AD.illegal_parameter)
    else:
        expect_encrypted_alert(hs, c, c.protect(header + bytes(limit + delta)), AD.decode_error)


# ---- messages of a fixed size, and messages not expected, are judged on their header --------------


@pytest.mark.parametrize("length", [0, 31, 33, 48, 64, 65, 4096, 2**24 - 1])
def test_finished_of_another_length_is_decode_error_on_its_header(length: int) -> None:
    # TLS_AES_128_GCM_SHA256: a Finished is 32 bytes. Any other announced length is decode_error as
    # soon as the header is in (§6.2: "the length of the message was incorrect"), also past the size
    # limit, where it used to be illegal_parameter, and below it, where the engine used to wait.
    hs, c = after_flight()
    expect_encrypted_alert(hs, c, c.protect(bytes([20]) + length.to_bytes(3, "big")), AD.decode_error)


def test_finished_of_the_right_length_is_read_whole() -> None:
    hs, c = after_flight()
    fin = c.finished_message()
    hs.receive_data(c.protect(fin[:4]))  # the header alone: nothing to say yet
    assert not hs.complete and hs.data_to_send() == b""
    hs.receive_data(c.protect(fin[4:]))
    assert hs.complete


@pytest.mark.parametrize("msg_type", [24, 5, 1, 99], ids=["KeyUpdate", "EndOfEarlyData", "ClientHello", "type 99"])
@pytest.mark.parametrize("length", [0, 1, 2**24 - 1])
def test_a_message_the_state_does_not_take_is_unexpected_whatever_its_length(msg_type: int, length: int) -> None:
    # A KeyUpdate before the client Finished is unexpected_message (§4.6.3), and so is an
    # EndOfEarlyData (we never accept 0-RTT, §4.5): the type is judged before the size limit.
    hs, c = after_flight()
    expect_encrypted_alert(hs, c, c.protect(bytes([msg_type]) + length.to_bytes(3, "big")), AD.unexpected_message)


@pytest.mark.parametrize("length", [0, 32, 2**24 - 1])
def test_anything_but_a_client_hello_first_is_unexpected_whatever_its_length(length: int) -> None:
    expect_plain_alert(server(), record(22, bytes([20]) + length.to_bytes(3, "big"), 0x0301), AD.unexpected_message)


# ---- records before the handshake completes (secured.max_handshake_records) ------------------


@pytest.mark.parametrize("limit", [SERVER_DEFAULTS.max_handshake_records, 8], ids=["default", "8"])
@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_records_for_a_whole_handshake(limit: int, delta: int) -> None:
    # ClientHello in (limit + delta - 2) records, then a CCS and the Finished: limit + delta in all.
    # The CCS counts although it is dropped.
    c = Client()
    c.hello.set(PADDING, bytes(100))  # enough bytes to cut into any of these record counts
    msg = c.hello.encode()
    c.transcript.append(msg)
    hs = server(max_handshake_records=limit)
    hs.receive_data(in_records(msg, limit + delta - 2))
    c.read_server(answered_with_server_hello(hs))
    hs.receive_data(record(20, b"\x01"))
    fin = c.protect(c.finished_message())
    if delta <= 0:
        hs.receive_data(fin)
        assert hs.complete
    else:
        expect_encrypted_alert(hs, c, fin, AD.unexpected_message)


@pytest.mark.parametrize("limit", [SERVER_DEFAULTS.max_handshake_records, 8], ids=["default", "8"])
@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_records_for_a_client_hello(limit: int, delta: int) -> None:
    c = Client()
    c.hello.set(PADDING, bytes(100))
    msg = c.hello.encode()
    hs = server(max_handshake_records=limit)
    if delta <= 0:
        hs.receive_data(in_records(msg, limit + delta))
        answered_with_server_hello(hs)
    else:
        expect_plain_alert(hs, in_records(msg, limit + delta), AD.unexpected_message)


@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_records_fed_one_at_a_time(delta: int) -> None:
    # The count does not depend on how the bytes arrive: appd relays whatever whole records it has.
    limit = 8
    c = Client()
    c.hello.set(PADDING, bytes(100))
    hs = server(max_handshake_records=limit)
    wire = in_records(c.hello.encode(), limit + delta)
    records = []
    while wire:
        n = 5 + int.from_bytes(wire[3:5], "big")
        records.append(wire[:n])
        wire = wire[n:]
    for r in records[:-1]:
        hs.receive_data(r)
        assert hs.data_to_send() == b""
    if delta <= 0:
        hs.receive_data(records[-1])
        answered_with_server_hello(hs)
    else:
        expect_plain_alert(hs, records[-1], AD.unexpected_message)


# ---- runs after the handshake, in appd (max_empty_records, max_key_updates, max_warning_alerts) --

SUITE = 0x1301
CLIENT_SECRET, SERVER_SECRET = bytes(range(32)), bytes(range(100, 132))


def empty_record(client: RecordLayer) -> bytes:
    return client.send_application_data(b"")


def key_update(client: RecordLayer) -> bytes:
    return client.send_key_update(False)


def warning_alert(client: RecordLayer) -> bytes:
    return client.send_alert(AD.user_canceled, level=1)


RUNS: list[tuple[str, str, Callable[[RecordLayer], bytes], int]] = [
    ("empty records", "max_empty_records", empty_record, APPD_DEFAULTS.max_empty_records),
    ("KeyUpdates", "max_key_updates", key_update, APPD_DEFAULTS.max_key_updates),
    ("warning alerts", "max_warning_alerts", warning_alert, APPD_DEFAULTS.max_warning_alerts),
]


def stream_and_client(**limits: Any) -> tuple[RecordStream, RecordLayer, trio.abc.Stream]:
    server_end, client_end = trio.testing.memory_stream_pair()
    state = TrafficState(SUITE, bytearray(CLIENT_SECRET), bytearray(SERVER_SECRET))
    stream = RecordStream(server_end, state, log=LOG, **limits)
    client = RecordLayer.from_traffic_state(TrafficState(SUITE, bytearray(SERVER_SECRET), bytearray(CLIENT_SECRET)))
    return stream, client, client_end


def run(fn: Callable[[], Any]) -> None:
    async def main() -> None:
        with trio.fail_after(5):
            await fn()

    trio.run(main)


@pytest.mark.parametrize(("key", "make", "default"), [r[1:] for r in RUNS], ids=[r[0] for r in RUNS])
@pytest.mark.parametrize("configured", [False, True], ids=["default", "configured 3"])
@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_runs_without_application_data(key: str, make: Callable[[RecordLayer], bytes], default: int,
                                       configured: bool, delta: int) -> None:
    limit = 3 if configured else default

    async def main() -> None:
        stream, client, transport = stream_and_client(**({key: limit} if configured else {}))
        wire = b"".join(make(client) for _ in range(limit + delta)) + client.send_application_data(b"ok")
        await transport.send_all(wire)
        if delta <= 0:
            assert await stream.receive_some() == b"ok"
            await stream.aclose()
            return
        with pytest.raises(trio.BrokenResourceError, match="unexpected_message"):
            await stream.receive_some()
        assert stream.alert_sent == AD.unexpected_message
        out = await transport.receive_some()
        # One record, a fatal unexpected_message under the server's (only) write key.
        assert len(out) == 5 + 2 + 1 + 16
        assert Protection(SUITE, SERVER_SECRET).open(out[:5], out[5:]) == (21, bytes([2, AD.unexpected_message]))
        await stream.aclose()

    run(main)


@pytest.mark.parametrize(("key", "make", "default"), [r[1:] for r in RUNS], ids=[r[0] for r in RUNS])
def test_application_data_starts_a_new_run(key: str, make: Callable[[RecordLayer], bytes], default: int) -> None:
    async def main() -> None:
        stream, client, transport = stream_and_client(**{key: 3})
        for i in range(5):
            await transport.send_all(b"".join(make(client) for _ in range(3)) + client.send_application_data(b"%d" % i))
            assert await stream.receive_some() == b"%d" % i
        await stream.aclose()

    run(main)


# ---- the configuration keys --------------------------------------------------------------------


def test_defaults() -> None:
    s = config.load(None)
    assert (s.secured.max_handshakes_per_channel, s.secured.max_handshakes_total) == (1024, 4096)
    assert (s.secured.handshake_timeout, s.appd.handshake_timeout, s.appd.idle_timeout) == (10.0, 10.0, 300.0)
    assert (s.secured.max_handshake_message, s.secured.max_handshake_records) == (131396, 64)
    assert s.secured.max_handshake_message == MAX_CLIENT_HELLO == server_config().max_handshake_message
    assert s.appd.max_connections == 10000
    assert s.appd.key_update_after == 2**24
    assert (s.appd.max_empty_records, s.appd.max_key_updates, s.appd.max_warning_alerts) == (32, 32, 4)


GOOD = [
    ("secured", "max_handshakes_per_channel", 1), ("secured", "max_handshakes_total", 1),
    ("secured", "max_handshake_message", 1024), ("secured", "max_handshake_message", 2**24 - 1),
    ("secured", "max_handshake_records", 8), ("secured", "handshake_timeout", 0.001),
    ("appd", "handshake_timeout", 0.5), ("appd", "idle_timeout", 0.5), ("appd", "max_connections", 1),
    ("appd", "key_update_after", 2), ("appd", "key_update_after", 2**24),
    ("appd", "max_empty_records", 0), ("appd", "max_key_updates", 1), ("appd", "max_warning_alerts", 0),
]


@pytest.mark.parametrize(("section", "key", "value"), GOOD, ids=[f"{s}.{k}={v}" for s, k, v in GOOD])
def test_limits_accepted(section: str, key: str, value: object) -> None:
    s = config.from_dict({section: {key: value}})
    assert getattr(getattr(s, section), key) == value


BAD = [
    ("secured", "max_handshakes_per_channel", 0), ("secured", "max_handshakes_total", 0),
    ("secured", "max_handshakes_total", "many"),
    ("secured", "max_handshake_message", 1023), ("secured", "max_handshake_message", 2**24),
    ("secured", "max_handshake_records", 7), ("secured", "max_handshake_records", 1.5),
    ("secured", "handshake_timeout", 0), ("secured", "handshake_timeout", float("inf")),
    ("appd", "handshake_timeout", -1), ("appd", "idle_timeout", 0), ("appd", "max_connections", 0),
    ("appd", "key_update_after", 1), ("appd", "key_update_after", 2**24 + 1),
    ("appd", "max_empty_records", -1), ("appd", "max_key_updates", 0), ("appd", "max_warning_alerts", -1),
    ("appd", "max_warning_alerts", True),
]


@pytest.mark.parametrize(("section", "key", "value"), BAD, ids=[f"{s}.{k}={v}" for s, k, v in BAD])
def test_limits_refused_naming_the_key(section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as exc:
        config.from_dict({section: {key: value}})
    message = str(exc.value)
    assert f"{section}.{key}" in message and "\n" not in message


def test_wired_into_the_engine() -> None:
    from tls_privsep.secured.setup import server_config as from_settings

    creds = server_config(("ecdsa",)).credentials
    settings = config.from_dict({"secured": {"max_handshake_message": 5000, "max_handshake_records": 9}}).secured
    engine = from_settings(settings, credentials=creds)
    assert (engine.max_handshake_message, engine.max_handshake_records) == (5000, 9)
    hs = ServerHandshake(engine)
    assert (hs._rl.limits.max_handshake_message, hs._rl.limits.max_handshake_records) == (5004, 9)



# ---- the AEAD usage limit (appd.key_update_after): appd's own KeyUpdate -------------------------


@pytest.mark.parametrize("limit", [2, 8, APPD_DEFAULTS.key_update_after], ids=["2", "8", "default"])
@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_key_update_after(limit: int, delta: int) -> None:
    """One write key protects at most N records, the KeyUpdate that retires it included: after N-1
    records there is none yet; record N under the key is the KeyUpdate; record N+1 goes out under
    the next key. For the default 2^24 the key starts 4 records short of its limit."""
    start = 0 if limit < 100 else limit - 4  # records the key protected before (the tickets, say)
    room = limit - 1 - start  # data records it may still protect
    sends = room + 1 + delta

    async def main() -> None:
        server_end, client_end = trio.testing.memory_stream_pair()
        state = TrafficState(SUITE, bytearray(CLIENT_SECRET), bytearray(SERVER_SECRET), write_seq=start,
                             records_protected=start)
        stream = RecordStream(server_end, state, log=LOG, key_update_after=limit)
        for i in range(sends):
            await stream.send_all(b"%d" % i)
        wire = b""
        while chunk := await _receive_nowait(client_end):
            wire += chunk
        read = Protection(SUITE, SERVER_SECRET, start)
        events, generation = [], 0
        while wire:
            n = 5 + int.from_bytes(wire[3:5], "big")
            inner, plain = read.open(wire[:5], wire[5:n])
            wire = wire[n:]
            events.append((generation, inner))
            if inner == 22:
                assert plain == b"\x18\x00\x00\x01\x00"  # KeyUpdate, update_not_requested
                read = read.next_generation()
                generation += 1
        under_first = start + sum(1 for g, _ in events if g == 0)
        if delta < 0:
            assert events == [(0, 23)] * room and under_first == limit - 1
        else:
            assert events[room] == (0, 22) and under_first == limit
            assert events[room + 1] == (1, 23)
        assert [inner for _, inner in events].count(23) == sends
        await stream.aclose()

    run(main)


async def _receive_nowait(stream: trio.abc.ReceiveStream) -> bytes:
    with trio.move_on_after(0.05):
        return await stream.receive_some()
    return b""


def test_an_imported_count_below_the_sequence_number_never_lengthens_the_keys_life() -> None:
    """A state whose records_protected says fewer records than its write_seq (a producer that left the default
    0): the sequence number still counts, so the key is retired as early as with the true count."""
    def left(records_protected: int) -> int:
        state = TrafficState(SUITE, bytearray(CLIENT_SECRET), bytearray(SERVER_SECRET), write_seq=5,
                             records_protected=records_protected)
        return RecordLayer.from_traffic_state(state, key_update_after=8).records_before_key_update()

    assert left(0) == left(5) == 2  # 8 per key, the KeyUpdate included, 5 used
    assert left(6) == 1  # more records than the sequence number shows: the count wins

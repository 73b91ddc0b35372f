"""Property tests: whatever bytes arrive, the record layer answers with an alert or with events."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tls_privsep.shared import errors
from tls_privsep.shared.keyschedule import SUITES
from tls_privsep.shared.record import (
    MAX_PLAINTEXT,
    ApplicationData,
    ChangeCipherSpec,
    Event,
    Phase,
    Protection,
    RecordLayer,
    Tls12Protection,
)
from tls_privsep.shared.state import TLS13

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUITE_IDS = sorted(SUITES)


def secret(suite: int, seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(SUITES[suite].hash_len))


def make_layer(mode: str, suite: int = 0x1301) -> RecordLayer:
    """A layer in one of the states the callers put it in."""
    layer = RecordLayer(max_handshake_message=4096)
    if mode != "plaintext":
        layer.set_read_key(suite, secret(suite, 1))
        layer.set_write_key(suite, secret(suite, 2))
    if mode == "application":
        layer.enter(Phase.APPLICATION)
    elif mode in ("plaintext", "handshake", "skip_early"):
        layer.enter(Phase.HANDSHAKE_CCS)
    if mode == "skip_early":
        layer.skip_early_data(2000)
    if mode == "skip_plain":
        layer.skip_plaintext_app_data(2000)
    return layer


MODES = st.sampled_from(["plaintext", "handshake", "application", "skip_early", "skip_plain"])


def feed(layer: RecordLayer, chunks: list[bytes], max_data: int = 0) -> list[Event]:
    """Feed chunks, draining events (in runs of up to ``max_data`` bytes if given); an alert ends the
    feeding, except internal_error, which escapes, as does anything else."""
    out: list[Event] = []
    try:
        for chunk in chunks:
            layer.receive_data(chunk)
            while (ev := layer.next_event(max_data)) is not None:
                out.append(ev)
                # play the engine: move on to the next key where a server would (TLS 1.3: after a handshake
                # message; TLS 1.2: at the client's change_cipher_spec)
                if layer.read is None and not layer.has_pending_handshake():
                    if layer.version == TLS13:
                        layer.set_read_key(0x1301, secret(0x1301, 1))
                    elif isinstance(ev, ChangeCipherSpec):
                        layer.set_read_protection(Tls12Protection(0xC02B, bytes(20)))
    except errors.InternalError:
        raise  # not an answer to the input: a parser let something through (fuzz/README.md)
    except errors.Alert:
        pass
    layer.data_to_send()
    return out


@BOUNDED
@given(mode=MODES, chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_raise_only_alerts(mode: str, chunks: list[bytes]) -> None:
    feed(make_layer(mode), chunks)


@BOUNDED
@given(mode=MODES, body=st.binary(max_size=200), ctype=st.sampled_from([20, 21, 22, 23]))
def test_random_record_bodies_raise_only_alerts(mode: str, body: bytes, ctype: int) -> None:
    header = bytes([ctype, 3, 3]) + len(body).to_bytes(2, "big")
    feed(make_layer(mode), [header + body])


def valid_stream(suite: int) -> bytes:
    """What a client might send after the handshake: data, empty records, KeyUpdates, an alert."""
    p = Protection(suite, secret(suite, 1))
    out = [p.seal(23, b"hello"), p.seal(23, b""), p.seal(23, b"x" * 300, padding=7)]
    out.append(p.seal(22, b"\x18\x00\x00\x01\x01"))
    p = p.next_generation()
    out += [p.seal(23, b"after update"), p.seal(21, b"\x01\x5a"), p.seal(23, b"y"), p.seal(21, b"\x01\x00")]
    return b"".join(out)


MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]), st.integers(0, 10**6))


def mutate(data: bytes, mutations: list[tuple[str, int]], fill: bytes) -> bytes:
    buf = bytearray(data)
    for kind, where in mutations:
        if not buf:
            break
        i = where % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << (where % 8)
        elif kind == "insert":
            buf[i:i] = fill
        elif kind == "delete":
            del buf[i : i + 1 + where % 4]
        elif kind == "truncate":
            del buf[i:]
        else:
            buf[i] = where % 256
    return bytes(buf)


@BOUNDED
@given(
    suite=st.sampled_from(SUITE_IDS),
    mutations=st.lists(MUTATION, min_size=1, max_size=4),
    fill=st.binary(min_size=1, max_size=8),
    split=st.integers(0, 2000),
)
def test_mutated_records_raise_only_alerts(
    suite: int, mutations: list[tuple[str, int]], fill: bytes, split: int
) -> None:
    data = mutate(valid_stream(suite), mutations, fill)
    split %= len(data) + 1
    feed(make_layer("application", suite), [data[:split], data[split:]])


@BOUNDED
@given(suite=st.sampled_from(SUITE_IDS), cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_valid_stream_any_chunking_same_events(suite: int, cuts: list[int]) -> None:
    data = valid_stream(suite)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = feed(make_layer("application", suite), [data])
    assert feed(make_layer("application", suite), chunks) == whole
    assert [e.data for e in whole if isinstance(e, ApplicationData)] == [
        b"hello",
        b"x" * 300,
        b"after update",
        b"y",
    ]


@BOUNDED
@given(
    suite=st.sampled_from(SUITE_IDS),
    data=st.binary(max_size=2000),
    padding=st.integers(0, 600),
    ctype=st.sampled_from([21, 22, 23]),
    seq=st.integers(0, 2**64 - 2),
)
def test_seal_open_round_trip(suite: int, data: bytes, padding: int, ctype: int, seq: int) -> None:
    a, b = Protection(suite, secret(suite, 9), seq), Protection(suite, secret(suite, 9), seq)
    rec = a.seal(ctype, data, padding)
    assert len(rec) == 5 + len(data) + 1 + padding + 16
    assert b.open(rec[:5], rec[5:]) == (ctype, data)
    assert a.seq == b.seq == seq + 1


@BOUNDED
@given(suite=st.sampled_from(SUITE_IDS), data=st.binary(max_size=3 * MAX_PLAINTEXT + 10))
def test_layer_round_trip_any_size(suite: int, data: bytes) -> None:
    tx, rx = RecordLayer(), RecordLayer()
    tx.set_write_key(suite, secret(suite, 3))
    rx.set_read_key(suite, secret(suite, 3))
    rx.enter(Phase.APPLICATION)
    events = feed(rx, [tx.send_application_data(data)])
    assert b"".join(e.data for e in events if isinstance(e, ApplicationData)) == data


def test_whole_records_examples() -> None:
    from tls_privsep.shared.record import whole_records

    rec = b"\x16\x03\x01\x00\x03abc"
    assert whole_records(b"") == 0
    assert whole_records(rec[:4]) == 0
    assert whole_records(rec) == len(rec)
    assert whole_records(rec + rec[:6]) == len(rec)  # a partial second record waits
    assert whole_records(rec + b"\x63\x03\x03\x00\x01") == len(rec) + 5  # impossible type: hand it all over
    assert whole_records(b"\x17\x03\x03\x48\x01") == 5  # longer than 2^14+2048: hand it over
    long12 = b"\x17\x03\x03\x41\x01" + bytes(2**14 + 257)  # a TLS 1.2 record longer than TLS 1.3 frames
    assert whole_records(long12[:100]) == 0 and whole_records(long12) == len(long12)  # waited for, then whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([20, 21, 22, 23]), st.binary(max_size=40)), max_size=5),
       st.binary(max_size=12))
def test_whole_records_stops_at_the_first_partial_record(records: list[tuple[int, bytes]], tail: bytes) -> None:
    from tls_privsep.shared.record import whole_records

    whole = b"".join(bytes([t, 3, 3]) + len(d).to_bytes(2, "big") + d for t, d in records)
    partial = b"\x17\x03\x03\x00\x20" + tail[:20]  # claims 32 bytes, has at most 20
    assert whole_records(whole) == len(whole)
    assert whole_records(whole + partial) == len(whole)

""""Imported in exactly the same state as when exported", checked byte for byte.

For every suite, after a real handshake with tickets: a record layer built from the state secured
exported and one built from the state appd imported out of the sealed blob produce identical records,
before and after a KeyUpdate; and the real client (Python's ssl) reads what the imported side sends.

TLS 1.2 likewise, for every TLS 1.2 suite: the layer as secured's engine holds it (Tls12Protection set
directly at the sequence numbers it reached) and the one appd imports through the blob seal the same
bytes and open each other's peer's records; and after a real handshake the client reads what the
imported side sends.
"""

from __future__ import annotations

import contextlib
import os
import ssl

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.inmemory import client_context, completed_engine, server_config
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared import channel as ch
from tls_privsep.shared import tls12
from tls_privsep.shared.record import ApplicationData, CloseNotify, Event, Phase, RecordLayer, Tls12Protection
from tls_privsep.shared.state import TLS12, TrafficState


def _read_all(client: ssl.SSLObject) -> bytes:
    """Everything the client can decrypt from what it has been given so far."""
    got = b""
    while True:
        try:
            got += client.read(65536)
        except ssl.SSLWantReadError:
            return got


def _channel_keys() -> tuple[ch.ChannelKeys, ch.ChannelKeys]:
    pa, ps = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ha, hs = ch.make_hello(pa, "appd").encode(), ch.make_hello(ps, "secured").encode()
    return ch.ChannelKeys.derive(pa, ha, hs), ch.ChannelKeys.derive(ps, hs, ha)


@pytest.mark.parametrize("suite", [0x1301, 0x1302, 0x1303])
@pytest.mark.parametrize("tickets", [0, 2])
def test_exported_and_imported_state_seal_identically(suite: int, tickets: int) -> None:
    engine, client, incoming, outgoing = completed_engine(suite, tickets)

    exported = engine.export()
    assert exported.write_seq == (1 if tickets else 0)
    appd_keys, secured_keys = _channel_keys()
    blob = secured_keys.sealer().seal(exported, conn=7)
    imported = appd_keys.opener().open(blob, conn=7)

    a, b = RecordLayer.from_traffic_state(exported), RecordLayer.from_traffic_state(imported)  # as appd imports
    assert imported.records_protected == exported.records_protected == exported.write_seq
    assert a.records_before_key_update() == b.records_before_key_update()  # the AEAD usage count goes on
    exported.wipe()  # secured's copy goes; the imported side must not care
    for size in (0, 1, 100, 16384, 20000):
        data = os.urandom(size)
        record = b.send_application_data(data)
        assert a.send_application_data(data) == record
        incoming.write(record)
    for request in (False, True):
        update = b.send_key_update(request)
        assert a.send_key_update(request) == update
        incoming.write(update)
        data = os.urandom(5000)
        record = b.send_application_data(data)
        assert a.send_application_data(data) == record
        incoming.write(record)
    # The real client reads everything the imported side sent, across both KeyUpdates ...
    got = _read_all(client)
    assert len(got) == 0 + 1 + 100 + 16384 + 20000 + 5000 + 5000
    # ... and answered update_requested with its own KeyUpdate, which the imported side follows.
    client.write(b"still in step")
    b.receive_data(outgoing.read())
    events = []
    while (event := b.next_event()) is not None:
        events.append(event)
    assert ApplicationData(b"still in step") in events


# -- TLS 1.2 ------------------------------------------------------------------------------------------


def _events(layer: RecordLayer, data: bytes) -> list[Event]:
    layer.receive_data(data)
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def _key_block(suite: int) -> tuple[bytes, bytes]:
    """(client, server) key material from RFC 5246's key expansion, as secured derives it."""
    params = tls12.SUITES12[suite]
    master = bytes(range(48))
    return tls12.key_block(params, master, client_random=bytes(32), server_random=bytes(range(32)))


def _secured_layer(suite: int, client: bytes, server: bytes, read_seq: int, write_seq: int) -> RecordLayer:
    """The layer as secured's TLS 1.2 engine holds it after both Finished: protections set directly."""
    layer = RecordLayer()
    layer.use_tls12()
    layer.set_read_protection(Tls12Protection(suite, client, read_seq))
    layer.set_write_protection(Tls12Protection(suite, server, write_seq))
    layer.enter(Phase.APPLICATION)  # secured exports here; entered only so that this side reads data too
    return layer


def _client_layer(suite: int, client: bytes, server: bytes, read_seq: int, write_seq: int) -> RecordLayer:
    mirror = TrafficState(suite, bytearray(server), bytearray(client), read_seq=write_seq, write_seq=read_seq,
                          version=TLS12)
    return RecordLayer.from_traffic_state(mirror)


@pytest.mark.parametrize("suite", sorted(tls12.SUITES12))
@pytest.mark.parametrize(("read_seq", "write_seq"), [(1, 1), (1, 2), (3, 7)])
def test_tls12_secured_layer_and_imported_layer_seal_identically(suite: int, read_seq: int, write_seq: int) -> None:
    client, server = _key_block(suite)
    secured = _secured_layer(suite, client, server, read_seq, write_seq)
    exported = TrafficState(suite, bytearray(client), bytearray(server), read_seq=read_seq, write_seq=write_seq,
                            records_protected=write_seq, alpn="h2", sni="localhost", version=TLS12)
    appd_keys, secured_keys = _channel_keys()
    blob = secured_keys.sealer().seal(exported, conn=3)
    exported.wipe()
    imported = appd_keys.opener().open(blob, conn=3)
    appd = RecordLayer.from_traffic_state(imported)
    assert appd.version == TLS12 and appd.records_before_key_update() == secured.records_before_key_update()

    peer_of_secured = _client_layer(suite, client, server, read_seq, write_seq)
    peer_of_appd = _client_layer(suite, client, server, read_seq, write_seq)
    for size in (0, 1, 100, 16384, 20000):
        data = os.urandom(size)
        sent = appd.send_application_data(data) + appd.send_alert(90, 1)
        assert secured.send_application_data(data) + secured.send_alert(90, 1) == sent
        # Each side's peer reads the other side's records: same keys, same sequence numbers.
        for peer, wire in ((peer_of_secured, sent), (peer_of_appd, sent)):
            got = _events(peer, wire)
            assert b"".join(e.data for e in got if isinstance(e, ApplicationData)) == data
        to_appd, to_secured = peer_of_appd.send_application_data(data), peer_of_secured.send_application_data(data)
        assert to_appd == to_secured
        for layer, wire in ((secured, to_appd), (appd, to_secured)):
            got = _events(layer, wire)
            assert b"".join(e.data for e in got if isinstance(e, ApplicationData)) == data
    close = peer_of_appd.send_alert(0, 1)
    assert _events(secured, close) == _events(appd, close) == [CloseNotify()]


@pytest.mark.parametrize(("name", "kind"), [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa"), ("ECDHE-RSA-AES128-GCM-SHA256", "rsa2048"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "ecdsa"), ("ECDHE-RSA-AES256-GCM-SHA384", "rsa2048"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "ecdsa"), ("ECDHE-RSA-CHACHA20-POLY1305", "rsa2048"),
])
def test_tls12_exported_and_imported_state_after_a_real_handshake(name: str, kind: str) -> None:
    engine = ServerHandshake(server_config((kind,)))
    ctx = client_context(tls12=True)
    ctx.set_ciphers(name)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        engine.receive_data(outgoing.read())
        incoming.write(engine.data_to_send())
        if engine.complete:
            break
    client.do_handshake()
    assert engine.complete and client.version() == "TLSv1.2" and client.cipher()[0] == name

    exported = engine.export()
    assert exported.version == TLS12 and exported.write_seq == exported.records_protected >= 1
    appd_keys, secured_keys = _channel_keys()
    imported = appd_keys.opener().open(secured_keys.sealer().seal(exported, conn=5), conn=5)
    a, b = RecordLayer.from_traffic_state(exported), RecordLayer.from_traffic_state(imported)
    exported.wipe()
    for size in (0, 1, 100, 16384, 20000):
        data = os.urandom(size)
        record = b.send_application_data(data)
        assert a.send_application_data(data) == record
        incoming.write(record)
    got = _read_all(client)
    assert len(got) == 0 + 1 + 100 + 16384 + 20000
    client.write(b"still in step")
    b.receive_data(engine.trailing + outgoing.read())
    assert ApplicationData(b"still in step") in [e for e in iter(b.next_event, None)]

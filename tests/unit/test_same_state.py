""""Imported in exactly the same state as when exported", checked byte for byte.

For every suite, after a real handshake with tickets: a record layer built from the state secured
exported and one built from the state appd imported out of the sealed blob produce identical records,
before and after a KeyUpdate; and the real client (Python's ssl) reads what the imported side sends.
"""

from __future__ import annotations

import os
import ssl

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.inmemory import completed_engine
from tls_privsep.shared import channel as ch
from tls_privsep.shared.record import ApplicationData, RecordLayer


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
    got = b""
    while True:
        try:
            got += client.read(65536)
        except ssl.SSLWantReadError:
            break
    assert len(got) == 0 + 1 + 100 + 16384 + 20000 + 5000 + 5000
    # ... and answered update_requested with its own KeyUpdate, which the imported side follows.
    client.write(b"still in step")
    b.receive_data(outgoing.read())
    events = []
    while (event := b.next_event()) is not None:
        events.append(event)
    assert ApplicationData(b"still in step") in events

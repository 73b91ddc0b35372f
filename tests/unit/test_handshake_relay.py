"""The size limits on the way a ClientHello takes from the client's TCP stream to secured's engine.

appd reads the client in pieces, relays whole records to secured in channel datagrams (``open``,
then ``hs``), and secured's record layer puts the handshake message back together. The largest
ClientHello there can be (131,396 body bytes, 9 records) must fit through every step: the read
size, the channel's datagram cap, the engine's message limit. The same path with real daemons is
in tests/integration/test_limits.py.
"""

from __future__ import annotations

from typing import Any, cast

import trio

from tests.inmemory import server_config
from tests.tlsclient import LARGEST_TLS13_HELLO, Client
from tls_privsep.appd import session
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared import channel as ch
from tls_privsep.shared.blob import UINT64_MAX
from tls_privsep.shared.record import MAX_CIPHERTEXT, MAX_CLIENT_HELLO


class _Client:
    """The client's side of the TCP stream: everything at once, handed out as far as each read asks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        out, self.data = self.data[:max_bytes], self.data[max_bytes:]
        return out


def test_the_largest_relayed_chunk_fits_one_channel_datagram() -> None:
    # A chunk is one read plus, at most, a record that the read before left unfinished (its 5-byte
    # header and all but one byte of the largest record there is).
    worst = session.HANDSHAKE_READ + 5 + MAX_CIPHERTEXT - 1
    assert len(ch.Open(UINT64_MAX, "x" * ch.MAX_PEER, bytes(worst)).encode()) <= ch.MAX_MESSAGE
    assert len(ch.Hs(UINT64_MAX, bytes(worst), 0).encode()) <= ch.MAX_MESSAGE
    # ... and a whole ClientHello would not need to: it is relayed in pieces, whatever its size.
    assert MAX_CLIENT_HELLO + 4 > session.HANDSHAKE_READ


def test_the_largest_client_hello_crosses_appd_and_secured() -> None:
    c = Client()
    c.make_largest_hello()
    wire = c.client_hello_record()
    assert len(wire) > LARGEST_TLS13_HELLO
    chunks: list[bytes] = []

    async def relay() -> None:
        tcp = cast(Any, _Client(wire))
        buf = bytearray()
        summary = session.Summary(1, "test")
        while sum(map(len, chunks)) < len(wire):
            chunk = await session._next_records(tcp, buf, summary, None)
            assert chunk
            chunks.append(chunk)

    trio.run(relay)
    assert b"".join(chunks) == wire and len(chunks) >= 3
    engine = ServerHandshake(server_config(("ecdsa",)))  # the default limits
    for i, chunk in enumerate(chunks):
        datagram = (ch.Open(1, "test", chunk) if i == 0 else ch.Hs(1, chunk, 0)).encode()
        assert len(datagram) <= ch.MAX_MESSAGE
        msg = ch.decode(datagram)
        assert isinstance(msg, ch.Open | ch.Hs)
        engine.receive_data(msg.data)
        out = engine.data_to_send()
        assert (out[:1] == b"\x16") == (i == len(chunks) - 1)  # the ServerHello answers the last piece
    c.read_server(out)
    engine.receive_data(c.protect(c.finished_message()))
    assert engine.complete

"""secured's side of the channel, served in-process over a real SEQPACKET socketpair."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import structlog
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.inmemory import server_config
from tests.tlsclient import Client
from tls_privsep.secured.daemon import Secured
from tls_privsep.secured.driver import Limits
from tls_privsep.shared import channel as ch


def _secured(**limits: Any) -> Secured:
    log = structlog.get_logger()
    return Secured(server_config(), Limits(**limits), log, frozenset({os.getuid()}))


async def _recv(sock: trio.socket.SocketType) -> ch.Message | None:
    raw = await sock.recv(ch.MAX_MESSAGE + 1)
    return ch.decode(raw) if raw else None


def _run(body: Any, daemon: Secured) -> None:
    async def main() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs, ours = trio.socket.from_stdlib_socket(a), trio.socket.from_stdlib_socket(b)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.serve_channel, theirs)
            with trio.fail_after(5):
                await body(ours)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _hello(sock: trio.socket.SocketType) -> ch.ChannelState:
    peer = await _recv(sock)
    assert isinstance(peer, ch.Hello) and peer.role == "secured"
    state = ch.ChannelState("appd")
    state.receive(peer)
    hello = ch.make_hello(X25519PrivateKey.generate(), "appd")
    state.send(hello)
    await sock.send(hello.encode())
    return state


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [(b"\xff\x00garbage", None), (ch.Hs(1, b"x", 0).encode(), "hello_expected"), (bytes(ch.MAX_MESSAGE + 10), "oversize")],
    ids=["garbage", "hs before hello", "oversized"],
)
def test_bad_first_message_gets_error_then_close(datagram: bytes, reason: str | None) -> None:
    async def body(sock: trio.socket.SocketType) -> None:
        assert isinstance(await _recv(sock), ch.Hello)
        await sock.send(datagram)
        err = await _recv(sock)
        assert isinstance(err, ch.Error)
        if reason:
            assert err.reason == reason
        assert await sock.recv(100) == b""  # closed

    _run(body, _secured())


def test_out_of_order_after_hello_and_inflight_failed_cleanly() -> None:
    daemon = _secured()

    async def body(sock: trio.socket.SocketType) -> None:
        await _hello(sock)
        await sock.send(ch.Open(1, "peer", Client().client_hello_record()).encode())
        assert isinstance(await _recv(sock), ch.Hs)  # ServerHello + flight
        await sock.send(ch.Hs(9, b"x", 0).encode())  # never opened
        err = await _recv(sock)
        assert isinstance(err, ch.Error) and err.reason == "unknown_conn"
        assert await sock.recv(100) == b""
        await trio.sleep(0.05)
        assert daemon.stats.in_flight == 0  # the open handshake was dropped with the channel

    _run(body, daemon)


def test_peer_uid_not_allowed_is_refused_before_hello() -> None:
    daemon = _secured()
    daemon.allowed_uids = frozenset({os.getuid() + 12345})

    async def body(sock: trio.socket.SocketType) -> None:
        assert await sock.recv(100) == b""

    _run(body, daemon)


def test_busy_beyond_the_per_channel_bound() -> None:
    async def body(sock: trio.socket.SocketType) -> None:
        state = await _hello(sock)
        for conn in (1, 2):
            msg = ch.Open(conn, "peer", Client().client_hello_record())
            state.send(msg)
            await sock.send(msg.encode())
        flight, fail = await _recv(sock), await _recv(sock)
        assert isinstance(flight, ch.Hs) and flight.conn == 1  # the first is served
        assert isinstance(fail, ch.Fail) and fail.conn == 2 and fail.reason == "busy"
        assert fail.data == bytes([21, 3, 3, 0, 2, 2, 80])  # a plaintext internal_error for its client

    _run(body, _secured(max_handshakes=1))


def test_stalled_handshake_fails_at_the_deadline() -> None:
    async def body(sock: trio.socket.SocketType) -> None:
        await _hello(sock)
        await sock.send(ch.Open(1, "slow", Client().client_hello_record()).encode())
        start = trio.current_time()
        assert isinstance(await _recv(sock), ch.Hs)  # our flight; the client never answers it
        fail = await _recv(sock)
        assert isinstance(fail, ch.Fail) and fail.reason == "timeout"
        assert 0.3 <= trio.current_time() - start < 1.5

    _run(body, _secured(handshake_timeout=0.4))


def test_done_carries_blob_and_sealed_fallback_alert() -> None:
    async def body(sock: trio.socket.SocketType) -> None:
        await _hello(sock)
        c = Client()
        await sock.send(ch.Open(1, "peer", c.client_hello_record()).encode())
        flight = await _recv(sock)
        assert isinstance(flight, ch.Hs)
        c.read_server(flight.data)
        fin = c.protect(c.finished_message())
        await sock.send(ch.Hs(1, fin + b"\x17\x03\x03\x00\x05extra", 0).encode())
        done = await _recv(sock)
        assert isinstance(done, ch.Done)
        assert done.consumed == len(fin) and done.blob and done.data  # the tickets
        # The fallback alert opens under the client's view of our application key, after the tickets.
        from tls_privsep.shared.record import Protection

        assert c.suite is not None
        prot = Protection(c.suite.suite, c._secrets["s_ap"])
        prot.open(done.data[:5], done.data[5:])  # the ticket record: seq 0
        assert prot.open(done.alert[:5], done.alert[5:]) == (21, b"\x02\x50")

    _run(body, _secured())

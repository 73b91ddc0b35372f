"""RecordStream and the appd backends, against a real OpenSSL client (Python's ssl over MemoryBIO).

The handshake runs in memory (ServerHandshake against ssl, tests/inmemory.py); its exported state
then goes into a RecordStream over one end of a trio memory stream, and the same ssl client object
is pumped over the other end. Where Python's ssl cannot do something (send a KeyUpdate, an empty
record, a fatal alert), a "mirror" RecordLayer with the secrets swapped plays the client. The proxy
tests use real loopback TCP and Unix sockets for the backend side.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from tests.inmemory import Pair, client_context, server_config
from tls_privsep.appd import session
from tls_privsep.appd.apps import Backend, parse_backend, proxy_v2_header, serve
from tls_privsep.appd.link import Step
from tls_privsep.appd.stream import IdleTimeout, RecordStream, TruncatedError, WriteKeyExhausted
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import AlertDescription, BadRecordMac, ConfigError
from tls_privsep.shared.errors import PeerAlert as AlertFrom
from tls_privsep.shared.record import ApplicationData, CloseNotify, KeyUpdated, RecordLayer, Tls12Protection
from tls_privsep.shared.state import TLS12, TrafficState
from tls_privsep.shared.tls12 import SUITES12

LOG = structlog.get_logger("test")
PEER = "127.0.0.1:40000"


def run(fn: Callable[[], Awaitable[None]], *, timeout: float = 8.0, clock: trio.abc.Clock | None = None) -> None:
    async def main() -> None:
        with trio.fail_after(timeout):
            await fn()

    trio.run(main, clock=clock)


def handshake(sni: str = "localhost", alpn: tuple[str, ...] = (), **config: Any) -> Pair:
    if alpn:
        config["alpn"] = alpn
    ctx = client_context()
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    pair = Pair(ServerHandshake(server_config(**config)), ctx, sni=sni)
    pair.handshake()
    return pair


def mirror_state(state: TrafficState) -> TrafficState:
    """The client's view of ``state``: same secrets, directions swapped."""
    return TrafficState(
        suite=state.suite,
        read_secret=bytearray(state.write_secret),
        write_secret=bytearray(state.read_secret),
        read_seq=state.write_seq,
        write_seq=state.read_seq,
        version=state.version,
    )


def mirror_layer(state: TrafficState) -> RecordLayer:
    return RecordLayer.from_traffic_state(mirror_state(state))


class SslClient:
    """The ssl.SSLObject of a finished handshake, pumped over a trio stream."""

    def __init__(self, pair: Pair, transport: trio.abc.Stream) -> None:
        self.obj = pair.client
        self.incoming = pair.incoming
        self.outgoing = pair.outgoing
        self.transport = transport
        self._lock = trio.Lock()
        self.buf = bytearray()

    async def flush(self) -> None:
        async with self._lock:
            data = self.outgoing.read()
            if data:
                await self.transport.send_all(data)

    async def send(self, data: bytes) -> None:
        self.obj.write(data)
        await self.flush()

    async def recv(self) -> bytes:
        """Some plaintext; b"" after the server's close_notify."""
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b""
            raw = await self.transport.receive_some()
            if not raw:
                raise EOFError("transport closed")
            self.incoming.write(raw)

    async def recv_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self.recv()
            if not data:
                raise EOFError(f"close_notify after {len(self.buf)} of {n} bytes")
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def recv_until_close(self) -> bytes:
        while data := await self.recv():
            self.buf += data
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        await self.flush()

    async def response(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            data = await self.recv()
            if not data:
                raise EOFError("close_notify before a response")
            self.buf += data
        head, _, _ = bytes(self.buf).partition(b"\r\n\r\n")
        del self.buf[: len(head) + 4]
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        body = b"" if head_only else await self.recv_exactly(int(headers["content-length"]))
        return status, headers, body


def tcp_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Both ends of a loopback TCP connection, as appd's transports are."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return (trio.SocketStream(trio.socket.from_stdlib_socket(server)),
            trio.SocketStream(trio.socket.from_stdlib_socket(client)))


class Conn:
    """A RecordStream (server) and an SslClient over a memory stream pair, or TCP with ``tcp``."""

    def __init__(self, pair: Pair | None = None, *, tcp: bool = False, **stream_kw: Any) -> None:
        self.pair = pair or handshake()
        assert self.pair.state is not None
        server_end: trio.abc.Stream
        client_end: trio.abc.Stream
        server_end, client_end = tcp_stream_pair() if tcp else trio.testing.memory_stream_pair()
        self.client_transport = client_end
        self.mirror = mirror_layer(self.pair.state)
        self.stream = RecordStream(server_end, self.pair.state, initial=self.pair.server.trailing, log=LOG, **stream_kw)
        self.client = SslClient(self.pair, client_end)

    async def serve(self, backend: Backend, **kw: Any) -> None:
        try:
            await serve(self.stream, backend, peer=PEER, log=LOG, **kw)
        finally:
            await self.stream.aclose()

    async def mirror_send(self, data: bytes) -> None:
        await self.client_transport.send_all(data)

    async def mirror_events(self, until: type) -> list[object]:
        """Events the mirror client reads, up to and including the first of type ``until``."""
        events: list[object] = []
        while True:
            ev = self.mirror.next_event()
            if ev is None:
                data = await self.client_transport.receive_some()
                assert data, "transport closed"
                self.mirror.receive_data(data)
                continue
            events.append(ev)
            if isinstance(ev, until):
                return events


# -- echo ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16384, 16385, 1 << 20])
def test_echo_sizes_byte_exact(size: int) -> None:
    payload = os.urandom(size)

    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("echo"))
            await c.client.send(payload)
            assert await c.client.recv_exactly(size) == payload
            await c.client.close_notify()
            assert await c.client.recv_until_close() == b""
        s = c.stream.summary()
        assert s["outcome"] == "clean"
        assert s["bytes_in"] == s["bytes_out"] == size
        assert s["records_in"] == s["records_out"] == -(-size // 16384)

    run(main)


def test_echo_record_for_record_and_empty_record() -> None:
    # The mirror client sends an empty record (Python's ssl never does) and two small ones: the
    # empty one is swallowed, each other one comes back as one record.
    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("echo"))
            rl = c.mirror
            await c.mirror_send(rl.send_application_data(b"") + rl.send_application_data(b"a")
                                + rl.send_application_data(b"bc"))
            events = await c.mirror_events(ApplicationData)
            events += await c.mirror_events(ApplicationData)
            assert events == [ApplicationData(b"a"), ApplicationData(b"bc")]
            await c.mirror_send(rl.send_alert(0, 1))
            assert (await c.mirror_events(CloseNotify))[-1] == CloseNotify()
        assert c.stream.outcome == "clean"

    run(main)


# -- RecordStream semantics ---------------------------------------------------------------------


def test_receive_some_max_bytes_splits_a_record() -> None:
    async def main() -> None:
        c = Conn()
        await c.client.send(b"0123456789")
        assert await c.stream.receive_some(4) == b"0123"
        assert await c.stream.receive_some(4) == b"4567"
        assert await c.stream.receive_some() == b"89"
        with pytest.raises(ValueError):
            await c.stream.receive_some(0)
        await c.stream.aclose()

    run(main)


def test_receive_some_max_bytes_joins_the_records_already_read() -> None:
    async def main() -> None:
        c = Conn()
        for part in (b"one", b"two", b"three"):
            await c.client.send(part)  # a record each
        assert await c.stream.receive_some(1 << 20) == b"onetwothree"
        assert (c.stream.records_in, c.stream.bytes_in) == (3, 11)
        for part in (b"four", b"five"):
            await c.client.send(part)
        assert await c.stream.receive_some() == b"four"  # without max_bytes: one record per call
        assert await c.stream.receive_some(3) == b"fiv"
        assert await c.stream.receive_some(100) == b"e"
        assert c.stream.records_in == 5
        await c.stream.aclose()

    run(main)


def test_cancelled_calls_change_nothing() -> None:
    """Cancellation is seen before anything is sealed or decrypted, buffered input or not."""

    async def main() -> None:
        c = Conn()
        await c.client.send(b"ab")
        await c.client.send(b"cd")
        assert await c.stream.receive_some() == b"ab"  # "cd" is buffered, still sealed
        with trio.CancelScope() as scope:
            scope.cancel()
            await c.stream.receive_some()
        with trio.CancelScope() as scope:
            scope.cancel()
            await c.stream.send_all(b"never")
        assert await c.stream.receive_some() == b"cd"
        await c.stream.send_all(b"after")
        assert await c.client.recv() == b"after"
        await c.stream.aclose()

    run(main)


async def _send_twice(c: Conn, first: bytes, second: bytes | memoryview) -> None:
    """Two send_all calls while the client reads everything; the bytes must arrive exact and in order."""
    async with trio.open_nursery() as n:

        async def read() -> None:
            assert await c.client.recv_exactly(len(first) + len(second)) == first + bytes(second)

        n.start_soon(read)
        await c.stream.send_all(first)
        await c.stream.send_all(second)


def test_bulk_send_all_in_full_batches() -> None:
    """Several full batches in one send_all and across send_all calls, byte exact and in order."""
    payload = os.urandom(3 * 32 * 16384 + 5)

    async def main() -> None:
        c = Conn()
        await _send_twice(c, payload, memoryview(payload))
        assert c.stream.records_out == 2 * (3 * 32 + 1)
        await c.stream.aclose()

    run(main)


def _buffer_bytes(obj: object, seen: set[int] | None = None) -> int:
    """Bytes of the buffers reachable from a stream through its own objects (stream, layer, keys)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, bytes | bytearray | memoryview):
        return len(obj)
    if isinstance(obj, tuple | list):
        return sum(_buffer_bytes(item, seen) for item in obj)
    if type(obj).__module__.split(".")[0] not in ("appd", "shared"):
        return 0  # the transport, the logger, trio's lock: not the stream's buffers
    names = list(getattr(obj, "__dict__", {})) + [n for k in type(obj).__mro__ for n in getattr(k, "__slots__", ())]
    return sum(_buffer_bytes(getattr(obj, name, None), seen) for name in names)


@pytest.mark.parametrize("batches", [1, 2])
def test_idle_stream_holds_no_batch_buffer(batches: int) -> None:
    """A send that ends on an exactly full batch leaves no 512 KiB buffer behind on the idle stream."""
    payload = os.urandom(batches * 32 * 16384)

    async def main() -> None:
        c = Conn()
        await _send_twice(c, payload, payload)  # back to back, as a proxy forwarding full backend reads
        assert _buffer_bytes(c.stream) < 32 * 1024
        await c.stream.aclose()

    run(main)


def test_half_close_send_eof_then_keep_receiving() -> None:
    async def main() -> None:
        c = Conn()
        await c.stream.send_all(b"last words")
        await c.stream.send_eof()
        await c.stream.send_eof()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await c.stream.send_all(b"more")
        assert await c.client.recv_until_close() == b"last words"
        await c.client.send(b"client still talks")  # OpenSSL may write after receiving close_notify
        assert await c.stream.receive_some() == b"client still talks"
        await c.client.close_notify()
        assert await c.stream.receive_some() == b""
        assert await c.stream.receive_some() == b""
        await c.stream.aclose()
        assert c.stream.outcome == "clean"
        with pytest.raises(trio.ClosedResourceError):
            await c.stream.receive_some()

    run(main)


def test_aclose_sends_close_notify_and_wipes_keys() -> None:
    async def main() -> None:
        c = Conn()
        layer = c.stream._layer
        assert layer.write is not None
        await c.stream.aclose()
        assert await c.client.recv() == b""
        assert bytes(layer.write.secret) == bytes(len(layer.write.secret))
        await c.stream.aclose()  # idempotent

    run(main)


def test_state_is_wiped_and_repr_shows_no_secret() -> None:
    pair = handshake()
    assert pair.state is not None
    state = pair.state
    secrets = [bytes(state.read_secret), bytes(state.write_secret)]

    async def main() -> None:
        stream = RecordStream(trio.testing.memory_stream_pair()[0], state)
        assert not any(state.read_secret) and not any(state.write_secret)
        text = repr(stream) + repr(stream.summary()) + repr(stream._layer)
        for secret in secrets:
            assert secret.hex() not in text and secret.hex()[:16] not in text

    run(main)


def test_concurrent_send_all_is_a_busy_error() -> None:
    async def main() -> None:
        a, _b = trio.testing.lockstep_stream_pair()  # no buffering: the first send_all blocks
        pair = handshake()
        assert pair.state is not None
        stream = RecordStream(a, pair.state)
        async with trio.open_nursery() as n:
            n.start_soon(stream.send_all, b"x" * 100)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await stream.send_all(b"y")
            n.cancel_scope.cancel()
        with pytest.raises(trio.BrokenResourceError):  # a send cut in the middle cannot be resumed
            await stream.send_all(b"z")

    run(main)


def test_corrupted_record_sends_bad_record_mac() -> None:
    async def main() -> None:
        c = Conn()
        c.client.obj.write(b"hello")
        record = bytearray(c.client.outgoing.read())
        record[-1] ^= 1
        await c.client_transport.send_all(bytes(record))
        with pytest.raises(trio.BrokenResourceError) as info:
            await c.stream.receive_some()
        assert isinstance(info.value.__cause__, BadRecordMac)
        assert c.stream.alert_sent == AlertDescription.bad_record_mac
        assert c.stream.summary()["alert_sent"] == "bad_record_mac"
        with pytest.raises(ssl.SSLError, match=r"(?i)bad.record.mac"):
            await c.client.recv()
        with pytest.raises(trio.BrokenResourceError):
            await c.stream.send_all(b"no")
        await c.stream.aclose()

    run(main)


def test_corrupted_record_under_serve_propagates() -> None:
    async def main() -> None:
        c = Conn()
        c.client.obj.write(b"hello")
        record = bytearray(c.client.outgoing.read())
        record[7] ^= 0x80
        await c.client_transport.send_all(bytes(record))
        with pytest.raises(trio.BrokenResourceError):
            await c.serve(Backend("echo"))
        assert c.stream.outcome == "alert_sent"

    run(main)


def test_peer_alert() -> None:
    async def main() -> None:
        c = Conn()
        await c.mirror_send(c.mirror.send_alert(AlertDescription.handshake_failure))
        with pytest.raises(trio.BrokenResourceError, match="handshake_failure"):
            await c.stream.receive_some()
        assert c.stream.alert_received == AlertDescription.handshake_failure
        assert c.stream.outcome == "alert_received"
        await c.stream.aclose()

    run(main)


def test_truncation_is_an_error() -> None:
    async def main() -> None:
        c = Conn()
        await c.client.send(b"partial")
        await c.client_transport.aclose()
        assert await c.stream.receive_some() == b"partial"
        with pytest.raises(TruncatedError):
            await c.stream.receive_some()
        assert c.stream.outcome == "truncated"
        await c.stream.aclose()

    run(main)


def test_idle_timeout_sends_close_notify() -> None:
    async def main() -> None:
        c = Conn(idle_timeout=30)
        start = trio.current_time()
        with pytest.raises(IdleTimeout):
            await c.stream.receive_some()
        assert trio.current_time() - start == pytest.approx(30)
        assert await c.client.recv() == b""  # close_notify
        await c.stream.aclose()

    run(main, timeout=1000, clock=trio.testing.MockClock(autojump_threshold=0))


def test_tcp_reads_and_idle_timeout() -> None:
    """Over TCP, data already waiting is read at once, and a read that waits still times out."""
    async def main() -> None:
        c = Conn(tcp=True, idle_timeout=30)
        await c.client.send(b"waiting")
        await trio.sleep(0.5)  # on the mock clock: well within the limit
        assert await c.stream.receive_some() == b"waiting"
        start = trio.current_time()
        with pytest.raises(IdleTimeout):
            await c.stream.receive_some()
        assert trio.current_time() - start == pytest.approx(30)
        assert c.stream.outcome == "idle_timeout"
        assert await c.client.recv() == b""  # close_notify
        await c.stream.aclose()

    run(main, timeout=1000, clock=trio.testing.MockClock(autojump_threshold=0))


def test_each_further_transport_read_yields(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data already waiting is taken without trio's wait machinery, but one receive_some that needs many
    transport reads still lets the other tasks run between them: a peer must not hold the loop."""
    monkeypatch.setattr("tls_privsep.appd.stream.RECEIVE_SIZE", 64)  # one record now takes many reads

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.count = 0
            self.task: trio.lowlevel.Task | None = None

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is self.task:
                self.count += 1

    async def main() -> None:
        c = Conn(tcp=True, idle_timeout=30)
        payload = os.urandom(2000)
        await c.client.send(payload)
        await trio.sleep(0.1)  # all of it waiting in the socket before the read starts
        steps = Steps()
        steps.task = trio.lowlevel.current_task()
        trio.lowlevel.add_instrument(steps)
        try:
            got = await c.stream.receive_some()
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert got == payload
        assert steps.count > 2000 // 64 // 2  # about one step per read, not one for all of them
        await c.stream.aclose()

    run(main)


def test_idle_timeout_wins_over_data_read_late() -> None:
    """Data that waited past the idle limit unread does not save the connection (as before)."""
    async def main() -> None:
        c = Conn(tcp=True, idle_timeout=30)
        await c.client.send(b"too late")
        await trio.sleep(31)
        with pytest.raises(IdleTimeout):
            await c.stream.receive_some()
        assert await c.client.recv() == b""
        await c.stream.aclose()

    run(main, timeout=1000, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("idle_timeout", [None, 30.0])
def test_tcp_reset_is_a_transport_error(idle_timeout: float | None) -> None:
    async def main() -> None:
        c = Conn(tcp=True, idle_timeout=idle_timeout)
        await c.client.send(b"bye")
        sock = c.client_transport.socket  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
        await trio.sleep(0.05)
        assert await c.stream.receive_some() == b"bye"
        with pytest.raises(trio.BrokenResourceError) as info:
            await c.stream.receive_some()
        assert not isinstance(info.value, (TruncatedError, IdleTimeout))
        assert c.stream.outcome == "transport_error"
        await c.stream.aclose()

    run(main)


def test_tcp_transport_closed_under_the_stream() -> None:
    async def main() -> None:
        c = Conn(tcp=True, idle_timeout=30)
        await c.stream.transport.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await c.stream.receive_some()
        assert c.stream.outcome == "transport_closed"
        await c.stream.aclose()

    run(main)


def test_sending_keeps_a_receiver_from_idling() -> None:
    async def main() -> None:
        c = Conn(idle_timeout=10)

        async def talk() -> None:
            for _ in range(5):
                await trio.sleep(6)
                await c.stream.send_all(b"tick")
            await c.client.close_notify()

        async with trio.open_nursery() as n:
            n.start_soon(talk)
            assert await c.stream.receive_some() == b""  # 30 s without input, but never idle
        await c.stream.aclose()

    run(main, timeout=1000, clock=trio.testing.MockClock(autojump_threshold=0))


def test_server_key_update_before_the_usage_limit_ssl_client() -> None:
    payload = os.urandom(200_000)

    async def main() -> None:
        c = Conn(key_update_after=3)
        await c.stream.send_all(payload)
        for i in range(20):
            await c.stream.send_all(b"small %d;" % i)
        got = await c.client.recv_exactly(len(payload))
        assert got == payload
        rest = b"".join(b"small %d;" % i for i in range(20))
        assert await c.client.recv_exactly(len(rest)) == rest
        assert c.stream.key_updates_sent >= 15
        await c.client.send(b"still fine")  # our read direction is untouched
        assert await c.stream.receive_some() == b"still fine"
        await c.stream.aclose()

    run(main)


def test_server_key_update_limit_is_exact() -> None:
    # Mirror client: count what arrives under each write key. The first key already protected the
    # NewSessionTickets, so the very first send starts with a KeyUpdate when the limit is 3.
    async def main() -> None:
        c = Conn(key_update_after=3)
        assert c.pair.state is not None
        await c.stream.send_all(os.urandom(16384 * 7 + 1))
        await c.stream.send_eof()
        events = await c.mirror_events(CloseNotify)
        per_key, run_len = [], 0
        for ev in events:
            if isinstance(ev, KeyUpdated):
                per_key.append(run_len + 1)  # the KeyUpdate record itself is protected by the old key
                run_len = 0
            elif isinstance(ev, ApplicationData):
                run_len += 1
        assert per_key[1:] and all(n == 3 for n in per_key[1:])
        assert c.stream.records_out == 8
        await c.stream.aclose()

    run(main)


def test_client_key_update_is_answered() -> None:
    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("echo"))
            rl = c.mirror
            await c.mirror_send(rl.send_key_update(True) + rl.send_application_data(b"after update"))
            events = await c.mirror_events(ApplicationData)
            assert events == [KeyUpdated(False), ApplicationData(b"after update")]
            await c.mirror_send(rl.send_key_update(False) + rl.send_application_data(b"again"))
            assert await c.mirror_events(ApplicationData) == [ApplicationData(b"again")]
            await c.mirror_send(rl.send_alert(0, 1))
            await c.mirror_events(CloseNotify)
        assert c.stream.key_updates_received == 2 and c.stream.key_updates_sent == 1

    run(main)


def test_trio_half_closeable_stream_conformance() -> None:
    # Two RecordStreams, the second importing the mirror state, pass trio's own stream checks.
    async def make_pair() -> tuple[RecordStream, RecordStream]:
        pair = handshake()
        assert pair.state is not None
        other = mirror_state(pair.state)
        a, b = trio.testing.memory_stream_pair()
        return RecordStream(a, pair.state, initial=pair.server.trailing), RecordStream(b, other)

    async def make_clogged() -> tuple[RecordStream, RecordStream]:
        pair = handshake()
        assert pair.state is not None
        other = mirror_state(pair.state)
        a, b = trio.testing.lockstep_stream_pair()
        return RecordStream(a, pair.state, initial=pair.server.trailing), RecordStream(b, other)

    run(lambda: trio.testing.check_half_closeable_stream(make_pair, make_clogged))


# -- http ---------------------------------------------------------------------------------------


def test_http_keep_alive_two_requests_then_close_notify() -> None:
    async def main() -> None:
        c = Conn(handshake(alpn=("http/1.1",)))
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("http"))
            await c.client.send(b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, body = await c.client.response()
            assert status == 200 and headers["content-type"].startswith("text/plain")
            assert b"request: GET /one HTTP/1.1" in body
            assert b"alpn: http/1.1" in body and b"sni: localhost" in body
            await c.client.send(b"HEAD /two HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head_status, head_headers, _ = await c.client.response(head_only=True)
            assert head_status == 200 and int(head_headers["content-length"]) > 0
            await c.client.send(b"GET /three HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, body = await c.client.response()
            assert b"GET /three" in body and "connection" not in headers
            await c.client.close_notify()
            assert await c.client.recv_until_close() == b""
        assert c.stream.records_out == 3  # one record per answer
        assert c.stream.outcome == "clean"

    run(main)


def test_http_pipelined_body_is_skipped() -> None:
    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("http"))
            await c.client.send(b"POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET /x HTTP\r\n"
                                b"GET /b HTTP/1.1\r\n\r\n")
            assert b"POST /a" in (await c.client.response())[2]
            assert b"GET /b" in (await c.client.response())[2]
            await c.client.close_notify()
            await c.client.recv_until_close()

    run(main)


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n",
     b"GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n"],
)
def test_http_close_after_answer(request_bytes: bytes) -> None:
    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("http"))
            await c.client.send(request_bytes)
            status, headers, _ = await c.client.response()
            assert status == 200 and headers["connection"] == "close"
            assert await c.client.recv_until_close() == b""  # close_notify right after the answer
            await c.client.close_notify()
        assert c.stream.outcome == "clean"

    run(main)


def test_http10_keep_alive() -> None:
    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("http"))
            for _ in range(2):
                await c.client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                status, headers, _ = await c.client.response()
                assert status == 200 and headers["connection"] == "keep-alive"
            await c.client.close_notify()
            await c.client.recv_until_close()

    run(main)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 20000, 431),  # no end of head in sight
        (b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 17000 + b"\r\n\r\n", 431),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS record, not HTTP
        (b"hello there, this is not http\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    ],
)
def test_http_refusals(request_bytes: bytes, status: int) -> None:
    async def main() -> None:
        c = Conn()
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("http"))
            await c.client.send(request_bytes)
            got, headers, _ = await c.client.response()
            assert got == status and headers["connection"] == "close"
            assert await c.client.recv_until_close() == b""
            await c.client.close_notify()

    run(main)


# -- proxy --------------------------------------------------------------------------------------

FIVE_MIB = 5 << 20


def blob(seed: bytes, n: int) -> bytes:
    return hashlib.shake_256(seed).digest(n)


class Backends:
    """A one-connection backend on loopback TCP or a Unix socket."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp

    async def listen(self) -> tuple[trio.SocketListener, Backend]:
        if self.kind == "tcp":
            (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            return listener, Backend("tcp", host="127.0.0.1", port=listener.socket.getsockname()[1])
        path = str(self.tmp / "backend.sock")
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(1)
        return trio.SocketListener(sock), Backend("unix", path=path)


async def _client_sender(client: SslClient, data: bytes, wait: trio.Event | None = None) -> None:
    if wait is not None:
        await wait.wait()
    for off in range(0, len(data), 200_000):
        await client.send(data[off : off + 200_000])
        await trio.sleep(0)
    await client.close_notify()


@pytest.fixture
def tmp_sock_dir() -> Any:
    # AF_UNIX paths are short (108 bytes); pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="tp-") as d:
        yield Path(d)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_proxy_client_closes_first_while_backend_still_sends(kind: str, tmp_sock_dir: Path) -> None:
    up, down = blob(b"up", FIVE_MIB), blob(b"down", FIVE_MIB)

    async def main() -> None:
        listener, backend = await Backends(kind, tmp_sock_dir).listen()
        c = Conn()
        seen: dict[str, Any] = {}

        async def backend_side() -> None:
            conn = await listener.accept()
            await conn.send_all(down[: 1 << 20])
            h = hashlib.sha256()
            while data := await conn.receive_some(65536):
                h.update(data)
            seen["up"] = h.digest()  # EOF: the client's close_notify arrived as a shutdown
            await conn.send_all(down[1 << 20 :])  # ... and we still send
            await conn.aclose()

        async with trio.open_nursery() as n:
            n.start_soon(backend_side)
            n.start_soon(c.serve, backend)
            n.start_soon(_client_sender, c.client, up)
            got = await c.client.recv_until_close()
        await listener.aclose()
        assert seen["up"] == hashlib.sha256(up).digest()
        assert hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
        assert c.stream.outcome == "clean"

    run(main)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_proxy_backend_closes_first_while_client_still_sends(kind: str, tmp_sock_dir: Path) -> None:
    up, down = blob(b"up2", FIVE_MIB), blob(b"down2", FIVE_MIB)

    async def main() -> None:
        listener, backend = await Backends(kind, tmp_sock_dir).listen()
        c = Conn()
        seen: dict[str, bytes] = {}
        server_closed = trio.Event()

        async def backend_side() -> None:
            conn = await listener.accept()
            await conn.send_all(down)
            await conn.send_eof()  # shut down our write side only
            h = hashlib.sha256()
            while data := await conn.receive_some(65536):
                h.update(data)
            seen["up"] = h.digest()
            await conn.aclose()

        async def client_reader() -> None:
            seen["down"] = hashlib.sha256(await c.client.recv_until_close()).digest()
            server_closed.set()

        async with trio.open_nursery() as n:
            n.start_soon(backend_side)
            n.start_soon(c.serve, backend)
            n.start_soon(client_reader)
            n.start_soon(_client_sender, c.client, up, server_closed)  # starts after our close_notify
        await listener.aclose()
        assert seen["down"] == hashlib.sha256(down).digest()
        assert seen["up"] == hashlib.sha256(up).digest()
        assert c.stream.outcome == "clean"

    run(main)


def test_proxy_protocol_v2_header_reaches_backend(tmp_sock_dir: Path) -> None:
    async def main() -> None:
        listener, backend = await Backends("tcp", tmp_sock_dir).listen()
        backend = parse_backend(str(backend), proxy_protocol=True)
        c = Conn(handshake(alpn=("h2", "http/1.1")))
        got: dict[str, bytes] = {}

        async def backend_side() -> None:
            conn = await listener.accept()
            buf = b""
            while len(buf) < 16 or len(buf) < 16 + int.from_bytes(buf[14:16], "big") + 4:
                buf += await conn.receive_some(65536)
            got["all"] = buf
            await conn.aclose()

        async with trio.open_nursery() as n:
            n.start_soon(backend_side)
            n.start_soon(functools.partial(c.serve, backend, local="127.0.0.2:8443"))
            await c.client.send(b"ping")
            assert await c.client.recv_until_close() == b""
            await c.client.close_notify()
        await listener.aclose()
        header = proxy_v2_header(PEER, "127.0.0.2:8443", alpn="h2", sni="localhost", suite=c.stream.suite)
        data = got["all"]
        assert data == header + b"ping"
        assert data[:12] == b"\r\n\r\n\x00\r\nQUIT\n" and data[12:14] == b"\x21\x11"
        assert data[16:24] == bytes([127, 0, 0, 1, 127, 0, 0, 2])
        assert data[24:28] == (40000).to_bytes(2, "big") + (8443).to_bytes(2, "big")
        assert b"\x01\x00\x02h2" in data and b"\x02\x00\x09localhost" in data
        assert b"TLSv1.3" in data and b"TLS_AES_" in data

    run(main)


def test_proxy_v2_header_forms() -> None:
    v6 = proxy_v2_header("[2001:db8::1]:1234", "10.0.0.1:443")
    assert v6[12:14] == b"\x21\x21"
    assert v6[16:32] == bytes.fromhex("20010db8000000000000000000000001")
    assert v6[32:48] == bytes.fromhex("00000000000000000000ffff0a000001")
    local = proxy_v2_header("?", None)
    assert local[12:14] == b"\x20\x00"
    assert int.from_bytes(local[14:16], "big") == len(local) - 16


@pytest.mark.parametrize("spec", ["tcp://127.0.0.1:{port}", "unix:{dir}/absent.sock"])
def test_proxy_backend_refused_closes_cleanly(spec: str, tmp_sock_dir: Path) -> None:
    async def main() -> None:
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        backend = parse_backend(spec.format(port=port, dir=tmp_sock_dir))
        c = Conn()
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as n:
                n.start_soon(c.serve, backend)
                assert await c.client.recv_until_close() == b""  # close_notify, no alert
                await c.client.close_notify()
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["backend unavailable"]
        assert c.stream.alert_sent is None

    run(main)


def test_proxy_backend_reset_sends_alert_not_close_notify(tmp_sock_dir: Path) -> None:
    async def main() -> None:
        listener, backend = await Backends("tcp", tmp_sock_dir).listen()
        c = Conn()

        async def backend_side() -> None:
            conn = await listener.accept()
            await conn.send_all(b"partial answer")
            conn.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await conn.receive_some(10)
            conn.socket.close()  # RST

        async with trio.open_nursery() as n:
            n.start_soon(backend_side)
            n.start_soon(c.serve, backend)
            assert await c.client.recv_exactly(14) == b"partial answer"
            await c.client.send(b"x")
            with pytest.raises(ssl.SSLError, match=r"(?i)internal.error"):
                await c.client.recv()
        await listener.aclose()
        assert c.stream.alert_sent == AlertDescription.internal_error

    run(main)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("echo", Backend("echo")),
        (" http ", Backend("http")),
        ("tcp://127.0.0.1:8080", Backend("tcp", host="127.0.0.1", port=8080)),
        ("tcp://[::1]:9000", Backend("tcp", host="::1", port=9000)),
        ("tcp://backend.internal:80", Backend("tcp", host="backend.internal", port=80)),
        ("unix:/run/app.sock", Backend("unix", path="/run/app.sock")),
        ("unix:///run/app.sock", Backend("unix", path="/run/app.sock")),
    ],
)
def test_parse_backend(spec: str, expected: Backend) -> None:
    parsed = parse_backend(spec)
    assert parsed == expected
    assert parse_backend(str(parsed)) == parsed


@pytest.mark.parametrize(
    "spec",
    ["", "ftp", "tcp://", "tcp://host", "tcp://host:0", "tcp://host:70000", "tcp://::1:80", "tcp://h:80/path",
     "tcp://user@h:80", "unix:", "udp://h:53", "tcp://[::1:80"],
)
def test_parse_backend_errors_are_one_line(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend(spec)
    assert "\n" not in str(info.value) and spec.strip() in str(info.value)


def test_proxy_protocol_only_for_proxies() -> None:
    with pytest.raises(ConfigError):
        parse_backend("echo", proxy_protocol=True)
    assert parse_backend("unix:/x", proxy_protocol=True).proxy_protocol


# -- TLS 1.2 ------------------------------------------------------------------------------------------
# No handshake here (secured's TLS 1.2 engine has its own tests against Python's ssl): a state as secured
# exports it after both Finished messages, and the mirror layer as the client.

SUITES12_IDS = sorted(SUITES12)


def key_material(suite: int, seed: int) -> bytearray:
    return bytearray((seed + 3 * i) % 256 for i in range(SUITES12[suite].key_material_len))


def state12(suite: int = 0xC02F, write_seq: int = 1) -> TrafficState:
    return TrafficState(suite, key_material(suite, 1), key_material(suite, 2), read_seq=1, write_seq=write_seq,
                        records_protected=write_seq, alpn="http/1.1", sni="localhost", version=TLS12)


class Conn12(Conn):
    """A RecordStream over an imported TLS 1.2 state, and the mirror layer as its client."""

    def __init__(self, state: TrafficState | None = None, *, log: Any = LOG, lockstep: bool = False,
                 **stream_kw: Any) -> None:
        state = state or state12()
        self.state = TrafficState(state.suite, bytearray(state.read_secret), bytearray(state.write_secret),
                                  read_seq=state.read_seq, write_seq=state.write_seq, version=state.version)
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        server_end, client_end = pair()
        self.client_transport = client_end
        self.mirror = mirror_layer(state)
        self.stream = RecordStream(server_end, state, log=log, **stream_kw)

    def server_protection(self, seq: int) -> Tls12Protection:
        """A fresh copy of the stream's write protection at ``seq``, to build expected bytes."""
        return Tls12Protection(self.state.suite, self.state.write_secret, seq)

    async def receive_raw(self) -> bytes:
        return bytes(await self.client_transport.receive_some())

    async def serve_until_broken(self, broken: list[trio.BrokenResourceError]) -> None:
        """:meth:`serve`, keeping the break the test expects instead of failing the nursery with it."""
        try:
            await self.serve(Backend("echo"))
        except trio.BrokenResourceError as exc:
            broken.append(exc)


async def echo_all(c: Conn12, payload: bytes) -> None:
    await c.mirror_send(c.mirror.send_application_data(payload))
    got = b""
    while len(got) < len(payload):
        events = await c.mirror_events(ApplicationData)
        got += b"".join(e.data for e in events if isinstance(e, ApplicationData))
    assert got == payload


@pytest.mark.parametrize("suite", SUITES12_IDS)
def test_tls12_echo_through_an_imported_state(suite: int) -> None:
    async def main() -> None:
        c = Conn12(state12(suite))
        assert c.stream.tls_version == "TLSv1.2" and c.stream.suite_name == SUITES12[suite].name
        async with trio.open_nursery() as n:
            n.start_soon(c.serve, Backend("echo"))
            for size in (1, 16384, 16385, 100_000):
                await echo_all(c, os.urandom(size))
            await c.mirror_send(c.mirror.send_alert(AlertDescription.close_notify, 1))
            assert (await c.mirror_events(CloseNotify))[-1] == CloseNotify()
        summary = c.stream.summary()
        assert summary["outcome"] == "clean" and summary["version"] == "TLSv1.2"
        assert summary["bytes_in"] == summary["bytes_out"] == 1 + 16384 + 16385 + 100_000

    run(main)


def test_tls12_first_record_on_the_wire_is_byte_exact() -> None:
    async def main() -> None:
        c = Conn12(state12(0xC030))
        await c.stream.send_all(b"hello")
        assert await c.receive_raw() == c.server_protection(1).seal(23, b"hello")
        await c.stream.aclose()

    run(main)


def test_tls12_renegotiation_refused_with_a_warning_then_data_flows() -> None:
    async def main() -> None:
        c = Conn12(log=LOG.bind(conn=7))
        hello = b"\x01\x00\x01\x00" + bytes(256)  # a ClientHello, as far as the record layer is concerned
        broken: list[trio.BrokenResourceError] = []
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as n:
                n.start_soon(c.serve_until_broken, broken)
                await c.mirror_send(c.mirror.send_handshake(hello))
                warning = await c.receive_raw()
                assert warning == c.server_protection(1).seal(21, b"\x01\x64")  # warning, no_renegotiation
                c.mirror.receive_data(warning)  # the client's layer ignores a warning
                await echo_all(c, b"still talking")
                assert c.stream.renegotiations_refused == 1
                await c.mirror_send(c.mirror.send_handshake(hello))  # a second attempt is fatal
                with pytest.raises(AlertFrom) as info:
                    await c.mirror_events(CloseNotify)
                assert info.value.raw_description == AlertDescription.unexpected_message
        refused = [e for e in logs if e["event"] == "renegotiation refused"]
        assert len(refused) == 1 and refused[0]["conn"] == 7
        assert c.stream.alert_sent == AlertDescription.unexpected_message and len(broken) == 1
        assert c.stream.summary()["renegotiations_refused"] == 1

    run(main)


def test_tls12_write_key_exhausted_closes_with_close_notify() -> None:
    # key_update_after=4: the Finished took seq 0, so seqs 1 and 2 carry data and seq 3 the close_notify.
    async def main() -> None:
        c = Conn12(key_update_after=4, log=LOG.bind(conn=9))
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(WriteKeyExhausted):
                await c.stream.send_all(bytes(3 * 16384))
            with pytest.raises(trio.BrokenResourceError):
                await c.stream.send_all(b"more")
            await c.stream.aclose()  # adds nothing after the close_notify
        events: list[object] = []
        while (data := await c.client_transport.receive_some()):
            c.mirror.receive_data(data)
            while (event := c.mirror.next_event()) is not None:
                events.append(event)
        assert events == [ApplicationData(bytes(16384)), ApplicationData(bytes(16384)), CloseNotify()]
        assert c.stream.outcome == "write_key_exhausted" and c.stream.eof_sent
        assert (c.stream.records_out, c.stream.bytes_out) == (2, 2 * 16384)
        lines = [e for e in logs if "usage limit" in e["event"]]
        assert len(lines) == 1 and lines[0]["conn"] == 9 and "close_notify" in lines[0]["event"]
        assert "tls 1.2 write key" in lines[0]["event"]

    run(main)


def test_tls12_write_key_exhausted_under_serve() -> None:
    async def main() -> None:
        c = Conn12(key_update_after=3)
        broken: list[trio.BrokenResourceError] = []
        async with trio.open_nursery() as n:
            n.start_soon(c.serve_until_broken, broken)
            await c.mirror_send(c.mirror.send_application_data(b"one") + c.mirror.send_application_data(b"two"))
            events = await c.mirror_events(CloseNotify)
            assert events == [ApplicationData(b"one"), CloseNotify()]
        assert len(broken) == 1 and isinstance(broken[0], WriteKeyExhausted)
        assert c.stream.outcome == "write_key_exhausted"

    run(main)


def test_tls12_renegotiation_at_the_keys_last_record_closes() -> None:
    async def main() -> None:
        c = Conn12(key_update_after=3)
        await c.stream.send_all(b"x")  # seq 1; seq 2 must be the close_notify
        await c.mirror_send(c.mirror.send_handshake(b"\x01\x00\x00\x01z"))
        with pytest.raises(WriteKeyExhausted):
            await c.stream.receive_some()
        await c.stream.aclose()
        while data := await c.client_transport.receive_some():
            c.mirror.receive_data(data)
        assert [c.mirror.next_event(), c.mirror.next_event()] == [ApplicationData(b"x"), CloseNotify()]

    run(main)


def test_tls12_last_record_spent_by_a_receive_while_a_send_is_blocked() -> None:
    """The close_notify sealed by the receiving task waits for the blocked sender's record, then goes out."""
    async def main() -> None:
        c = Conn12(key_update_after=3, lockstep=True)  # seq 1 for "x", seq 2 for the close_notify
        outcomes: list[BaseException] = []

        async def expect_exhausted(call: Callable[[], Awaitable[object]]) -> None:
            try:
                await call()
            except WriteKeyExhausted as exc:
                outcomes.append(exc)

        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as n:
                n.start_soon(expect_exhausted, functools.partial(c.stream.send_all, b"x"))
                await trio.testing.wait_all_tasks_blocked()  # the sender holds the lock, its write blocked
                n.start_soon(expect_exhausted, c.stream.receive_some)
                await c.client_transport.send_all(c.mirror.send_handshake(b"\x01\x00\x00\x01z"))
                events: list[object] = []
                while CloseNotify() not in events:  # the client reads, and so lets each blocked write finish
                    c.mirror.receive_data(await c.client_transport.receive_some())
                    while (event := c.mirror.next_event()) is not None:
                        events.append(event)
        assert events == [ApplicationData(b"x"), CloseNotify()]
        assert len(outcomes) == 2 and c.stream.outcome == "write_key_exhausted"
        assert len([e for e in logs if "usage limit" in e["event"]]) == 1
        await c.stream.aclose()

    run(main)


def test_proxy_v2_header_names_tls12() -> None:
    header = proxy_v2_header("127.0.0.1:1", "127.0.0.1:2", suite=0xCCA8, version=TLS12)
    assert b"TLSv1.2" in header and b"ECDHE-RSA-CHACHA20-POLY1305" in header
    assert b"TLSv1.3" in proxy_v2_header("127.0.0.1:1", "127.0.0.1:2", suite=0x1301)
    unknown = proxy_v2_header("127.0.0.1:1", "127.0.0.1:2", suite=0xC027, version=TLS12)
    assert b"TLSv1.2" in unknown and b"0xc027" not in unknown  # no cipher TLV for a suite we do not name


# -- the connection line ------------------------------------------------------------------------------


class FakeHandshake:
    """secured's answer to the first chunk: done, with ``state``."""

    def __init__(self, state: TrafficState) -> None:
        self.state = state

    @contextlib.contextmanager
    def waiting_for_client(self) -> Any:
        with trio.CancelScope() as scope:
            yield scope

    async def step(self, data: bytes) -> Step:
        await trio.lowlevel.checkpoint()
        first = 5 + int.from_bytes(data[3:5], "big")  # the handshake "ends" with the first record
        return Step(data=b"", consumed=first, state=self.state)


class FakeLink:
    def __init__(self, state: TrafficState) -> None:
        self.state = state

    @contextlib.asynccontextmanager
    async def handshake(self, peer: str) -> Any:
        yield FakeHandshake(self.state)


@pytest.mark.parametrize(("version", "label"), [(TLS12, "TLSv1.2"), (0x0304, "TLSv1.3")])
def test_connection_line_names_the_version(version: int, label: str) -> None:
    state = state12() if version == TLS12 else TrafficState(0x1301, bytearray(32), bytearray(32), version=version)
    mirror = mirror_layer(state)

    async def main() -> None:
        server, client = tcp_stream_pair()
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as n:
                n.start_soon(session.handle, server, FakeLink(state), Backend("echo"), session.Limits(), LOG)
                # The first whole record goes to "secured", which is done at once; the rest is appd's.
                await client.send_all(b"\x16\x03\x01\x00\x01\x01" + mirror.send_application_data(b"ping"))
                got = await client.receive_some()
                mirror.receive_data(got)
                assert mirror.next_event() == ApplicationData(b"ping")
                await client.send_all(mirror.send_alert(AlertDescription.close_notify, 1))
                while await client.receive_some():
                    pass
                await client.aclose()
        line = next(e for e in logs if e["event"] == "connection")
        assert line["version"] == label and line["outcome"] == "closed"
        assert line["suite"] == f"{state.suite:#06x}" and line["bytes_in"] == line["bytes_out"] == 4

    run(main)


def test_connection_line_after_the_write_key_is_spent() -> None:
    state = state12()
    mirror = mirror_layer(state)

    async def main() -> None:
        server, client = tcp_stream_pair()
        limits = session.Limits(key_update_after=3)
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as n:
                n.start_soon(session.handle, server, FakeLink(state), Backend("echo"), limits, LOG)
                await client.send_all(b"\x16\x03\x01\x00\x01\x01" + mirror.send_application_data(b"a")
                                      + mirror.send_application_data(b"b"))
                while await client.receive_some():
                    pass
                await client.aclose()
        line = next(e for e in logs if e["event"] == "connection")
        assert (line["version"], line["outcome"]) == ("TLSv1.2", "write_key_exhausted")

    run(main)

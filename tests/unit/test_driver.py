"""secured's per-channel driver, without sockets: channel messages in, channel messages out.

A real client (Python's ssl over memory BIOs) talks to the driver as appd would relay it; the blob
that comes back opens to a state that carries data both ways.
"""

from __future__ import annotations

import contextlib
import os
import ssl

import pytest
import structlog

from tests.inmemory import client_context, server_config
from tls_privsep.secured.driver import BUSY_ALERT, ChannelDriver, Limits, Stats
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared import channel as ch
from tls_privsep.shared.blob import BlobOpener, BlobSealer
from tls_privsep.shared.errors import ChannelError
from tls_privsep.shared.preload import InstallUnreadable
from tls_privsep.shared.record import RecordLayer
from tls_privsep.shared.record.events import ApplicationData

KEY, CHANNEL = os.urandom(32), os.urandom(16)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def driver(limits: Limits | None = None, stats: Stats | None = None, clock: Clock | None = None) -> ChannelDriver:
    config = server_config()
    return ChannelDriver(lambda: config, BlobSealer(KEY, CHANNEL), limits or Limits(), stats or Stats(),
                         structlog.get_logger(), clock=clock or Clock())


def client() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls, incoming, outgoing


def test_a_handshake_ends_in_done_with_a_blob_that_carries_data() -> None:
    stats = Stats()
    d = driver(stats=stats)
    tls, incoming, outgoing = client()
    (answer,) = d.receive(ch.Open(1, "198.51.100.7:4711", outgoing.read()))
    assert isinstance(answer, ch.Hs) and answer.data  # ServerHello ... Finished
    incoming.write(answer.data)
    tls.do_handshake()
    finished = outgoing.read()
    tls.write(b"early bytes")  # right behind the Finished: they belong to appd, not to secured
    flight = finished + outgoing.read()
    (done,) = d.receive(ch.Hs(1, flight, 0))
    assert isinstance(done, ch.Done) and done.conn == 1
    assert done.consumed == len(finished)
    assert stats.handshakes == 1 and stats.in_flight == 0 and d.in_flight == 0
    records = RecordLayer.from_traffic_state(BlobOpener(KEY, CHANNEL).open(done.blob, 1))
    records.receive_data(flight[done.consumed:])
    assert records.next_event() == ApplicationData(b"early bytes")
    incoming.write(done.data + records.send_application_data(b"from appd"))  # the tickets, then data
    assert tls.read(100) == b"from appd"


def test_a_bad_client_hello_is_fail_with_the_alert() -> None:
    stats = Stats()
    d = driver(stats=stats)
    (answer,) = d.receive(ch.Open(1, "peer", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
    assert isinstance(answer, ch.Fail) and answer.reason == "decode_error"
    assert answer.data[:1] == b"\x15"  # a plaintext alert record for the client
    assert stats.failures == 1 and stats.by_reason == {"decode_error": 1} and stats.in_flight == 0


def test_a_full_channel_refuses_with_busy() -> None:
    stats = Stats()
    d = driver(Limits(max_handshakes=1), stats)
    _, _, first = client()
    _, _, second = client()
    assert isinstance(d.receive(ch.Open(1, "a", first.read()))[0], ch.Hs)
    (refused,) = d.receive(ch.Open(2, "b", second.read()))
    assert refused == ch.Fail(2, BUSY_ALERT, "busy")
    assert stats.by_reason == {"busy": 1} and stats.in_flight == 1


def test_an_old_handshake_expires_and_abort_forgets_one() -> None:
    clock, stats = Clock(), Stats()
    d = driver(Limits(handshake_timeout=10.0), stats, clock)
    _, _, one = client()
    _, _, two = client()
    d.receive(ch.Open(1, "a", one.read()))
    clock.now += 5
    d.receive(ch.Open(2, "b", two.read()))
    clock.now += 6  # 11 s for the first, 6 s for the second
    assert d.expire() == [ch.Fail(1, b"", "timeout")]
    assert d.receive(ch.Abort(2)) == []
    assert d.in_flight == 0 and stats.in_flight == 0 and stats.by_reason == {"timeout": 1}


def test_hs_for_a_connection_never_opened_ends_the_channel() -> None:
    with pytest.raises(ChannelError) as caught:
        driver().receive(ch.Hs(7, b"x", 0))
    assert caught.value.reason == "unknown_conn"


def test_an_install_out_of_reach_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A late import that cannot read the install fails every handshake alike: it must end secured (one line,
    status 77) rather than be answered as internal_error, handshake after handshake."""
    def unreadable(self: ServerHandshake, data: bytes) -> None:
        raise InstallUnreadable("cannot read /root as user nobody (Permission denied): install where that user can read it")

    monkeypatch.setattr(ServerHandshake, "receive_data", unreadable)
    _, _, hello = client()
    with pytest.raises(InstallUnreadable):
        driver().receive(ch.Open(1, "peer", hello.read()))


def test_closing_the_channel_ends_every_handshake_on_it() -> None:
    stats = Stats()
    d = driver(stats=stats)
    for conn in (1, 2):
        _, _, hello = client()
        d.receive(ch.Open(conn, "p", hello.read()))
    assert stats.in_flight == 2
    d.close()
    assert stats.in_flight == 0 and d.in_flight == 0


def test_the_shell_counts_a_batch_before_its_first_send_waits() -> None:
    """The deadline fails two connections at once and the first fail has to wait for room on the socket: the
    order checker has already retired both, so appd's hs for the second (crossing its fail) is dropped as
    crossing instead of reaching the driver, which no longer knows it, and tearing the channel down."""
    import trio
    import trio.testing

    from tls_privsep.secured.daemon import _Channel

    class FullSocket:
        def __init__(self) -> None:
            self.room = trio.Event()
            self.sent: list[bytes] = []

        async def send(self, make: object) -> None:
            await self.room.wait()
            self.sent.append(make())  # type: ignore[operator]

    async def main() -> None:
        dg = FullSocket()
        chan = _Channel(None, dg, structlog.get_logger())  # type: ignore[arg-type]
        chan.state.hello_sent = chan.state.hello_received = True
        for conn in (1, 2):
            assert chan.state.receive(ch.Open(conn, "p", b"hello"))
            chan.state.send(ch.Hs(conn, b"flight", 5))
            assert chan.state.receive(ch.Hs(conn, b"finished", 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chan.send, [ch.Fail(1, b"", "timeout"), ch.Fail(2, b"", "timeout")])
            await trio.testing.wait_all_tasks_blocked()
            assert dg.sent == []  # the first fail waits for room
            assert chan.state.receive(ch.Hs(2, b"late", 0)) is False  # crossing: dropped, not an unknown conn
            dg.room.set()
        assert [ch.decode(d) for d in dg.sent] == [ch.Fail(1, b"", "timeout"), ch.Fail(2, b"", "timeout")]

    trio.run(main)

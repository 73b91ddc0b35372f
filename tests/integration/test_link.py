"""appd's channel link against a scripted secured, for races a real secured makes rare."""

from __future__ import annotations

import socket

import structlog
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tls_privsep.appd.link import SecuredLink, SecuredUnavailable, Step, fd_connector
from tls_privsep.shared import channel as ch

CLIENT_HELLO = b"\x16\x03\x01\x00\x00"


async def _linked(nursery: trio.Nursery) -> tuple[SecuredLink, trio.socket.SocketType]:
    """A link running in ``nursery`` on one end of a socketpair, hellos exchanged; the other end is the
    test's scripted secured (one channel only: the link cannot reconnect)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs = trio.socket.from_stdlib_socket(b)
    link = SecuredLink(fd_connector(a.fileno()), structlog.get_logger())
    await theirs.send(ch.make_hello(X25519PrivateKey.generate(), "secured").encode())
    with a:  # the link works on its own duplicate of this descriptor
        await nursery.start(link.run)
    await theirs.recv(ch.MAX_MESSAGE + 1)  # appd's hello
    return link, theirs


def test_fail_arriving_while_a_step_waits_for_the_lock() -> None:
    """secured times a connection out while appd's next hs waits to be sent (queued behind a send that
    waits for room): the step gets the fail, the channel stays up, and the next connection works (this
    used to close the socket under the reader)."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            link, theirs = await _linked(nursery)
            with trio.fail_after(5):
                async with link.handshake("peer") as hs:
                    result = {}

                    async def first() -> None:
                        result["first"] = await hs.step(CLIENT_HELLO)

                    nursery.start_soon(first)
                    opened = ch.decode(await theirs.recv(ch.MAX_MESSAGE + 1))
                    assert isinstance(opened, ch.Open) and opened.data == CLIENT_HELLO
                    await theirs.send(ch.Hs(opened.conn, b"flight", len(CLIENT_HELLO)).encode())
                    while "first" not in result:
                        await trio.sleep(0.01)
                    assert result["first"].data == b"flight"

                    async def step() -> None:
                        result["step"] = await hs.step(b"\x16\x03\x03\x00\x00")

                    assert link._dg is not None
                    async with link._dg._full:  # as if a send waited for room: the step registers, queues here
                        nursery.start_soon(step)
                        await trio.sleep(0.05)
                        await theirs.send(ch.Fail(opened.conn, b"", "timeout").encode())
                        while link.is_waiting(opened.conn):
                            await trio.sleep(0.01)
                    while "step" not in result:
                        await trio.sleep(0.01)
                    assert result["step"].failure == "timeout"
                assert link.is_up
                async with link.handshake("next") as hs2:
                    nursery.start_soon(hs2.step, CLIENT_HELLO)
                    nxt = ch.decode(await theirs.recv(ch.MAX_MESSAGE + 1))
                    assert isinstance(nxt, ch.Open) and nxt.conn == opened.conn + 1 and nxt.peer == "next"
                    await theirs.send(ch.Fail(nxt.conn, b"", "busy").encode())
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_open_queued_when_the_channel_is_lost_leaves_nothing_behind() -> None:
    """A connection's open waits its turn (behind a send waiting for room) while secured goes away: the step
    fails with SecuredUnavailable, and no entry of the lost channel stays in the link's tables, where the
    next channel's connection with the same id would find it."""

    async def main() -> None:
        outcome: list[str] = []
        async with trio.open_nursery() as nursery:
            link, theirs = await _linked(nursery)
            dg = link._dg
            assert dg is not None

            async def connection() -> None:
                async with link.handshake("peer") as hs:
                    try:
                        await hs.step(CLIENT_HELLO)
                        outcome.append("answered")
                    except SecuredUnavailable:
                        outcome.append("unavailable")

            with trio.fail_after(5):
                async with dg._full:  # as if a send waited for room: the open queues behind it
                    nursery.start_soon(connection)
                    await trio.sleep(0.05)
                    theirs.close()  # secured goes away
                    while link.is_up:
                        await trio.sleep(0.01)
                while not outcome:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert outcome == ["unavailable"]
        assert link.connections == 0

    trio.run(main)


def test_a_step_cancelled_with_its_answer_unread_still_aborts_the_connection() -> None:
    """appd's deadline cancels a step just as secured's hs answer arrives (both before the step task runs
    again): the connection is still open in secured, with its handshake secrets, so leaving the handshake
    must abort it."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            link, theirs = await _linked(nursery)
            with trio.fail_after(5):
                scope = trio.CancelScope()

                async def connection() -> None:
                    async with link.handshake("peer") as hs:
                        delivered = hs.deliver

                        def cancel_then_deliver(step: Step) -> None:
                            scope.cancel()  # the deadline fired; the step task has not run since
                            delivered(step)

                        hs.deliver = cancel_then_deliver  # type: ignore[method-assign]
                        with scope:
                            await hs.step(CLIENT_HELLO)
                            await trio.sleep_forever()

                nursery.start_soon(connection)
                opened = ch.decode(await theirs.recv(ch.MAX_MESSAGE + 1))
                assert isinstance(opened, ch.Open)
                await theirs.send(ch.Hs(opened.conn, b"flight", len(CLIENT_HELLO)).encode())
                after = ch.decode(await theirs.recv(ch.MAX_MESSAGE + 1))
                assert after == ch.Abort(opened.conn)
                assert link.connections == 0
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_an_unasked_fail_right_behind_an_answer_is_kept_for_the_next_step() -> None:
    """secured answers an hs and gives up on the connection unasked right after (its deadline): the step gets
    the flight, and the next step the fail; neither overwrites the other."""

    async def one() -> list[tuple[bytes, str | None]]:
        seen: list[tuple[bytes, str | None]] = []
        async with trio.open_nursery() as nursery:
            link, theirs = await _linked(nursery)
            with trio.fail_after(5):
                async with link.handshake("peer") as hs:
                    answered = trio.Event()

                    async def first() -> None:
                        step = await hs.step(CLIENT_HELLO)
                        seen.append((step.data, step.failure))
                        answered.set()

                    nursery.start_soon(first)
                    opened = ch.decode(await theirs.recv(ch.MAX_MESSAGE + 1))
                    assert isinstance(opened, ch.Open)
                    await theirs.send(ch.Hs(opened.conn, b"flight", len(CLIENT_HELLO)).encode())
                    await theirs.send(ch.Fail(opened.conn, b"alert", "timeout").encode())
                    await answered.wait()
                    with hs.waiting_for_client() as waiting:
                        await trio.sleep(1)  # the client is slow; the unasked fail ends this wait at once
                    assert waiting.cancelled_caught
                    step = await hs.step(b"")
                    seen.append((step.data, step.failure))
            nursery.cancel_scope.cancel()
        return seen

    for _ in range(20):
        assert trio.run(one) == [(b"flight", None), (b"alert", "timeout")]

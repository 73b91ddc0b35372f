"""shared.dgram, the channel's transport: order, no lost datagram, cancellation, and a last word that never waits."""

from __future__ import annotations

import random
import socket

import trio

from tls_privsep.shared.dgram import Datagrams


def _pair(bufsize: int = 4096) -> tuple[Datagrams, Datagrams]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)  # fills after a few datagrams
    return Datagrams(a), Datagrams(b)


def _fill(dg: Datagrams) -> None:
    while dg.send_nowait(b"f" * 512):
        pass


def test_order_kept_and_nothing_counted_is_lost_under_a_full_socket() -> None:
    """Many senders, a socket that is mostly full, deadlines firing at random: every datagram that was
    counted (``make`` ran) arrives, in the order ``make`` ran."""

    async def main() -> None:
        tx, rx = _pair()
        counted: list[int] = []
        received: list[int] = []
        rng = random.Random(7)

        async def sender(i: int) -> None:
            def make() -> bytes:
                counted.append(i)
                return i.to_bytes(4, "big") + bytes(300)

            with trio.move_on_after(rng.uniform(0, 0.05)):
                await tx.send(make, shield=True)

        async def reader() -> None:
            await trio.sleep(0.02)  # let the socket fill and senders queue
            while True:
                data = await rx.recv(1024)
                received.append(int.from_bytes(data[:4], "big"))
                await trio.sleep(0.001 if rng.random() < 0.3 else 0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            async with trio.open_nursery() as senders:
                for i in range(300):
                    senders.start_soon(sender, i)
            with trio.fail_after(10):
                while len(received) < len(counted):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert 0 < len(counted) <= 300
        assert received == counted

    trio.run(main)


def test_recv_stops_for_a_cancel_while_datagrams_keep_coming() -> None:
    async def main() -> None:
        tx, rx = _pair(1 << 20)
        for _ in range(50):
            assert tx.send_nowait(b"x")
        with trio.CancelScope() as scope:
            scope.cancel()
            await rx.recv(100)
        assert scope.cancelled_caught
        assert await rx.recv(100) == b"x"  # nothing was taken by the cancelled call

    trio.run(main)


def test_a_cancelled_send_never_runs_make() -> None:
    async def main() -> None:
        tx, _rx = _pair()
        ran = []
        with trio.CancelScope() as scope:
            scope.cancel()
            await tx.send(lambda: ran.append(1) or b"x")
        assert scope.cancelled_caught and ran == []

    trio.run(main)


def test_last_word_does_not_wait_behind_a_stuck_sender() -> None:
    """A sender waits for room that never comes (the peer reads nothing): a channel error on teardown
    must neither wait nor raise, and closing wakes the stuck sender."""

    async def main() -> None:
        tx, _rx = _pair()
        _fill(tx)
        outcome: list[str] = []

        async def stuck() -> None:
            try:
                await tx.send(lambda: b"y" * 512, shield=True)
                outcome.append("sent")
            except trio.ClosedResourceError:
                outcome.append("closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            await trio.sleep(0.05)
            with trio.fail_after(1):
                assert tx.send_nowait(b"error") is False
            tx.close()
        assert outcome == ["closed"]

    trio.run(main)

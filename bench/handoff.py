"""Cost of the handoff per connection: channel round trips + seal + import, in µs of CPU.

What privilege separation adds to a handshake, measured in one process so both ends count:
appd's Open (with the ClientHello) and Hs, answered by Hs and Done, over a real SEQPACKET
socketpair with the daemons' own transport (shared.dgram) and order checker on both ends, with
handshake-sized payloads; secured sealing the blob and the fallback alert; appd opening the blob
and deriving the record keys. The engine's own handshake CPU (bench/engine.py) is the
denominator for the "handoff / handshake" ratio.

    .venv/bin/python -m bench.handoff [--n 2000]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Awaitable, Callable

import trio

from tls_privsep.shared import channel as ch
from tls_privsep.shared.blob import BlobSealer
from tls_privsep.shared.dgram import Datagrams
from tls_privsep.shared.record import ContentType, Protection, RecordLayer
from tls_privsep.shared.state import TrafficState

CH, FLIGHT, FIN, TICKETS = os.urandom(517), os.urandom(1400), os.urandom(58), os.urandom(480)


async def _hello(dg: Datagrams, role: ch.Role) -> tuple[ch.ChannelState, ch.ChannelKeys]:
    exchange = ch.HelloExchange(role)
    await dg.send(lambda: exchange.datagram)
    keys = exchange.finish(await dg.recv(ch.MAX_MESSAGE + 1))
    return exchange.state, keys


def _state() -> TrafficState:
    return TrafficState(suite=0x1301, read_secret=bytearray(os.urandom(32)), write_secret=bytearray(os.urandom(32)),
                        write_seq=1, records_protected=1, created=int(time.time()))


async def run(n: int) -> tuple[float, float, float]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    appd, secured = Datagrams(a), Datagrams(b)
    seal_t = import_t = 0.0

    def sender(dg: Datagrams, state: ch.ChannelState) -> Callable[[ch.Message], Awaitable[None]]:
        async def send(msg: ch.Message) -> None:  # as the daemons do: counted, encoded, sent in one turn
            def make() -> bytes:
                state.send(msg)
                return msg.encode()

            await dg.send(make)

        return send

    async def receive(dg: Datagrams, state: ch.ChannelState) -> ch.Message:
        msg = ch.decode(await dg.recv(ch.MAX_MESSAGE + 1))
        assert state.receive(msg)
        return msg

    async def serve(state: ch.ChannelState, sealer: BlobSealer) -> None:
        nonlocal seal_t
        send = sender(secured, state)
        while True:
            msg = await receive(secured, state)
            assert isinstance(msg, ch.Open | ch.Hs)
            if isinstance(msg, ch.Open):
                await send(ch.Hs(msg.conn, FLIGHT, len(msg.data)))
                continue
            t0 = time.thread_time()
            tstate = _state()
            blob = sealer.seal(tstate, msg.conn)
            alert = Protection(tstate.suite, tstate.write_secret, tstate.write_seq).seal(ContentType.alert, b"\x02\x50")
            tstate.wipe()
            seal_t += time.thread_time() - t0
            await send(ch.Done(msg.conn, TICKETS, len(msg.data), blob, alert))

    async with trio.open_nursery() as nursery:
        results: dict[str, tuple[ch.ChannelState, ch.ChannelKeys]] = {}

        async def hello(dg: Datagrams, role: ch.Role) -> None:
            results[role] = await _hello(dg, role)

        async with trio.open_nursery() as hellos:
            hellos.start_soon(hello, appd, "appd")
            hellos.start_soon(hello, secured, "secured")
        state_a, keys_a = results["appd"]
        state_s, keys_s = results["secured"]
        opener = keys_a.opener()
        nursery.start_soon(serve, state_s, keys_s.sealer())
        send = sender(appd, state_a)
        t0 = time.thread_time()
        for _ in range(n):
            conn = state_a.next_conn_id()
            await send(ch.Open(conn, "127.0.0.1:40000", CH))
            assert isinstance(await receive(appd, state_a), ch.Hs)
            await send(ch.Hs(conn, FIN, 0))
            done = await receive(appd, state_a)
            assert isinstance(done, ch.Done)
            t1 = time.thread_time()
            state = opener.open(done.blob, conn)
            RecordLayer.from_traffic_state(state)  # appd's import
            import_t += time.thread_time() - t1
        total = time.thread_time() - t0
        nursery.cancel_scope.cancel()
    return total / n * 1e6, seal_t / n * 1e6, import_t / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    trio.run(run, 200)
    total, seal, imp = trio.run(run, args.n)
    print(f"handoff per connection: {total:.0f} µs CPU (seal {seal:.0f} µs, import {imp:.0f} µs, "
          f"channel messages and syscalls {total - seal - imp:.0f} µs)")


if __name__ == "__main__":
    main()

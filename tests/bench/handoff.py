"""Cost of the handoff per connection: channel round trips + seal + import, in µs of CPU.

What privilege separation adds to a handshake, measured in one process so both ends count:
appd's Open (with the ClientHello) and Hs, answered by Hs and Done, over a real SEQPACKET socketpair (trio on both ends),
with handshake-sized payloads; secured sealing the blob and the fallback alert; appd opening the
blob and deriving the record keys. The engine's own handshake CPU (tests/bench/engine.py) is the
denominator for the "handoff / handshake" ratio.

    .venv/bin/python tests/bench/handoff.py [--n 2000]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import channel as ch
from shared.record import ContentType, Protection, RecordLayer
from shared.state import TrafficState

CH, FLIGHT, FIN, TICKETS = os.urandom(517), os.urandom(1400), os.urandom(58), os.urandom(480)


def _keys() -> tuple[ch.ChannelKeys, ch.ChannelKeys]:
    pa, ps = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ha, hs = ch.make_hello(pa, "appd").encode(), ch.make_hello(ps, "secured").encode()
    return ch.ChannelKeys.derive(pa, ha, hs), ch.ChannelKeys.derive(ps, hs, ha)


def _state() -> TrafficState:
    return TrafficState(suite=0x1301, read_secret=bytearray(os.urandom(32)), write_secret=bytearray(os.urandom(32)),
                        write_seq=1, records_protected=1, created=int(time.time()))


async def run(n: int) -> tuple[float, float, float]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    appd_sock, secured_sock = trio.socket.from_stdlib_socket(a), trio.socket.from_stdlib_socket(b)
    keys_a, keys_s = _keys()
    opener, sealer = keys_a.opener(), keys_s.sealer()
    seal_t = import_t = 0.0

    async def secured() -> None:
        nonlocal seal_t
        while True:
            msg = ch.decode(await secured_sock.recv(ch.MAX_MESSAGE + 1))
            assert isinstance(msg, ch.Open | ch.Hs)
            if isinstance(msg, ch.Open):
                await secured_sock.send(ch.Hs(msg.conn, FLIGHT, len(msg.data)).encode())
                continue
            t0 = time.thread_time()
            state = _state()
            blob = sealer.seal(state, msg.conn)
            alert = Protection(state.suite, state.write_secret, state.write_seq).seal(ContentType.alert, b"\x02\x50")
            state.wipe()
            seal_t += time.thread_time() - t0
            await secured_sock.send(ch.Done(msg.conn, TICKETS, len(msg.data), blob, alert).encode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(secured)
        t0 = time.thread_time()
        for conn in range(1, n + 1):
            await appd_sock.send(ch.Open(conn, "127.0.0.1:40000", CH).encode())
            ch.decode(await appd_sock.recv(ch.MAX_MESSAGE + 1))
            await appd_sock.send(ch.Hs(conn, FIN, 0).encode())
            done = ch.decode(await appd_sock.recv(ch.MAX_MESSAGE + 1))
            assert isinstance(done, ch.Done)
            t1 = time.thread_time()
            state = opener.open(done.blob, conn)
            rl = RecordLayer()
            rl.set_read_key(state.suite, state.read_secret, state.read_seq)
            rl.set_write_key(state.suite, state.write_secret, state.write_seq)
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

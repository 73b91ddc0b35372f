"""CPU of appd's application phase for a small exchange, per connection, in µs.

What a short connection costs appd after the handoff: a RecordStream built from the imported state,
the echo app (appd.apps.serve) reading ``ping\\n`` and sealing it back, then the client's hang-up and
``aclose``, as appd/session.py runs them. Both ends run in one trio process over a real socketpair:
the client is a sans-IO RecordLayer holding the mirror keys, and hangs up like bench/hsclient.py
(no close_notify) or, with ``--close-notify``, after sending one. Thread CPU time of the whole
exchange is counted, client included; the client's record-layer calls are shown on their own. The
figures are medians over connections, so that one preempted connection does not count.

    .venv/bin/python tests/bench/appphase.py [--n 3000] [--close-notify] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import structlog
import trio

from tls_privsep.appd.__main__ import tune_allocator
from tls_privsep.appd.apps import Backend, serve
from tls_privsep.appd.stream import RecordStream
from tls_privsep.shared.errors import AlertDescription, AlertLevel
from tls_privsep.shared.record import ApplicationData, RecordLayer
from tls_privsep.shared.state import TrafficState

PING = b"ping\n"
PEER = "127.0.0.1:40000"


def _pair_of_states() -> tuple[TrafficState, TrafficState]:
    """appd's imported state (as after a handshake with tickets: write_seq 2) and the client's mirror."""
    c_ap, s_ap = os.urandom(32), os.urandom(32)
    server = TrafficState(suite=0x1301, read_secret=bytearray(c_ap), write_secret=bytearray(s_ap),
                          write_seq=2, records_protected=2, created=int(time.time()))
    client = TrafficState(suite=0x1301, read_secret=bytearray(s_ap), write_secret=bytearray(c_ap), read_seq=2)
    return server, client


async def _appd(sock: socket.socket, state: TrafficState, log: structlog.typing.FilteringBoundLogger) -> None:
    """appd/session.py's part after the handshake: stream, serve, aclose."""
    tcp = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    async with tcp:
        stream = RecordStream(tcp, state, log=log, idle_timeout=60.0)
        try:
            await serve(stream, Backend("echo"), peer=PEER, log=log)
        except trio.BrokenResourceError:
            pass  # the client hung up without close_notify, as most do
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()


async def _client(sock: socket.socket, state: TrafficState, close_notify: bool) -> float:
    """Send the ping, read the echo, hang up; returns the CPU spent in the client's record layer."""
    t0 = time.thread_time()
    rl = RecordLayer.from_traffic_state(state)
    ping = rl.send_application_data(PING)
    spent = time.thread_time() - t0
    tcp = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    async with tcp:
        await tcp.send_all(ping)
        while True:
            data = await tcp.receive_some(65536)
            assert data, "appd closed instead of answering"
            t0 = time.thread_time()
            rl.receive_data(data)
            event = rl.next_event()
            spent += time.thread_time() - t0
            if event is not None:
                assert isinstance(event, ApplicationData) and event.data == PING, event
                break
        if close_notify:
            t0 = time.thread_time()
            bye = rl.send_alert(AlertDescription.close_notify, AlertLevel.warning)
            spent += time.thread_time() - t0
            await tcp.send_all(bye)
    return spent


async def run(n: int, close_notify: bool) -> tuple[float, float]:
    """Median CPU per connection in µs: the whole exchange, and the client's record layer in it."""
    log = structlog.get_logger("appd").bind(conn=1, peer=PEER)
    totals, clients = [], []
    for _ in range(n):
        a, b = socket.socketpair()
        server_state, client_state = _pair_of_states()
        t0 = time.thread_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_appd, a, server_state, log)
            clients.append(await _client(b, client_state, close_notify))
        totals.append(time.thread_time() - t0)
    return statistics.median(totals) * 1e6, statistics.median(clients) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--close-notify", action="store_true", help="the client sends close_notify before hanging up")
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of the run")
    args = ap.parse_args()
    # As appd runs: its allocator setting (else every 512 KiB transport read maps and unmaps memory)
    # and its logging (shared/log.py: JSON lines at info, so debug calls are filtered out).
    tune_allocator()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=io.StringIO()),
        cache_logger_on_first_use=True,
    )
    trio.run(run, 200, args.close_notify)
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    total, client = trio.run(run, args.n, args.close_notify)
    if prof:
        prof.disable()
    print(f"small exchange per connection, median: {total:.0f} µs CPU (client record layer {client:.0f} µs, "
          f"appd and both ends' I/O {total - client:.0f} µs)")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()

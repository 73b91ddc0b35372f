"""Pre-forked workers: one daemon, N processes, one supervisor that only forwards signals and restarts.

Python runs one core per process, so a daemon scales across cores by forking copies of itself after
its sockets are bound (and, for secured, its keys loaded) and before any event loop or thread exists.
The supervisor runs no event loop and no connection: it forwards SIGTERM/SIGINT/SIGHUP to its
workers, restarts a worker that dies unexpectedly (a worker refusing its configuration stops them
all), speaks for the daemon to systemd, and exits once every worker has exited after a stop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from tls_privsep.shared import systemd

EX_USAGE, EX_CONFIG = 64, 78
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_TICK = 0.2  # seconds between looks at the children when no signal arrives


def _spawn(index: int, instance: int, work: Callable[[int, int], int]) -> int:
    # The forwarded signals stay blocked across fork: one that arrived in between would otherwise run the
    # supervisor's handler in the child and be lost. The child unblocks them only once its own
    # dispositions are in place (SIGHUP ignored until its event loop takes it over).
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return pid
    code = 70  # EX_SOFTWARE unless work() says otherwise
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        code = work(index, instance)
    except BaseException as exc:  # the last resort of a worker: one line, then the supervisor restarts it
        print(f"worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def supervise(count: int, work: Callable[[int, int], int], *, log: Any, status: str,
              on_reload: Callable[[], bool] | None = None, on_tick: Callable[[], None] | None = None,
              on_stop: Callable[[], None] | None = None) -> int:
    """Run ``work(index, instance)`` in ``count`` forked workers until a stop signal; returns the exit status.

    ``index`` is the worker's slot (0..count-1, kept across restarts); ``instance`` numbers every process
    ever spawned (1, 2, ...), unique for the supervisor's life (secured's ticket nonces rely on it).

    ``on_reload`` runs in the supervisor on SIGHUP before the signal goes on to the workers (secured
    checks the new certificates there, so that systemd hears whether the reload worked). ``on_tick`` runs
    about every 0.2 s (secured moves its ticket-key ratchet on); ``on_stop`` once, when stopping begins
    (appd closes its copies of the listeners, so that new clients are refused rather than queued).
    """
    pending: list[int] = []

    def note(signum: int, _frame: object) -> None:
        pending.append(signum)

    for forwarded in _FORWARDED:
        signal.signal(forwarded, note)
    workers: dict[int, int] = {}  # pid -> index
    started: dict[int, float] = {}
    restarts = [0] * count
    spawned = 0
    for index in range(count):
        spawned += 1
        pid = _spawn(index, spawned, work)
        workers[pid], started[index] = index, time.monotonic()
    log.info("workers started", workers=count, pids=sorted(workers))
    systemd.notify(f"READY=1\nSTATUS={status}")
    stopping: int | None = None  # the signal that stops us
    exit_code = 0
    next_beat = time.monotonic() + systemd.heartbeat_period()
    while workers:
        while pending:
            signum = pending.pop(0)
            if signum == signal.SIGHUP and stopping is None:
                systemd.reloading()
                ok = on_reload() if on_reload is not None else True
                if ok:
                    _signal_all(workers, signal.SIGHUP)
                systemd.notify(f"READY=1\nSTATUS={status}" + ("" if ok else "; reload refused"))
            elif signum != signal.SIGHUP:
                if stopping is None:
                    log.info("stopping", signal=signal.Signals(signum).name, workers=len(workers))
                    systemd.notify("STOPPING=1\nSTATUS=stopping")
                    if on_stop is not None:
                        on_stop()
                stopping = signum
                _signal_all(workers, signal.SIGTERM)
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0 or pid not in workers:
            if on_tick is not None:
                on_tick()
            if time.monotonic() >= next_beat:
                systemd.beat(status)
                next_beat = time.monotonic() + systemd.heartbeat_period()
            time.sleep(_TICK)
            continue
        index = workers.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping is not None:
            continue
        if code in (EX_CONFIG, EX_USAGE):
            log.error("worker refused its configuration; stopping", worker=index, status=code)
            exit_code, stopping = code, signal.SIGTERM
            if on_stop is not None:
                on_stop()
            _signal_all(workers, signal.SIGTERM)
            continue
        restarts[index] += 1
        quick = time.monotonic() - started[index] < 1.0
        log.warning("worker exited; restarting", worker=index, status=code, restarts=restarts[index])
        if quick:
            time.sleep(min(0.2 * restarts[index], 2.0))
        spawned += 1
        pid = _spawn(index, spawned, work)
        workers[pid], started[index] = index, time.monotonic()
    return exit_code


def _signal_all(workers: dict[int, int], signum: int) -> None:
    for pid in workers:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

"""Pre-forked workers: one daemon, N processes, one supervisor that only forwards signals and restarts.

Python runs one core per process, so a daemon scales across cores by forking copies of itself after
its sockets are bound (and, for secured, its keys loaded) and before any event loop or thread exists.
The supervisor runs no event loop and no connection: it forwards SIGTERM/SIGINT/SIGHUP to its
workers, restarts a worker that dies unexpectedly (a worker refusing its configuration stops them
all), speaks for the daemon to systemd, and exits once every worker has exited after a stop.

Restarts follow :mod:`shared.restarts`: a delay from 0.1 s doubling to 5 s, and a worker slot whose
process died 5 times within 60 s stops the daemon with 70 (one ``workers keep dying; giving up``
line naming the worker and its last error). Each worker gets SIGTERM from the kernel when its
supervisor dies, whatever killed it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from tls_privsep.shared import hardening, systemd
from tls_privsep.shared.restarts import EX_GAVE_UP, CrashLoop, RestartPolicy

EX_USAGE, EX_NOPERM, EX_CONFIG = 64, 77, 78
_FINAL = (EX_USAGE, EX_NOPERM, EX_CONFIG)  # a worker that exits so said why in one line; a restart would not help
_ready_fd: int | None = None  # in a worker: where report_ready() tells the supervisor


def report_ready() -> None:
    """Called by a worker once it serves (appd: its channel to secured is up). The supervisor says ready for
    the daemon (the ready fd, READY=1) only when every worker has; outside a worker this does nothing."""
    global _ready_fd
    if _ready_fd is not None:
        try:
            os.write(_ready_fd, b"R")
            os.close(_ready_fd)
        except OSError:
            pass
        _ready_fd = None


class _LastLine:
    """stderr as it was, remembering the last non-empty line written (a worker's one-line reason)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            self.last = lines[-1].strip()
        return int(self._stream.write(text))

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_TICK = 0.2  # seconds between looks at the children when no signal arrives
_LAST_ERROR_MAX = 300  # characters of a worker's last error line kept for the give-up line


def _spawn(index: int, instance: int, work: Callable[[int, int], int], error_fd: int | None = None,
           ready_fd: int | None = None) -> int:
    """Fork a worker running ``work(index, instance)``; its pid. A worker that fails writes its one error line
    to stderr, and to ``error_fd`` when given (the supervisor's pipe for the give-up line); ``ready_fd`` is
    where :func:`report_ready` writes."""
    supervisor = os.getpid()
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
    global _ready_fd
    _ready_fd = ready_fd
    stderr = _LastLine(sys.stderr)
    sys.stderr = stderr  # a worker's last line goes to the supervisor too
    code = 70  # EX_SOFTWARE unless work() says otherwise
    try:
        # Not inherited across fork: without it, a SIGKILLed supervisor would leave its workers serving.
        hardening.die_with_parent(supervisor, who=f"worker {index}")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        code = work(index, instance)
    except BaseException as exc:  # the last resort of a worker: one line, then the supervisor restarts it
        print(f"worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        if code != 0 and error_fd is not None and stderr.last:
            try:
                os.write(error_fd, stderr.last.encode(errors="replace")[:4096] + b"\n")
            except OSError:
                pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def supervise(count: int, work: Callable[[int, int], int], *, log: Any, status: str,
              on_reload: Callable[[], bool] | None = None, on_tick: Callable[[], None] | None = None,
              on_stop: Callable[[], None] | None = None, policy: RestartPolicy | None = None,
              on_ready: Callable[[], None] | None = None) -> int:
    """Run ``work(index, instance)`` in ``count`` forked workers until a stop signal; returns the exit status.

    ``index`` is the worker's slot (0..count-1, kept across restarts); ``instance`` numbers every process
    ever spawned (1, 2, ...), unique for the supervisor's life (secured's ticket nonces rely on it).

    ``on_reload`` runs in the supervisor on SIGHUP before the signal goes on to the workers (secured
    checks the new certificates there, so that systemd hears whether the reload worked). ``on_tick`` runs
    about every 0.2 s (secured moves its ticket-key ratchet on); ``on_stop`` once, when stopping begins
    (appd closes its copies of the listeners, so that new clients are refused rather than queued).

    ``policy`` (default: :mod:`shared.restarts`' constants) sets the delays before restarts and when a worker
    slot that keeps dying stops the daemon with 70.

    The daemon is ready (READY=1, then ``on_ready``) once every slot has had a worker call
    :func:`report_ready`; a worker that exits 64, 77 or 78 stops them all with its status.
    """
    pending: list[int] = []

    def note(signum: int, _frame: object) -> None:
        pending.append(signum)

    for forwarded in _FORWARDED:
        signal.signal(forwarded, note)
    policy = policy or RestartPolicy()
    workers: dict[int, int] = {}  # pid -> index
    errors: dict[int, int] = {}  # pid -> read end of its error pipe
    readiness: dict[int, int] = {}  # pid -> read end of its ready pipe, until it reports
    ready_slots: set[int] = set()
    announced = False
    loops = [CrashLoop(policy) for _ in range(count)]
    due: dict[int, float] = {}  # index -> when its next process starts (monotonic)
    spawned = 0

    def start(index: int) -> int:
        nonlocal spawned
        spawned += 1
        read_end, write_end = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            pid = _spawn(index, spawned, work, write_end, ready_w)
        except BaseException:
            os.close(read_end)
            os.close(ready_r)
            raise
        finally:
            os.close(write_end)
            os.close(ready_w)
        os.set_blocking(read_end, False)
        os.set_blocking(ready_r, False)
        workers[pid], errors[pid], readiness[pid] = index, read_end, ready_r
        loops[index].started()
        return pid

    for index in range(count):
        start(index)
    log.info("workers started", workers=count, pids=sorted(workers))
    stopping: int | None = None  # the signal that stops us
    exit_code = 0
    next_beat = time.monotonic() + systemd.heartbeat_period()

    def stop(signum: int) -> None:
        nonlocal stopping
        if stopping is None and on_stop is not None:
            on_stop()
        stopping = signum
        due.clear()
        _signal_all(workers, signal.SIGTERM)

    while workers or due:
        for pid, fd in list(readiness.items()):
            if _reported(fd):
                os.close(readiness.pop(pid))
                ready_slots.add(workers[pid])
        if not announced and stopping is None and len(ready_slots) == count:
            announced = True
            systemd.notify(f"READY=1\nSTATUS={status}")
            if on_ready is not None:
                on_ready()
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
                stop(signum)
        now = time.monotonic()
        for index, at in sorted(due.items()):
            if at <= now:
                del due[index]
                start(index)
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left: every slot is waiting for its restart
            if not due:
                break
            pid, wait_status = 0, 0
        if pid == 0 or pid not in workers:
            if on_tick is not None:
                on_tick()
            if time.monotonic() >= next_beat:
                systemd.beat(status)
                next_beat = time.monotonic() + systemd.heartbeat_period()
            nap = min([_TICK, *(at - time.monotonic() for at in due.values())])
            if pid == 0 and nap > 0:
                time.sleep(nap)
            continue
        index = workers.pop(pid)
        last_error = _last_line(errors.pop(pid))
        if pid in readiness:
            os.close(readiness.pop(pid))
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping is not None:
            continue
        if code in _FINAL:
            log.error("worker refused to run; stopping", worker=index, status=code, error=last_error or None)
            exit_code = code
            stop(signal.SIGTERM)
            continue
        delay = loops[index].died()
        if delay is None:
            log.error("workers keep dying; giving up", worker=index, deaths=loops[index].deaths,
                      window=policy.window, last_exit=_describe(code), last_error=last_error or None)
            systemd.notify(f"STOPPING=1\nSTATUS=worker {index} {loops[index].describe()}; giving up")
            exit_code = EX_GAVE_UP
            stop(signal.SIGTERM)
            continue
        log.warning("worker exited; restarting", worker=index, status=code, restarts=loops[index].restarts,
                    delay=delay)
        due[index] = time.monotonic() + delay
    for read_end in [*errors.values(), *readiness.values()]:
        os.close(read_end)
    return exit_code


def _reported(fd: int) -> bool:
    """The worker at the other end of a ready pipe has reported (never blocks)."""
    try:
        return bool(os.read(fd, 1))
    except BlockingIOError:
        return False


def _last_line(fd: int) -> str:
    """The last non-empty line a dead worker wrote to its error pipe (what is there now; never blocks)."""
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data = (data + chunk)[-65536:]
    except BlockingIOError:
        pass  # a process the worker forked still holds the pipe open
    finally:
        os.close(fd)
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:_LAST_ERROR_MAX] if lines else ""


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


def _signal_all(workers: dict[int, int], signum: int) -> None:
    for pid in workers:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

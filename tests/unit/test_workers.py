"""The pre-fork supervisor: a signal sent to a worker right after its fork is never lost, a worker that keeps
dying stops the daemon, and a worker never outlives its supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tls_privsep.shared import workers


@pytest.fixture(autouse=True)
def supervisor_handlers() -> Iterator[list[int]]:
    """The parent holds Python handlers for the forwarded signals, as the supervisor does."""
    seen: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: seen.append(signum)) for s in workers._FORWARDED}
    yield seen
    for s, handler in old.items():
        signal.signal(s, handler)


def _sleep_forever(_index: int, _instance: int) -> int:
    time.sleep(30)
    return 0


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_sigterm_right_after_fork_ends_the_worker() -> None:
    """Without the signal mask across fork, the child ran the parent's Python handler and dropped the signal."""
    for _ in range(40):
        pid = workers._spawn(0, 1, _sleep_forever)
        os.kill(pid, signal.SIGTERM)
        status = _wait(pid, 5.0)
        assert status is not None, "worker ignored a SIGTERM sent right after its fork"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_sighup_before_the_worker_takes_it_over_is_ignored_not_fatal() -> None:
    pid = workers._spawn(0, 1, _sleep_forever)
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.2)
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # still running
    os.kill(pid, signal.SIGTERM)
    assert _wait(pid, 5.0) is not None


def test_parent_mask_is_restored() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    pid = workers._spawn(0, 1, _sleep_forever)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


# ---- crash loops and orphans (in a child process: the supervisor installs handlers and forks) ------------------

SUPERVISOR = """
import sys, time
from tls_privsep.shared import log, workers
from tls_privsep.shared.restarts import RestartPolicy

def crash(index, instance):
    time.sleep(0.05)
    raise RuntimeError(f"boom {instance}")

logger = log.setup("json", daemon="appd")
sys.exit(workers.supervise(1, crash, log=logger, status="1 worker",
                           policy=RestartPolicy(limit=4, window=30.0, first_delay=0.01)))
"""


def _events(stderr: str) -> list[dict[str, object]]:
    out = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def test_a_worker_that_keeps_dying_stops_the_supervisor_with_70() -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", SUPERVISOR], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 70, result.stderr
    assert time.monotonic() - started < 30
    events = _events(result.stderr)
    restarts = [e for e in events if e["event"] == "worker exited; restarting"]
    assert [(e["restarts"], e["delay"]) for e in restarts] == [(1, 0.01), (2, 0.02), (3, 0.04)]
    (gave_up,) = [e for e in events if e["event"] == "workers keep dying; giving up"]
    assert gave_up["level"] == "error" and gave_up["daemon"] == "appd"
    assert (gave_up["worker"], gave_up["deaths"], gave_up["window"]) == (0, 4, 30.0)
    assert gave_up["last_exit"] == "status 70"
    assert gave_up["last_error"] == "worker 0: RuntimeError: boom 4"  # the fourth process's own line
    own_lines = [line for line in result.stderr.splitlines() if line.startswith("worker 0: RuntimeError: boom")]
    assert len(own_lines) == 4  # each worker's line, once, and no traceback
    assert "Traceback" not in result.stderr


SPAWNER = """
import os, sys, time
from tls_privsep.shared import workers

def sleep(index, instance):
    time.sleep(60)
    return 0

print(workers._spawn(0, 1, sleep), flush=True)
time.sleep(60)
"""


def test_a_worker_dies_with_its_supervisor_even_by_sigkill() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SPAWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        time.sleep(0.3)  # the worker is past its prctl
        assert _alive(worker)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(worker), "the worker outlived its SIGKILLed supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for whoever adopts it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


READY_AND_FINAL = """
import sys, time
from tls_privsep.shared import cli, log, workers
from tls_privsep.shared.restarts import RestartPolicy

def work(index, instance):
    def body():
        if sys.argv[1] == "ready":
            time.sleep(0.3 * index)  # the second worker takes longer to get its channel
            print(f"worker {index} ready at {time.monotonic():.3f}", file=sys.stderr, flush=True)
            workers.report_ready()
            time.sleep(1.5)
            return 0  # (then the supervisor restarts it, and gives up after a few: the test's end)
        raise cli.StartupFailure(f"{sys.argv[1]} from worker {index}", int(sys.argv[2]))
    return cli.run_daemon("appd", body)

def ready():
    print(f"all ready at {time.monotonic():.3f}", file=sys.stderr, flush=True)

logger = log.setup("json", daemon="appd")
sys.exit(workers.supervise(2, work, log=logger, status="2 workers", on_ready=ready,
                           policy=RestartPolicy(limit=3, window=30.0, first_delay=0.01)))
"""


def test_the_daemon_is_ready_only_once_every_worker_is() -> None:
    result = subprocess.run([sys.executable, "-c", READY_AND_FINAL, "ready"], capture_output=True, text=True,
                            timeout=60, check=False)
    lines = [line for line in result.stderr.splitlines() if " at " in line and not line.startswith("{")][:3]
    assert [line.rsplit(" at ", 1)[0] for line in lines] in (
        ["worker 0 ready", "worker 1 ready", "all ready"], ["worker 1 ready", "worker 0 ready", "all ready"])
    times = [float(line.rsplit(" at ", 1)[1]) for line in lines]
    assert times[2] >= max(times[:2])


def test_a_worker_that_cannot_run_stops_the_daemon_with_its_own_status() -> None:
    """77 (a permission), like 64 and 78, is final: no restarts, and the supervisor exits with it."""
    result = subprocess.run([sys.executable, "-c", READY_AND_FINAL, "refused", "77"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 77, result.stderr
    events = _events(result.stderr)
    assert not [e for e in events if e["event"] == "worker exited; restarting"]
    (stopped,) = [e for e in events if e["event"] == "worker refused to run; stopping"]
    assert stopped["status"] == 77 and str(stopped["error"]).startswith("appd: error: refused from worker")


def test_the_give_up_line_carries_the_workers_own_last_line() -> None:
    """A worker that ends through run_daemon (as the daemons' do) prints its one line itself: that line, not
    None, is the last error in the give-up line."""
    result = subprocess.run([sys.executable, "-c", READY_AND_FINAL, "unavailable", "69"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 70, result.stderr
    (gave_up,) = [e for e in _events(result.stderr) if e["event"] == "workers keep dying; giving up"]
    assert str(gave_up["last_error"]).startswith("appd: error: unavailable from worker")

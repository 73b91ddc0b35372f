"""The pre-fork supervisor's signal plumbing: a signal sent to a worker right after its fork is never lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

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

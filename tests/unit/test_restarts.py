"""The restart policy shared by the launcher and the worker supervisor: backoff, its reset, and when to give up."""

from __future__ import annotations

import pytest

from tls_privsep.shared import restarts
from tls_privsep.shared.restarts import CrashLoop, RestartPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_are_the_documented_ones() -> None:
    policy = RestartPolicy()
    assert (policy.limit, policy.window, policy.first_delay, policy.max_delay, policy.stable_after) == \
        (5, 60.0, 0.1, 5.0, 60.0)
    assert restarts.EX_GAVE_UP == 70


def test_delay_doubles_and_the_fifth_quick_death_gives_up() -> None:
    clock = Clock()
    loop = CrashLoop(RestartPolicy(), clock)
    delays = []
    for _ in range(5):
        loop.started()
        clock.now += 0.5
        delays.append(loop.died())
        clock.now += delays[-1] or 0
    assert delays == [0.1, 0.2, 0.4, 0.8, None]
    assert loop.restarts == 4
    assert loop.describe() == "died 5 times in 60 s"


def test_delay_stops_growing_at_the_maximum() -> None:
    clock = Clock()
    loop = CrashLoop(RestartPolicy(limit=100), clock)
    delays = []
    for _ in range(10):
        loop.started()
        delays.append(loop.died())
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]


def test_a_minute_up_starts_the_delay_over() -> None:
    clock = Clock()
    loop = CrashLoop(RestartPolicy(limit=100), clock)
    for expected in (0.1, 0.2, 0.4):
        loop.started()
        assert loop.died() == expected
    loop.started()
    clock.now += 59.0
    assert loop.died() == 0.8  # not quite a minute
    loop.started()
    clock.now += 60.0
    assert loop.died() == 0.1


def test_deaths_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    loop = CrashLoop(RestartPolicy(limit=3, window=10.0), clock)
    for _ in range(2):
        loop.started()
        assert loop.died() is not None
    clock.now += 10.5  # both earlier deaths now older than the window
    loop.started()
    assert loop.died() is not None
    assert loop.deaths == 1
    loop.started()
    assert loop.died() is not None
    loop.started()
    assert loop.died() is None
    assert loop.describe() == "died 3 times in 10 s"


def test_limit_one_never_restarts() -> None:
    loop = CrashLoop(RestartPolicy(limit=1), Clock())
    loop.started()
    assert loop.died() is None
    assert loop.describe() == "died once in 60 s"


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"window": 0.0}, {"window": float("nan")}])
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]

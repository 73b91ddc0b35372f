"""When to restart a child that died, and when to stop trying: one policy for the launcher and the worker supervisor.

A child that dies is started again after a delay that starts at 0.1 s and doubles with each death up to 5 s; a
child that had been up for a minute starts over at 0.1 s. A child that dies 5 times within 60 s is in a crash
loop that restarting will not fix: its supervisor stops everything and exits with 70 (EX_SOFTWARE), naming the
child and its last error line, so that whoever runs it (systemd, an operator, a test) sees one failure instead of
a process that flaps for ever. The systemd units say the same with ``StartLimitBurst=5`` and
``StartLimitIntervalSec=60s``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_DELAY = 0.1  # seconds before the first restart
MAX_DELAY = 5.0  # the delay doubles up to this
STABLE_AFTER = 60.0  # a child up this long starts over at FIRST_DELAY
LIMIT = 5  # deaths ...
WINDOW = 60.0  # ... within this many seconds: give up
EX_GAVE_UP = 70  # EX_SOFTWARE: the supervisor's exit status after giving up


@dataclass(frozen=True)
class RestartPolicy:
    limit: int = LIMIT
    window: float = WINDOW
    first_delay: float = FIRST_DELAY
    max_delay: float = MAX_DELAY
    stable_after: float = STABLE_AFTER

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"restart limit must be at least 1, not {self.limit}")
        if not self.window > 0:
            raise ValueError(f"restart window must be positive, not {self.window:g}")


@dataclass
class CrashLoop:
    """One child's deaths under a :class:`RestartPolicy`: call :meth:`started` at each start, :meth:`died` at each
    unexpected exit."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    restarts: int = 0
    _deaths: deque[float] = field(default_factory=deque)
    _delay: float = -1.0
    _started_at: float = 0.0

    def started(self) -> None:
        self._started_at = self.clock()

    def died(self) -> float | None:
        """The delay before the next start, or None when the child has died ``limit`` times within ``window``."""
        now = self.clock()
        if self._delay < 0 or now - self._started_at >= self.policy.stable_after:
            self._delay = self.policy.first_delay
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > self.policy.window:
            self._deaths.popleft()
        if len(self._deaths) >= self.policy.limit:
            return None
        delay = self._delay
        self._delay = min(delay * 2, self.policy.max_delay)
        self.restarts += 1
        return delay

    @property
    def deaths(self) -> int:
        """Deaths within the window, as of the last one."""
        return len(self._deaths)

    def describe(self) -> str:
        """``died 5 times in 60 s``, for the give-up line."""
        times = "once" if self.deaths == 1 else f"{self.deaths} times"
        return f"died {times} in {self.policy.window:g} s"

"""What the kernel knows about a process tree: CPU time, resident memory, affinity, limits.

CPU is read from /proc rather than asked of the servers: it is the same measure for our daemons,
openssl and the trio reference, and it counts every process the server started (the launcher,
secured, appd), including children that already exited and were reaped (cutime/cstime).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Callable, Iterable

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime + cutime + cstime of ``pids``, in seconds (all threads included)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:  # fields[11:15] = utime stime cutime cstime
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / TICK


def tree_cpu(root: int) -> float:
    return cpu_seconds(tree(root))


def core_times() -> dict[int, tuple[int, int]]:
    """Per core, (busy, total) ticks since boot from /proc/stat; steal counts as busy (not ours to use)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def core_busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int) -> float:
    """Fraction of ``core`` in use (by anyone) between two :func:`core_times` readings."""
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return busy / total if total else 0.0


def rss_kib(pid: int) -> int:
    """VmRSS in KiB: readable even for the daemons, which make themselves non-dumpable."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def pinned(cores: int | Iterable[int]) -> Callable[[], None]:
    """A ``preexec_fn`` putting the child (and so everything it starts) on one core, or on a set of them."""
    allowed = {cores} if isinstance(cores, int) else set(cores)

    def pin() -> None:
        os.sched_setaffinity(0, allowed)

    return pin


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (children inherit it); returns the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

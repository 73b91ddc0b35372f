"""The systemd service protocol in plain Python: sd_notify, socket activation, watchdog, credentials.

No libsystemd: the protocol is a few environment variables and one datagram, and a C dependency in
secured would be more code able to read its keys. Every function is a no-op (or returns nothing)
outside systemd, so the daemons call them unconditionally.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

SD_LISTEN_FDS_START = 3


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STATUS=…``, newline-separated) to ``$NOTIFY_SOCKET``.

    True when sent; False when not under systemd or when the send fails: a lost status line must never
    take a daemon down, and systemd's own timeouts cover a lost READY=1.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address  # '@' is the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd >= 253 wants the timestamp); send ``READY=1`` when done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def _for_us(pid_variable: str) -> bool:
    try:
        return int(os.environ.get(pid_variable, "")) == os.getpid()
    except ValueError:
        return False


def listen_fds(unset: bool = True) -> list[tuple[int, str]]:
    """The sockets systemd passed us as (fd, name), from fd 3 on; [] when none are meant for this process.

    ``LISTEN_PID`` guards against inheriting a parent's variables; they are removed (by default) so a
    child we start cannot mistake the fds for its own. Unnamed fds are called ``unknown`` as in libsystemd.
    """
    try:
        count = int(os.environ.get("LISTEN_FDS", "")) if _for_us("LISTEN_PID") else 0
    except ValueError:
        count = 0
    names = os.environ.get("LISTEN_FDNAMES", "").split(":") if count else []
    if unset:
        for variable in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(variable, None)
    result = []
    for i in range(max(count, 0)):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        result.append((fd, names[i] if i < len(names) and names[i] else "unknown"))
    return result


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1``, or None when no watchdog is set for us."""
    if "WATCHDOG_PID" in os.environ and not _for_us("WATCHDOG_PID"):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def credential_path(name: str) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/name`` (from ``LoadCredential=``), or None outside systemd."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory or not name or "/" in name or name in (".", ".."):
        return None
    return Path(directory) / name


def resolve_credential(path: str) -> str:
    """A configured key/cert path: relative ones live in ``$CREDENTIALS_DIRECTORY`` when it is set."""
    if os.path.isabs(path) or not os.environ.get("CREDENTIALS_DIRECTORY"):
        return path
    return str(Path(os.environ["CREDENTIALS_DIRECTORY"]) / path)


STATUS_PERIOD = 10.0


def heartbeat_period() -> float:
    """How often a daemon should call :func:`beat`: half the watchdog interval, at most STATUS_PERIOD."""
    interval = watchdog_interval()
    return min(interval / 2, STATUS_PERIOD) if interval else STATUS_PERIOD


def beat(status: str) -> bool:
    """One periodic message: the live STATUS line, plus WATCHDOG=1 when a watchdog is armed for us."""
    return notify(("WATCHDOG=1\n" if watchdog_interval() else "") + f"STATUS={status}")


def inherited_sockets(names: tuple[str, ...], kind: int) -> list[socket.socket]:
    """Activated listening sockets of type ``kind``: those named in ``names``, or all of that type if none is.

    Consumes LISTEN_FDS (see :func:`listen_fds`); fds of another type or not listening are closed, so a
    wrong unit file shows up as "no socket" rather than as a daemon serving something it should not.
    """
    chosen: list[socket.socket] = []
    others: list[socket.socket] = []
    for fd, name in listen_fds():
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # not a socket (a FIFO, a file): not ours to use
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != kind or not listening:
            sock.close()
        elif name in names:
            chosen.append(sock)
        else:
            others.append(sock)
    if chosen:
        for sock in others:
            sock.close()
        return chosen
    return others

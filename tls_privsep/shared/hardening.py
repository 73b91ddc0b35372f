"""Process hardening both daemons apply at start: no core dumps, not dumpable, privileges dropped.

A core file or a ptrace attach would hand over keys (secured) or traffic secrets (appd), so both
are closed before any secret exists in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import resource

from tls_privsep.shared.errors import ConfigError

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def no_core_dumps() -> None:
    """RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (which also refuses same-uid ptrace attach)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def uid_of(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ConfigError(f"no such user {user!r}") from None


def gid_of(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        raise ConfigError(f"no such user {user!r}") from None


def drop_privileges(user: str | None, *, daemon: str) -> None:
    """As root, become ``user`` for good; as anyone else, stay. Root without a user is refused."""
    if os.geteuid() != 0:
        return
    if not user:
        raise ConfigError(f"{daemon} refuses to run as root: give it a user to drop to ({daemon}.user / --user)")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"{daemon}: no such user {user!r}") from None
    if entry.pw_uid == 0:
        raise ConfigError(f"{daemon}: {user!r} is root; name an unprivileged user")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise ConfigError(f"{daemon}: could not drop root privileges")
    # setuid resets the dumpable flag on some kernels; set it again.
    no_core_dumps()

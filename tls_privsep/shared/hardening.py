"""Process hardening both daemons apply at start: no core dumps, not dumpable, privileges dropped,
and no life after their parent.

A core file or a ptrace attach would hand over keys (secured) or traffic secrets (appd), so both
are closed before any secret exists in the process. A daemon whose launcher (or whose worker's
supervisor) died, even by SIGKILL, is told so by the kernel (``PR_SET_PDEATHSIG``) and stops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import pwd
import resource
import signal
import stat
from pathlib import Path

from tls_privsep.shared.errors import ConfigError

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PARENT_PID_VARIABLE = "TLS_PRIVSEP_PARENT_PID"  # set by whoever starts a daemon and wants it gone with itself
EX_SOFTWARE = 70

_parent_death: tuple[int, int, str] | None = None  # (expected parent, signal), to arm again after a uid change


@functools.cache  # loaded once, before any fork: find_library would run ldconfig in every worker otherwise
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def no_core_dumps() -> None:
    """RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (which also refuses same-uid ptrace attach)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def die_with_parent(expected_parent: int, sig: int = signal.SIGTERM, *, who: str = "tls-privsep") -> None:
    """Have the kernel send ``sig`` when our parent dies, however it dies; exit at once if it is gone already.

    The parent may have died between our fork and this call (the kernel would then never signal us):
    if we are no longer ``expected_parent``'s child, we exit with 70 now. The kernel forgets the setting
    when the effective uid or gid changes, and a fork child does not inherit it: :func:`drop_privileges`
    arms it again, and a forked worker calls this itself, with its supervisor as the parent. "Parent" is
    the thread that forked us; our launcher and supervisors are single-threaded.
    """
    global _parent_death
    if _libc().prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    _parent_death = (expected_parent, int(sig), who)
    if os.getppid() != expected_parent:
        os.write(2, f"{who}: error: the process that started it (pid {expected_parent}) is gone; exiting\n".encode())
        os._exit(EX_SOFTWARE)


def parent_death_signal() -> int:
    """The signal the kernel sends us when our parent dies (0: none)."""
    value = ctypes.c_int(0)
    if _libc().prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_PDEATHSIG) failed")
    return value.value


def die_with_launcher(who: str = "tls-privsep") -> None:
    """:func:`die_with_parent` when our starter named itself in ``$TLS_PRIVSEP_PARENT_PID`` (the launcher and the
    test helpers do; systemd does not, and needs nothing of the kind). The variable is not passed on.
    ValueError when it is not a process id."""
    value = os.environ.pop(PARENT_PID_VARIABLE, None)
    if value is None:
        return
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${PARENT_PID_VARIABLE} is not a process id: {value[:40]!r}")
    die_with_parent(int(value), who=who)


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
    # setuid resets the dumpable flag on some kernels, and the parent-death signal always; set both again.
    no_core_dumps()
    if _parent_death is not None:
        parent, sig, who = _parent_death
        die_with_parent(parent, sig, who=who)


def user_name() -> str:
    """This process's user, by name where it has one (for messages that say who lacked access)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unreadable(path: str) -> str | None:
    """Why this process cannot read ``path`` (one short phrase), or None when it can."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def unreachable_socket(path: str) -> str | None:
    """Why this process could not connect to the Unix socket at ``path`` for lack of permission, or None
    (also None when it does not exist yet). Checked without connecting, so nobody sees a probe."""
    try:
        os.stat(path)
    except PermissionError:
        directory = os.path.dirname(os.path.abspath(path))
        blocked = directory
        while os.path.dirname(directory) != directory:
            if not os.access(directory, os.X_OK):
                blocked = directory
            directory = os.path.dirname(directory)
        return f"cannot enter {blocked}"
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return f"cannot write to {path}"
    return None


def unreachable_for(path: str | os.PathLike[str], user: str, *, socket_too: bool = True) -> str | None:
    """Why ``user`` (with its primary group only, as the daemons drop to) cannot connect to the Unix
    socket at ``path``, or None. A socket not made yet is only checked for its directories, and so is one
    that will be made again (``socket_too=False``: a stale socket's mode says nothing about the next)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None  # the daemon says so itself
    target = Path(os.path.abspath(path))
    for directory in reversed(target.parents):
        try:
            info = directory.stat()
        except OSError:
            return None
        if not _allowed(info, entry.pw_uid, entry.pw_gid, 1):
            return f"{user} cannot enter {directory} (mode {stat.filemode(info.st_mode)})"
    if not socket_too:
        return None
    try:
        info = target.stat()
    except OSError:
        return None
    if not _allowed(info, entry.pw_uid, entry.pw_gid, 2):
        return f"{user} cannot write to the socket {target} (mode {stat.filemode(info.st_mode)})"
    return None


def _allowed(info: os.stat_result, uid: int, gid: int, bit: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & (bit << 6))
    if info.st_gid == gid:
        return bool(info.st_mode & (bit << 3))
    return bool(info.st_mode & bit)

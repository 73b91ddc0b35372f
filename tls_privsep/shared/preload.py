"""Everything a daemon will ever import, imported while it can still read its own install.

Both daemons start as root (or as whoever started them), open their sockets and keys, and then
drop to an unprivileged user for good. From then on the interpreter may no longer be able to read
its own files: a virtualenv in root's home or in a ``mktemp -d`` directory is mode 0700, and so is
a pyenv under ``/root``. Python imports lazily (``cryptography`` loads a primitive's module on first
use, the stdlib loads a codec on first lookup, trio loads parts on first call), so an import that
happens after the drop fails there, in the middle of some connection.

So each daemon imports every module of its own code and every module its dependencies load on
first use *before* the drop (:func:`preload`), and, after the drop, puts a watch on the import
system (:func:`watch_late_imports`): any import that still happens is logged with its module name
(the integration tests assert that none does), and one that cannot read the install raises
:class:`InstallUnreadable`, which the daemon turns into one line naming the directory and the fix.
"""

from __future__ import annotations

import codecs
import importlib
import importlib.abc
import importlib.machinery
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

# Modules our dependencies and the stdlib import on first use rather than at import time, found by
# running every code path (every suite, group, signature scheme, tickets, client certificates,
# KeyUpdate, reload, each backend) with the watch below on. Grouped by who imports them late.
_CRYPTOGRAPHY_BACKEND = (  # loaded by the first hash/AEAD/key object made after import
    "cryptography.hazmat.backends",
    "cryptography.hazmat.backends.openssl",
    "cryptography.hazmat.backends.openssl.backend",
    "cryptography.hazmat.bindings.openssl",
    "cryptography.hazmat.bindings.openssl._conditional",
    "cryptography.hazmat.bindings.openssl.binding",
)
LAZY_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "secured": _CRYPTOGRAPHY_BACKEND,
    "appd": _CRYPTOGRAPHY_BACKEND,
}

# Codecs looked up by name at run time (host names are IDNA-encoded by socket calls).
CODECS = ("idna", "ascii", "utf-8", "latin-1")


class InstallUnreadable(ImportError):
    """A module is imported after the privilege drop and the install is out of the user's reach."""


def own_modules(packages: Iterable[str]) -> list[str]:
    """Every module and subpackage of ``packages`` (imported ones included), by name."""
    names: list[str] = []
    for package in packages:
        module = importlib.import_module(package)
        names.append(package)
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=package + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def preload(daemon: str, packages: Sequence[str]) -> int:
    """Import our ``packages`` whole and ``daemon``'s lazy dependencies; the count of modules loaded."""
    before = len(sys.modules)
    for name in own_modules(packages):
        importlib.import_module(name)
    for name in LAZY_DEPENDENCIES.get(daemon, ()):
        importlib.import_module(name)
    for name in CODECS:
        codecs.lookup(name)
    return len(sys.modules) - before


class _LateImportWatch(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` after the drop: sees every import of a module not loaded yet."""

    def __init__(self, report: Callable[[str], None], user: str) -> None:
        self._report = report
        self._user = user
        self._seen: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._seen:
            self._seen.add(fullname)
            self._report(fullname)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                return spec  # it can be imported after all (a builtin, a readable entry): only reported
        blocked = first_unreadable(path if path is not None else sys.path)
        if blocked is not None:
            raise InstallUnreadable(f"cannot read {blocked} as user {self._user} (Permission denied): "
                                    "install where that user can read it", name=fullname)
        return None  # simply not there: the usual ModuleNotFoundError


def first_unreadable(entries: Iterable[str]) -> str | None:
    """The first import path entry this process may not read (a directory it cannot list and enter, a zip
    file it cannot read), or None.

    Reported as the highest directory that blocks it, so the line names what to fix (``/root``, not a
    directory deep inside the virtualenv).
    """
    for entry in entries:
        if not entry or not os.path.isabs(entry):
            continue
        if os.access(entry, os.R_OK | (os.X_OK if os.path.isdir(entry) else 0)):
            continue
        blocked = entry
        parent = os.path.dirname(blocked)
        while parent != blocked and not os.access(parent, os.X_OK):
            blocked, parent = parent, os.path.dirname(parent)
        if os.path.exists(entry) or blocked != entry:
            return blocked
    return None


def watch_late_imports(report: Callable[[str], None], user: str) -> None:
    """After the drop: report every new import, and refuse one the install cannot serve."""
    sys.meta_path.insert(0, _LateImportWatch(report, user))

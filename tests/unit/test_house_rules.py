"""The rules of the house, as imports: what each package may load, checked in a fresh interpreter.

- ``shared`` is the pure core both daemons load: no daemon, no launcher, and no trio (only the channel
  transport, ``shared/dgram.py``, moves bytes with trio);
- ``appd`` never loads ``secured``: the code that reads keys cannot run on the unprivileged side;
- ``secured`` never loads ``appd``;
- the launcher (and the pytest plugin over it) loads neither daemon's code, so it never reads a key;
- ``secured/credentials.py`` is the only module that loads a private key, and peer authentication
  (``secured/peerauth.py``, checking the client) does not load it.

The whole import closure counts, not just the import lines: a rule broken two modules down is still broken.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys

import pytest

import tls_privsep

TRANSPORT = "tls_privsep.shared.dgram"  # the one module of shared that may use trio
KEY_READER = "tls_privsep.secured.credentials"  # the one module that loads private keys
# cryptography's ways of turning bytes into a private key object.
KEY_LOADERS = frozenset({"load_pem_private_key", "load_der_private_key", "load_ssh_private_key",
                         "load_key_and_certificates", "load_pkcs12"})


def modules_of(package: str) -> list[str]:
    path = [f"{tls_privsep.__path__[0]}/{package}"]
    names = [f"tls_privsep.{package}"]
    names += [info.name for info in pkgutil.walk_packages(path, prefix=f"tls_privsep.{package}.")]
    return names


def loaded_after_importing(names: list[str]) -> set[str]:
    """Every module in ``sys.modules`` of a fresh interpreter after importing ``names``."""
    code = "import importlib, json, sys\nfor n in json.loads(sys.argv[1]): importlib.import_module(n)\n" \
           "print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-E", "-P", "-c", code, json.dumps(names)], capture_output=True, text=True,
                         check=True, cwd="/")
    return set(json.loads(run.stdout))


def within(loaded: set[str], package: str) -> set[str]:
    return {name for name in loaded if name == package or name.startswith(package + ".")}


def test_shared_loads_no_daemon_and_no_trio() -> None:
    loaded = loaded_after_importing([name for name in modules_of("shared") if name != TRANSPORT])
    assert within(loaded, "trio") == set()
    for package in ("tls_privsep.secured", "tls_privsep.appd", "tls_privsep.launcher"):
        assert within(loaded, package) == set()


def test_the_transport_is_the_only_trio_module_in_shared() -> None:
    assert "trio" in {name.split(".")[0] for name in loaded_after_importing([TRANSPORT])}


@pytest.mark.parametrize(("package", "forbidden"), [
    ("appd", "tls_privsep.secured"),
    ("secured", "tls_privsep.appd"),
    ("launcher", "tls_privsep.secured"),
    ("launcher", "tls_privsep.appd"),
])
def test_a_package_never_loads_the_other_side(package: str, forbidden: str) -> None:
    names = [name for name in modules_of(package) if not name.endswith("__main__")]
    names += [f"tls_privsep.{package}.__main__"]  # its program too (it does not run: __name__ is not __main__)
    assert within(loaded_after_importing(names), forbidden) == set()


def test_one_module_loads_private_keys() -> None:
    """Any use of cryptography's private-key loaders (a call, an import, a reference) outside the key
    reader; new modules are found on their own."""
    root = tls_privsep.__path__[0]
    users = set()
    for info in pkgutil.walk_packages([root], prefix="tls_privsep."):
        if info.ispkg:
            continue
        spec = info.module_finder.find_spec(info.name, None)
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = {alias.name for alias in node.names} if isinstance(node, ast.ImportFrom) else \
                {getattr(node, "attr", None), getattr(node, "id", None)}
            if names & KEY_LOADERS:
                users.add(info.name)
    assert users == {KEY_READER}


def test_checking_the_client_does_not_load_the_key_reader() -> None:
    assert KEY_READER not in loaded_after_importing(["tls_privsep.secured.peerauth"])

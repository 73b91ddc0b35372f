"""The integration fixtures: certificates, secured + appd pairs on 127.0.0.1:0, and what several modules share.

Plain helpers live in tests/integration/helpers.py; test modules import from there, never from each other.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest

from tests.integration.helpers import CERTS, Pair, Pki, Pool, TcpBackend, start_pair
from tls_privsep.launcher.testing import NotifySocket


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def pair(tmp_path: Path, pki: Pki) -> Iterator[Callable[..., Pair]]:
    """``pair(*args, certs="both")`` starts a secured + appd pair with ``args`` and the RSA and ECDSA certificates
    (or ``"rsa"``, ``"ecdsa"``, ``"none"``); ``secured_args``, ``appd_args`` and ``notify`` go to
    :func:`helpers.start_pair`. Every pair is stopped after the test."""
    started: list[Pair] = []

    def start(*args: str, certs: Literal["both", "rsa", "ecdsa", "none"] = "both", secured_args: Sequence[str] = (),
              appd_args: Sequence[str] = (), notify: NotifySocket | None = None) -> Pair:
        server = start_pair(tmp_path / f"server{len(started)}", [*pki.cert_args(*CERTS[certs]), *args],
                            secured_args=secured_args, appd_args=appd_args, notify=notify)
        started.append(server)
        return server

    yield start
    errors: list[BaseException] = []
    for server in started:
        try:
            server.stop()
        except BaseException as exc:  # the others are stopped all the same; the first error fails the test
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Pool]:
    """The module's shared pairs (:class:`helpers.Pool`), started on first use and stopped after its last test."""
    p = Pool(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]), pki)
    yield p
    p.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A stand-in for systemd's notify socket: give it to a pair (``notify=``) or set ``NOTIFY_SOCKET``."""
    with NotifySocket() as ns:
        yield ns


@pytest.fixture
def rundir() -> Iterator[Path]:
    """A launcher runtime directory (not yet created) under a 0711 directory in /tmp: as root the daemons run as
    nobody, and appd must still reach secured's socket in it."""
    d = Path(tempfile.mkdtemp(prefix="tls-privsep-life-"))
    os.chmod(d, 0o711)
    yield d / "run"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def keydir() -> Iterator[Path]:
    """A directory secured's user can read after dropping root (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="tls-privsep-reload-"))
    if os.geteuid() == 0:
        os.chown(d, pwd.getpwnam("nobody").pw_uid, -1)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def backend_factory() -> Iterator[Callable[..., TcpBackend]]:
    """``backend_factory(handler)``: a :class:`helpers.TcpBackend` on 127.0.0.1, closed after the test."""
    made: list[TcpBackend] = []

    def make(handler: Callable[[socket.socket, dict[str, object]], None]) -> TcpBackend:
        made.append(TcpBackend(handler))
        return made[-1]

    yield make
    for b in made:
        b.close()

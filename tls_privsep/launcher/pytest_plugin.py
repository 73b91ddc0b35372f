"""pytest plugin: test a service behind a real tls-privsep pair (docs/pytest-plugin.md).

Registered as the ``tls_privsep`` entry point of the ``pytest11`` group, so installing tls-privsep
makes the fixtures available; ``-p no:tls_privsep`` turns it off. Loading it costs an import of
:mod:`launcher.testing` and nothing else: the CA is made the first time a test asks for it.

Fixtures:

- ``tls_privsep_ca`` (session): a :class:`~launcher.testing.ThrowawayCA`.
- ``tls_privsep`` (function): a :class:`ServerFactory`; ``tls_privsep(backend=...)`` starts a pair and
  returns a running :class:`~launcher.testing.Server`, stopped after the test. When the test fails,
  both daemons' logs are added to its report.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from tls_privsep.launcher.testing import (
    LOG_TAIL,
    STARTUP_TIMEOUT,
    Backend,
    IssuedCert,
    KeyType,
    Server,
    StartupError,
    ThrowawayCA,
    start_server,
)

__all__ = ["IssuedCert", "Server", "ServerFactory", "StartupError", "ThrowawayCA"]

_SERVERS = pytest.StashKey[list[Server]]()


class ServerFactory:
    """The ``tls_privsep`` fixture: call it to start a pair; each one is stopped after the test."""

    def __init__(self, ca: ThrowawayCA, log_root: Path) -> None:
        self.ca = ca
        self.servers: list[Server] = []
        self._log_root = log_root

    def __call__(
        self,
        backend: Backend = "echo",
        *,
        alpn: Sequence[str] | str | None = None,
        tickets: int | None = None,
        client_ca: ThrowawayCA | str | os.PathLike[str] | None = None,
        client_auth: Literal["none", "optional", "required"] | None = None,
        certs: Sequence[IssuedCert | tuple[str | os.PathLike[str], str | os.PathLike[str]]] | None = None,
        key_type: KeyType = "ecdsa",
        listen: str | Sequence[str] = "127.0.0.1:0",
        versions: Sequence[Literal["1.2", "1.3"]] | None = None,
        args: Sequence[str] = (),
        secured_args: Sequence[str] = (),
        appd_args: Sequence[str] = (),
        user: str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> Server:
        log_dir = self._log_root / f"server{len(self.servers)}"
        server = start_server(
            self.ca, log_dir, backend, alpn=alpn, tickets=tickets, client_ca=client_ca, client_auth=client_auth,
            certs=certs, key_type=key_type, listen=listen, versions=versions, args=args, secured_args=secured_args,
            appd_args=appd_args, user=user, startup_timeout=startup_timeout,
        )
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every pair, even when stopping one of them fails."""
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.stop()
            except BaseException as exc:  # the others are still stopped; the first error is raised below
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def tls_privsep_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    """A throwaway CA for the whole session: ``.ca_file``, ``.cert_pem``, ``.issue()``, ``.client_context()``."""
    return ThrowawayCA(tmp_path_factory.mktemp("tls-privsep-ca"))


@pytest.fixture
def tls_privsep(
    request: pytest.FixtureRequest, tls_privsep_ca: ThrowawayCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory]:
    """``tls_privsep(backend, alpn=..., ...)`` starts secured + appd in front of ``backend``."""
    factory = ServerFactory(tls_privsep_ca, tmp_path_factory.mktemp("tls-privsep"))
    request.node.stash[_SERVERS] = factory.servers
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test that started pairs gets their logs in its report, one section per daemon."""
    report = yield
    servers = item.stash.get(_SERVERS, None)
    if servers and report.failed:
        for server in servers:
            for name in ("secured", "appd"):
                text = server.log_text(name)
                if len(text) > LOG_TAIL * 4:
                    text = "…\n" + text[-LOG_TAIL * 4:]
                report.sections.append((f"tls-privsep {name} log ({server.address})", text or "(empty)"))
    return report

"""shared/systemd.py against the protocol as systemd speaks it (environment variables and datagrams)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tls_privsep.shared import systemd

VARIABLES = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
             "CREDENTIALS_DIRECTORY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def _save(fds: tuple[int, ...]) -> list[int | None]:
    """Copies of fds 3.. (pytest may hold them) so a test can put sockets there the way systemd does."""
    saved: list[int | None] = []
    for fd in fds:
        try:
            saved.append(os.dup(fd))
        except OSError:
            saved.append(None)
    return saved


def _restore(fds: tuple[int, ...], saved: list[int | None]) -> None:
    for fd, copy in zip(fds, saved, strict=True):
        if copy is None:
            os.close(fd)
        else:
            os.dup2(copy, fd)
            os.close(copy)


def test_notify_is_a_noop_outside_systemd() -> None:
    assert systemd.notify("READY=1") is False


def test_notify_to_a_path(receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert systemd.notify("READY=1\nSTATUS=up")
    assert sock.recv(100) == b"READY=1\nSTATUS=up"


def test_reloading_carries_a_monotonic_timestamp(receiver: tuple[socket.socket, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    first, second = sock.recv(100).decode().split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) >= before


def test_notify_to_the_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"tls-privsep-unit-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize("address", ["relative/path", "@tls-privsep-nobody-listens-here", "/nonexistent/x"])
def test_notify_failures_are_false_not_fatal(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert systemd.notify("READY=1") is False


def test_listen_fds_only_for_our_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert systemd.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ  # consumed either way: a child must not take them for its own


def test_listen_fds_names_and_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = socket.socket(), socket.socket()
    saved = _save((3, 4))
    try:
        os.dup2(a.fileno(), 3)
        os.dup2(b.fileno(), 4)
        monkeypatch.setenv("LISTEN_FDS", "2")
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDNAMES", "https")
        assert systemd.listen_fds() == [(3, "https"), (4, "unknown")]
        assert not os.get_inheritable(3)
        assert not any(v in os.environ for v in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"))
    finally:
        _restore((3, 4), saved)
        a.close()
        b.close()


def test_inherited_sockets_picks_listening_sockets_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    idle = socket.socket()  # a stream socket that is not listening: closed, never served
    saved = _save((3, 4, 5))
    try:
        for fd, sock in zip((3, 4, 5), (idle, listening, other), strict=True):
            os.dup2(sock.fileno(), fd)
        monkeypatch.setenv("LISTEN_FDS", "3")
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDNAMES", "https:https:metrics")
        chosen = systemd.inherited_sockets(("https",), socket.SOCK_STREAM)
        assert [s.getsockname() for s in chosen] == [listening.getsockname()]
        for s in chosen:
            s.detach()
    finally:
        _restore((3, 4, 5), saved)
        for sock in (listening, other, idle):
            sock.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    assert systemd.watchdog_interval() == 3.0
    assert systemd.heartbeat_period() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert systemd.watchdog_interval() is None
    assert systemd.heartbeat_period() == systemd.STATUS_PERIOD


def test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert systemd.credential_path("rsa.key") is None
    assert systemd.resolve_credential("rsa.key") == "rsa.key"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert systemd.credential_path("rsa.key") == tmp_path / "rsa.key"
    assert systemd.credential_path("../etc/shadow") is None
    assert systemd.resolve_credential("rsa.key") == str(tmp_path / "rsa.key")
    assert systemd.resolve_credential("/etc/tls/rsa.key") == "/etc/tls/rsa.key"

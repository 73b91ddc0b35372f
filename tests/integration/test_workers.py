"""``--workers N``: both daemons as N pre-forked processes under one supervisor each.

What a user relies on: connections are spread over appd's workers (SO_REUSEPORT), a ticket from any secured worker
resumes on any other (they derive the same ticket keys), a killed worker is replaced while the others serve, reload
and stop reach every worker.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import USERS, Pki, alive, children, echo, free_port, launcher, wait_for

WORKERS = 2


def workers_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a supervisor's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def log_events(logfile: Path, event: str) -> list[dict[str, object]]:
    out = []
    for line in logfile.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            out.append(entry)
    return out


@pytest.fixture
def started(pki: Pki, rundir: Path, keydir: Path) -> Iterator[tuple[int, int, Path]]:
    """A background instance with two workers per daemon: (launcher pid, port, log file). The key is readable by
    secured's user, so that a reload (which reads it again after dropping root) can work."""
    port = free_port()
    cert, key = keydir / "cert.pem", keydir / "key.pem"
    shutil.copyfile(pki.ecdsa[0], cert)
    shutil.copyfile(pki.ecdsa[1], key)
    if os.geteuid() == 0:
        for path in (cert, key):
            os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    result = launcher("start", "--listen", f"127.0.0.1:{port}", "--cert", str(cert), "--key", str(key),
                      "--backend", "echo", "--workers", str(WORKERS), "--tickets", "2",
                      "--runtime-dir", str(rundir), "--log-format", "json", *USERS)
    assert result.returncode == 0, result.stderr
    pid = int((rundir / "tls-privsep.pid").read_text())
    try:
        yield pid, port, rundir / "tls-privsep.log"
    finally:
        launcher("stop", "--runtime-dir", str(rundir))


def test_workers_share_the_load_and_resume_each_others_tickets(pki: Pki, started: tuple[int, int, Path]) -> None:
    pid, port, logfile = started
    daemons = children(pid)
    for name in ("secured", "appd"):
        wait_for(lambda name=name: len(workers_of(daemons[name])) == WORKERS, 10, f"{name}'s workers")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    wait_for(lambda: echo(ctx, port), 10, "the first connection")

    resumed = 0
    session = None
    for i in range(40):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"n%d" % i)
            assert tls.recv(100) == b"n%d" % i
            resumed += tls.session_reused
            tls.recv(0)  # the tickets arrive after the first data
            session = tls.session if not tls.session_reused or i % 5 == 0 else session
            tls.unwrap()
    assert resumed >= 30, resumed  # every connection after the first ticket resumes, whichever worker took it

    done = wait_for(lambda: len(events := log_events(logfile, "handshake done")) >= 41 and events, 10, "logs")
    assert isinstance(done, list)
    by_worker = {(e["worker"], bool(e["resumed"])) for e in done}
    # Both secured workers served handshakes, and each resumed tickets (some sealed by the other worker).
    assert {(0, True), (1, True)} <= by_worker, by_worker
    conns = {e["worker"] for e in log_events(logfile, "connection")}
    assert conns == {0, 1}, conns  # SO_REUSEPORT spread the connections over appd's workers


def test_a_killed_worker_is_replaced_while_the_other_serves(pki: Pki, started: tuple[int, int, Path]) -> None:
    pid, port, logfile = started
    daemons = children(pid)
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    wait_for(lambda: echo(ctx, port), 10, "the first connection")
    for name in ("appd", "secured"):
        before = workers_of(daemons[name])
        assert len(before) == WORKERS
        os.kill(before[0], signal.SIGKILL)
        # Served meanwhile: a connection hashed to a dead appd copy waits for its successor; a handshake that
        # was in flight on a killed secured worker ends with a clean internal_error, and its appd reconnects.
        served = sum(echo(ctx, port) for _ in range(10))
        assert served >= 8, f"{served} of 10 connections served right after killing a {name} worker"
        wait_for(lambda name=name, before=before: len(now := workers_of(daemons[name])) == WORKERS
                 and before[0] not in now, 10, f"a new {name} worker")
    assert children(pid) == daemons  # the supervisors themselves never went away
    assert len(log_events(logfile, "worker exited; restarting")) == 2


def test_reload_and_stop_reach_every_worker(pki: Pki, started: tuple[int, int, Path], rundir: Path) -> None:
    pid, port, logfile = started
    daemons = children(pid)
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    wait_for(lambda: echo(ctx, port), 10, "the first connection")
    result = launcher("reload", "--runtime-dir", str(rundir))
    assert result.returncode == 0, (result.stdout, result.stderr)
    wait_for(lambda: len(log_events(logfile, "certificates reloaded")) >= WORKERS, 10, "every secured worker")
    assert echo(ctx, port)
    everyone = [pid, *daemons.values(), *workers_of(daemons["secured"]), *workers_of(daemons["appd"])]
    assert len(everyone) == 3 + 2 * WORKERS
    stopped = launcher("stop", "--runtime-dir", str(rundir))
    assert stopped.returncode == 0
    deadline = time.monotonic() + 10
    while any(alive(p) for p in everyone) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in everyone)


def test_workers_that_keep_dying_stop_their_daemon_and_the_launcher_restarts_it(
        pki: Pki, started: tuple[int, int, Path]) -> None:
    """kill -9 both appd workers, five rounds: a slot whose process died 5 times within 60 s makes appd's supervisor
    give up (one line, exit 70); the launcher restarts appd as a whole, which serves again."""
    pid, port, logfile = started
    supervisor = children(pid)["appd"]
    killed: set[int] = set()
    for _ in range(5):
        current = wait_for(lambda killed=killed: len(now := set(workers_of(supervisor))) == WORKERS
                           and not now & killed and now, 10, "a fresh pair of appd workers")
        assert isinstance(current, set)
        for worker in current:
            os.kill(worker, signal.SIGKILL)
        killed.update(current)
    wait_for(lambda: log_events(logfile, "workers keep dying; giving up"), 10, "appd's supervisor to give up")
    (gave_up,) = log_events(logfile, "workers keep dying; giving up")
    assert (gave_up["daemon"], gave_up["level"], gave_up["deaths"], gave_up["window"], gave_up["last_exit"]) == \
        ("appd", "error", 5, 60.0, "signal SIGKILL")
    restarts = [e for e in log_events(logfile, "worker exited; restarting") if e["daemon"] == "appd"]
    assert sorted({float(str(e["delay"])) for e in restarts}) == [0.1, 0.2, 0.4, 0.8]
    wait_for(lambda: "tls-privsep: appd exited (status 70); restarting in 0.1 s" in logfile.read_text(), 10,
             "the launcher to restart appd")
    wait_for(lambda: (new := children(pid).get("appd")) not in (None, supervisor) and
             len(workers_of(new)) == WORKERS, 20, "a new appd with its workers")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    wait_for(lambda: echo(ctx, port), 20, "connections after appd's restart")

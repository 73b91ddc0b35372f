"""Process lifecycle: the ``tls-privsep`` launcher (run, restarts, start/status/stop, check-config) and appd's drain.

Everything runs as real processes. The runtime directory lives directly under /tmp (mode 0711), because as root the
daemons drop to ``nobody`` and appd must still reach secured's socket in it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.helpers import ENV, USERS, Pair, Pki, alive, children, echo, free_port, launcher, wait_for
from tls_privsep.shared import cli

EX_CONFIG = 78


@pytest.fixture
def client_ctx(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def cert_args(pki: Pki) -> list[str]:
    return pki.cert_args("ecdsa", "rsa")


# ---- tls-privsep run ----------------------------------------------------------------------------------------------


def test_run_restarts_killed_daemons_and_stops_on_sigterm(pki: Pki, rundir: Path, client_ctx: ssl.SSLContext,
                                                         tmp_path: Path) -> None:
    port = free_port()  # fixed, so that a restarted appd listens where the client expects it
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [*cli.daemon_argv("launcher"), "run", "--listen", f"127.0.0.1:{port}", *cert_args(pki),
             "--backend", "echo", "--runtime-dir", str(rundir), "--log-format", "json", *USERS],
            stdout=o, stderr=e, env=ENV,
        )
    try:
        wait_for(lambda: "tls-privsep: ready" in out.read_text(), 20, "the ready line")
        ready = [line for line in out.read_text().splitlines() if line.startswith("tls-privsep: ready")]
        assert ready == [f"tls-privsep: ready on https://127.0.0.1:{port}/ (backend echo)"]
        # Not at once: the ready line can come before the channel is up (see test_ready_line_means_serving).
        wait_for(lambda: echo(client_ctx, port), 5, "the first connection")
        first = children(proc.pid)
        assert set(first) == {"secured", "appd"}

        # kill -9 appd: the launcher restarts it, new connections work again.
        killed = time.monotonic()
        os.kill(first["appd"], signal.SIGKILL)
        wait_for(lambda: "appd exited (signal SIGKILL); restarting" in err.read_text(), 5, "the restart message")
        wait_for(lambda: echo(client_ctx, port), 10, "connections after appd's restart")
        print(f"\nappd kill -9 -> connections work again after {time.monotonic() - killed:.2f} s")
        second = children(proc.pid)
        assert second["appd"] != first["appd"] and second["secured"] == first["secured"]

        # kill -9 secured: an established session goes on; new handshakes work within 2 s.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as established:
            established.sendall(b"before")
            assert established.recv(100) == b"before"
            os.kill(second["secured"], signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: echo(client_ctx, port), 2.0, "a handshake within 2 s of kill -9 secured")
            took = time.monotonic() - killed
            print(f"secured kill -9 -> new handshakes work after {took:.2f} s")
            assert "secured exited (signal SIGKILL); restarting" in err.read_text()
            established.sendall(b"after")  # records are appd's alone: secured's restart does not touch them
            assert established.recv(100) == b"after"
            established.unwrap()
        third = children(proc.pid)
        assert third["secured"] != second["secured"] and third["appd"] == second["appd"]

        # SIGTERM to the launcher: everything exits 0, promptly.
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        print(f"launcher SIGTERM -> exit 0 after {time.monotonic() - stopped:.2f} s")
        assert not any(alive(pid) for pid in third.values())
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children(proc.pid).values():
            os.kill(pid, signal.SIGKILL)


def test_ready_line_means_serving(pki: Pki, client_ctx: ssl.SSLContext, tmp_path: Path) -> None:
    """A client that connects the moment the ready line appears is served (tried on a few fresh launches)."""
    for attempt in range(5):
        rundir = Path(tempfile.mkdtemp(prefix="tls-privsep-ready-"))
        os.chmod(rundir, 0o711)
        with open(tmp_path / f"stderr{attempt}", "wb") as err:
            proc = subprocess.Popen(
                [*cli.daemon_argv("launcher"), "run", "--listen", "127.0.0.1:0", *cert_args(pki), "--backend",
                 "echo", "--runtime-dir", str(rundir / "run"), "--log-format", "json", *USERS],
                stdout=subprocess.PIPE, stderr=err, env=ENV, text=True,
            )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("tls-privsep: ready on https://127.0.0.1:"), line
            port = int(line.split("127.0.0.1:")[1].split("/")[0])
            served = echo(client_ctx, port)
        finally:
            proc.terminate()
            proc.wait(15)
            shutil.rmtree(rundir, ignore_errors=True)
        assert served, f"launch {attempt + 1}: refused right after the ready line:\n" + \
            (tmp_path / f"stderr{attempt}").read_text()[-2000:]


def test_start_status_stop_status(pki: Pki, rundir: Path, client_ctx: ssl.SSLContext) -> None:
    port = free_port()
    started = launcher("start", "--listen", f"127.0.0.1:{port}", *cert_args(pki), "--backend", "echo",
                       "--runtime-dir", str(rundir), "--log-format", "json", *USERS)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"tls-privsep: ready on https://127.0.0.1:{port}/"), started.stdout
        pid = int((rundir / "tls-privsep.pid").read_text())
        wait_for(lambda: echo(client_ctx, port), 5, "the first connection")  # see test_ready_line_means_serving
        status = launcher("status", "--runtime-dir", str(rundir))
        daemons = children(pid)
        assert set(daemons) == {"secured", "appd"}
        assert (status.returncode, status.stdout.splitlines()) == (0, [
            f"tls-privsep: running (pid {pid})",
            f"  secured: pid {daemons['secured']}, 0 restarts",
            f"  appd: pid {daemons['appd']}, 0 restarts",
        ])

        stopped = launcher("stop", "--runtime-dir", str(rundir))
        assert (stopped.returncode, stopped.stdout.strip()) == (0, "tls-privsep: stopped")
        assert not alive(pid)
        wait_for(lambda: not any(alive(p) for p in daemons.values()), 5, "the daemons to exit")
        assert not (rundir / "tls-privsep.pid").exists()
        status = launcher("status", "--runtime-dir", str(rundir))
        assert (status.returncode, status.stdout.strip()) == (3, "tls-privsep: not running")
        assert not echo(client_ctx, port)
    finally:
        launcher("stop", "--runtime-dir", str(rundir))


# ---- tls-privsep check-config -------------------------------------------------------------------------------------

def test_check_config_good(pki: Pki) -> None:
    result = launcher("check-config", *cert_args(pki))
    assert result.returncode == 0, result.stderr
    assert "tls-privsep: configuration OK" in result.stdout


def _missing_cert(pki: Pki, tmp: Path) -> list[str]:
    return ["--cert", str(tmp / "missing.pem"), "--key", str(pki.rsa[1])]


def _mismatched_key(pki: Pki, tmp: Path) -> list[str]:
    return ["--cert", str(pki.rsa[0]), "--key", str(pki.ecdsa[1])]


def _unknown_suite(pki: Pki, tmp: Path) -> list[str]:
    (tmp / "suite.toml").write_text('[secured]\ncipher_suites = ["TLS_AES_128_GCM_SHA256", "TLS_RC4_MD5"]\n')
    return ["-c", str(tmp / "suite.toml"), *cert_args(pki)]


def _malformed_toml(pki: Pki, tmp: Path) -> list[str]:
    (tmp / "broken.toml").write_text('[secured\ncipher_suites = ["TLS_AES_128_GCM_SHA256"\n')
    return ["-c", str(tmp / "broken.toml"), *cert_args(pki)]


def _cert_without_key(pki: Pki, tmp: Path) -> list[str]:
    return ["--cert", str(pki.rsa[0])]


@pytest.mark.parametrize(("make", "names"), [
    pytest.param(_missing_cert, ("missing.pem", "No such file"), id="missing-cert"),
    pytest.param(_mismatched_key, ("does not match",), id="key-mismatch"),
    pytest.param(_unknown_suite, ("suite.toml", "cipher_suites", "TLS_RC4_MD5"), id="unknown-suite"),
    pytest.param(_malformed_toml, ("broken.toml", "invalid TOML"), id="malformed-toml"),
    pytest.param(_cert_without_key, ("--cert", "--key"), id="cert-without-key"),
])
def test_check_config_bad(pki: Pki, tmp_path: Path, make: Callable[[Pki, Path], list[str]],
                          names: tuple[str, ...]) -> None:
    result = launcher("check-config", *make(pki, tmp_path))
    lines = result.stderr.splitlines()
    assert result.returncode == EX_CONFIG, result
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]


# ---- appd drains on SIGTERM ---------------------------------------------------------------------------------------


def test_sigterm_to_appd_drains_an_open_connection(pair: Callable[..., Pair], client_ctx: ssl.SSLContext) -> None:
    server = pair("--backend", "echo")
    with socket.create_connection((server.host, server.port), timeout=5) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"one")
        assert tls.recv(100) == b"one"
        server.appd.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        server.wait_log("appd", '"draining"')
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection((server.host, server.port), timeout=2).close()
        assert server.appd.poll() is None  # still there for the open connection
        tls.sendall(b"two")
        assert tls.recv(100) == b"two"
        tls.unwrap()
    assert server.appd.wait(5) == 0
    took = time.monotonic() - sent
    assert took < 10.0, f"appd took {took:.1f} s, more than its drain time"
    log = server.log_text("appd")
    assert '"outcome": "closed"' in log and "drain timeout" not in log


# ---- crash loops -------------------------------------------------------------------------------------------------


def events(text: str, daemon: str, event: str) -> list[dict[str, object]]:
    """The daemons' JSON log lines for one event, from the launcher's stderr (it passes theirs through)."""
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("daemon") == daemon and entry.get("event") == event:
            out.append(entry)
    return out


def test_a_daemon_that_keeps_dying_stops_the_launcher_with_one_line(pki: Pki, rundir: Path, tmp_path: Path) -> None:
    """kill -9 appd, each time once it is ready again: restarts after 0.1, 0.2, 0.4, 0.8 s; the fifth death within
    60 s stops everything, exit 70, one line naming appd and the last line it wrote."""
    err = tmp_path / "stderr"
    with open(err, "wb") as e:
        proc = subprocess.Popen(
            [*cli.daemon_argv("launcher"), "run", "--listen", "127.0.0.1:0", *cert_args(pki), "--backend", "echo",
             "--runtime-dir", str(rundir), "--log-format", "json", *USERS],
            stdout=subprocess.DEVNULL, stderr=e, env=ENV,
        )
    try:
        for death in range(5):
            wait_for(lambda death=death: len(events(err.read_text(), "appd", "ready")) > death, 20,
                     f"appd ready after {death} deaths")
            appd = children(proc.pid)["appd"]
            os.kill(appd, signal.SIGKILL)
            wait_for(lambda appd=appd: not alive(appd), 5, "appd gone")
        assert proc.wait(20) == 70
        daemons_left = children(proc.pid)
        assert not daemons_left
        text = err.read_text()
        lines = text.splitlines()
        restarting = [line for line in lines if line.startswith("tls-privsep: appd exited")]
        assert restarting == [f"tls-privsep: appd exited (signal SIGKILL); restarting in {d} s"
                              for d in ("0.1", "0.2", "0.4", "0.8")]
        (gave_up,) = [line for line in lines if line.startswith("tls-privsep: appd died")]
        prefix = "tls-privsep: appd died 5 times in 60 s (last exit: signal SIGKILL); last error: "
        assert gave_up.startswith(prefix) and gave_up.endswith("; giving up"), gave_up
        last = gave_up[len(prefix):-len("; giving up")]
        assert json.loads(last)["daemon"] == "appd"  # the last line appd wrote before its fifth death
        assert last in lines[:lines.index(gave_up)]  # and it went through unchanged
        assert "Traceback" not in text
        state = json.loads((rundir / "tls-privsep.state").read_text())
        assert state["launcher"] == {"pid": proc.pid, "state": "gave up", "message": gave_up[len("tls-privsep: "):]}
        assert state["daemons"]["appd"] == {"pid": None, "restarts": 4, "last_exit": -9, "last_error": last}
        assert state["daemons"]["secured"] == {"pid": None, "restarts": 0, "last_exit": None, "last_error": None}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children(proc.pid).values():
            os.kill(pid, signal.SIGKILL)


def test_status_shows_restarts_and_a_give_up(pki: Pki, rundir: Path) -> None:
    """In the background with --restart-limit 3: status lists each daemon's pid, restarts, last exit and last error
    line; after the third death the launcher is gone and status (1: dead, pid file left) says why."""
    started = launcher("start", "--listen", "127.0.0.1:0", *cert_args(pki), "--backend", "echo",
                       "--runtime-dir", str(rundir), "--log-format", "json", "--restart-limit", "3", *USERS)
    logfile = rundir / "tls-privsep.log"
    try:
        assert started.returncode == 0, started.stderr
        pid = int((rundir / "tls-privsep.pid").read_text())
        for death in range(2):
            wait_for(lambda death=death: len(events(logfile.read_text(), "appd", "ready")) > death, 20, "appd ready")
            os.kill(children(pid)["appd"], signal.SIGKILL)
        wait_for(lambda: len(events(logfile.read_text(), "appd", "ready")) == 3, 20, "appd ready again")
        daemons = children(pid)
        status = launcher("status", "--runtime-dir", str(rundir))
        assert status.returncode == 0, status
        lines = status.stdout.splitlines()
        assert lines[:2] == [f"tls-privsep: running (pid {pid})", f"  secured: pid {daemons['secured']}, 0 restarts"]
        appd_prefix = f"  appd: pid {daemons['appd']}, 2 restarts, last exit signal SIGKILL, last error: "
        assert lines[2].startswith(appd_prefix) and len(lines) == 3, lines
        assert json.loads(lines[2][len(appd_prefix):])["daemon"] == "appd"
        state = rundir / "tls-privsep.state"
        assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (os.geteuid(), 0o600)

        os.kill(daemons["appd"], signal.SIGKILL)  # the third death within 60 s
        wait_for(lambda: not alive(pid), 20, "the launcher to give up")
        status = launcher("status", "--runtime-dir", str(rundir))
        assert status.returncode == 1, status
        lines = status.stdout.splitlines()
        assert lines[0] == f"tls-privsep: dead, but pid file {rundir / 'tls-privsep.pid'} remains"
        assert lines[-1].startswith("  launcher: appd died 3 times in 60 s (last exit: signal SIGKILL); last error: ")
        assert lines[-1].endswith("; giving up")
        assert f"tls-privsep: {lines[-1][len('  launcher: '):]}" in logfile.read_text().splitlines()
    finally:
        launcher("stop", "--runtime-dir", str(rundir))

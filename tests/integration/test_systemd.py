"""The systemd side: unit files checked by systemd-analyze, socket activation and sd_notify for real.

No running systemd is needed: ``systemd-analyze`` checks units offline, ``systemd-socket-activate``
passes listening sockets exactly as PID 1 does (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), and an
abstract datagram socket stands in for ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, Pair, Pki, free_port, require_binary, stop_processes
from tls_privsep.launcher.testing import NotifySocket
from tls_privsep.shared import restarts

UNITS = ROOT / "systemd"
UNIT_FILES = sorted(p.name for p in UNITS.iterdir() if p.suffix in (".service", ".socket", ".target"))
VENV_BIN = Path(sys.executable).parent
MAX_EXPOSURE = {"tls-privsep-secured.service": 2.0, "tls-privsep-appd.service": 3.0}
AS_USER = ["--user", "nobody"] if os.geteuid() == 0 else []


def units_for_this_machine(dest: Path) -> Path:
    """Copies of the units whose ExecStart= names this checkout's console scripts.

    ``systemd-analyze verify`` refuses a unit whose ExecStart binary does not exist, and the units name
    the installed /usr/local/bin scripts. ``--root`` would need a whole fake tree (and does not apply to
    the units given as paths), so the copies point at the venv's scripts: everything else is verified
    byte for byte as shipped.
    """
    for name in UNIT_FILES:
        text = (UNITS / name).read_text()
        for script in ("secured", "appd"):
            text = text.replace(f"/usr/local/bin/{script} ", f"{VENV_BIN / script} ")
        (dest / name).write_text(text)
    return dest


def test_every_unit_verifies(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    assert {"tls-privsep.target", "tls-privsep-secured.service", "tls-privsep-secured.socket",
            "tls-privsep-appd.service", "tls-privsep-appd.socket"} <= set(UNIT_FILES)
    d = units_for_this_machine(tmp_path)
    # All at once, so Requires=/Wants=/Service= between them resolve against these files.
    out = subprocess.run([analyze, "verify", *(str(d / n) for n in UNIT_FILES)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_units_as_shipped_name_the_installed_scripts() -> None:
    for script in ("secured", "appd"):
        text = (UNITS / f"tls-privsep-{script}.service").read_text()
        assert f"ExecStart=/usr/local/bin/{script} -c /etc/tls-privsep/config.toml\n" in text
        assert "Type=notify\n" in text and "RestartPreventExitStatus=64 77 78\n" in text
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in (UNITS / "tls-privsep-secured.service").read_text()
    assert "\nExecReload=" not in (UNITS / "tls-privsep-appd.service").read_text()  # nothing to reload there
    assert "\nBindsTo=" not in (UNITS / "tls-privsep-appd.service").read_text()


def test_units_give_up_on_a_crash_loop_as_the_launcher_does() -> None:
    """StartLimitBurst= starts within StartLimitIntervalSec=: after restarts.LIMIT deaths within restarts.WINDOW
    seconds, systemd refuses another start, as the launcher gives up (Restart=on-failure restarts the others)."""
    for script in ("secured", "appd"):
        text = (UNITS / f"tls-privsep-{script}.service").read_text()
        unit = text[text.index("[Unit]\n"):text.index("[Service]\n")]
        service = text[text.index("[Service]\n"):]
        assert f"\nStartLimitIntervalSec={restarts.WINDOW:g}s\n" in unit, script
        assert f"\nStartLimitBurst={restarts.LIMIT}\n" in unit, script
        assert f"\nRestartSec={restarts.FIRST_DELAY * 1000:g}ms\n" in service, script
        assert "\nRestart=on-failure\n" in service, script


def test_security_exposure(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    analyze = require_binary("systemd-analyze")
    d = units_for_this_machine(tmp_path)
    for unit, limit in MAX_EXPOSURE.items():
        out = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(d / unit)],
                             capture_output=True, text=True, timeout=60)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
        assert found, out.stdout + out.stderr
        score = float(found.group(1))
        costs = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("✗")]
        print(f"\n{unit}: exposure {score} (limit {limit}); still costing: {', '.join(costs)}")
        record_property(f"exposure {unit}", score)
        assert score <= limit, out.stdout


def test_sysusers_and_tmpfiles(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}", str(UNITS / "sysusers.d/tls-privsep.conf")], check=True,
                   capture_output=True, timeout=30)
    groups = {line.split(":")[0]: line.split(":")[3] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert set(groups["tls-privsep"].split(",")) == {"tls-secured", "tls-appd"}
    users = (tmp_path / "etc/passwd").read_text()
    assert "tls-secured:" in users and "tls-appd:" in users
    if os.geteuid() != 0:
        return  # creating root-owned directories with another group needs root
    tmpfiles = require_binary("systemd-tmpfiles")
    subprocess.run([tmpfiles, f"--root={tmp_path}", "--create", str(UNITS / "tmpfiles.d/tls-privsep.conf")],
                   check=True, capture_output=True, timeout=30)
    gid = int(next(line.split(":")[2] for line in (tmp_path / "etc/group").read_text().splitlines()
                   if line.startswith("tls-privsep:")))
    for d in ("etc/tls-privsep", "run/tls-privsep"):
        st = (tmp_path / d).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o750, 0, gid)


# ---- sd_notify and socket activation, for real --------------------------------------------------------

def _has(pid: int, prefix: str) -> Callable[[list[tuple[int, str]]], bool]:
    return lambda msgs: any(sender == pid and any(line.startswith(prefix) for line in text.split("\n"))
                            for sender, text in msgs)


def _echo(server_port: int, ca: Path, payload: bytes, timeout: float = 30.0) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", server_port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        tls.sendall(payload)
        return tls.recv(len(payload) + 100)


def test_notify_ready_status_watchdog_stopping(pair: Callable[..., Pair], pki: Pki,
                                              notify_socket: NotifySocket) -> None:
    notify_socket.watchdog = 0.3  # WATCHDOG_USEC=300000: heartbeat (WATCHDOG=1 + STATUS) every 0.15 s
    server = pair("--backend", "echo", notify=notify_socket)
    appd = server.appd.pid
    notify_socket.collect(lambda m: _has(appd, "READY=1")(m) and _has(server.secured.pid, "READY=1")(m))
    assert _echo(server.port, pki.ca_file, b"notify me") == b"notify me"
    notify_socket.collect(lambda m: any("1 accepted" in line for line in notify_socket.lines(appd))
                          and any("1 handshakes done" in line for line in notify_socket.lines(server.secured.pid)))
    server.appd.send_signal(signal.SIGTERM)
    server.appd.wait(10)
    notify_socket.collect(_has(appd, "STOPPING=1"), timeout=2)

    lines = notify_socket.lines(appd)
    assert "READY=1" in lines and "STOPPING=1" in lines, lines
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert "WATCHDOG=1" in lines
    assert any(line.startswith("STATUS=") and "1 accepted" in line for line in lines), lines
    assert "channel up" in lines[lines.index("READY=1") + 1]  # READY=1 waited for the channel
    assert not any(line == "READY=1" for line in lines[lines.index("STOPPING=1"):])
    server.secured.wait(10)  # its inherited channel closed with appd
    notify_socket.collect(_has(server.secured.pid, "STOPPING=1"), timeout=2)
    secured = notify_socket.lines(server.secured.pid)
    assert "READY=1" in secured and "STOPPING=1" in secured, secured
    assert any(line.startswith("STATUS=") and "1 handshakes done" in line for line in secured), secured


def test_appd_without_secured_never_says_ready(notify_socket: NotifySocket) -> None:
    """secured down: appd does not report READY=1 (every handshake would fail); after its startup timeout
    it exits 69 with one line, and systemd sees it fail instead of a service that only looks up."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address}
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-nosecured-"))
    os.chmod(base, 0o711)  # reachable by nobody: the socket is missing, not forbidden
    try:
        (base / "appd.toml").write_text("[appd]\nstartup_timeout = 1.0\n")
        appd = subprocess.Popen([str(VENV_BIN / "appd"), "-c", str(base / "appd.toml"), "--log-format", "json",
                                 *AS_USER, "--listen", "127.0.0.1:0", "--socket", str(base / "nobody-listens.sock")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr = appd.communicate(timeout=20)
    finally:
        shutil.rmtree(base)
    assert appd.returncode == 69, stderr
    assert stderr.splitlines()[-1] == (
        f"appd: error: no channel to secured at {base / 'nobody-listens.sock'} after 1 s "
        "(No such file or directory): is secured running?")
    notify_socket.collect(lambda _: False, timeout=0.3)
    assert "READY=1" not in notify_socket.lines(appd.pid)


PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import ctypes,sys; l=ctypes.CDLL(None);"
                            f"sys.exit(0 if l.prctl({PR_SET_MDWE},{PR_MDWE_REFUSE_EXEC_GAIN},0,0,0)==0 else 1)"])
    return probe.returncode == 0


def _deny_write_execute() -> None:
    """Child side: what MemoryDenyWriteExecute=yes enforces, via the kernel's own flag (kept across exec)."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE")


def test_socket_activation_both_daemons(pki: Pki, notify_socket: NotifySocket) -> None:
    """appd on an activated TCP socket named https, secured on an activated SEQPACKET socket, keys as
    credentials (relative paths + CREDENTIALS_DIRECTORY), both under no-W+X memory when the kernel can."""
    activate = require_binary("systemd-socket-activate")
    mdwe = _mdwe_supported()
    port = free_port()
    # Not under pytest's 0700 tmp dirs: appd drops to nobody (as root) and must reach the channel socket.
    with tempfile.TemporaryDirectory(prefix="tls-privsep-sa-") as tmp:
        d = Path(tmp)
        d.chmod(0o755)
        channel = d / "secured.sock"
        common = ["-E", f"NOTIFY_SOCKET={notify_socket.address}", "-E", f"CREDENTIALS_DIRECTORY={pki.dir}"]
        certs = ["--cert", pki.rsa[0].name, "--key", pki.rsa[1].name]
        procs: list[subprocess.Popen[bytes]] = []
        preexec = _deny_write_execute if mdwe else None
        try:
            with open(d / "secured.log", "wb") as slog, open(d / "appd.log", "wb") as alog:
                procs.append(subprocess.Popen(
                    [activate, "--seqpacket", "-l", str(channel), "--fdname=secured", *common,
                     str(VENV_BIN / "secured"), "--log-format", "json", *AS_USER, *certs],
                    stdout=slog, stderr=slog, preexec_fn=preexec))
                procs.append(subprocess.Popen(
                    [activate, "-l", f"127.0.0.1:{port}", "--fdname=https", *common,
                     str(VENV_BIN / "appd"), "--log-format", "json", *AS_USER, "--socket", str(channel),
                     "--listen", "127.0.0.1:1", "--backend", "echo"],
                    stdout=alog, stderr=alog, preexec_fn=preexec))
            deadline = time.monotonic() + 10
            while not channel.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            channel.chmod(0o666)  # SocketMode= stands in; systemd-socket-activate makes it 0644 whatever the umask
            # systemd-socket-activate execs appd on the first connection; appd's channel connect execs secured.
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    break
                except ConnectionRefusedError:  # not listening yet
                    assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                    time.sleep(0.02)
            secured, appd = procs
            msgs = notify_socket.collect(lambda m: _has(appd.pid, "READY=1")(m) and _has(secured.pid, "READY=1")(m))
            assert _has(appd.pid, "READY=1")(msgs) and _has(secured.pid, "READY=1")(msgs), msgs
            assert any("channel up" in line for line in notify_socket.lines(appd.pid))
            assert _echo(port, pki.ca_file, b"activated") == b"activated"
            alog_text = (d / "appd.log").read_text()
            assert '"socket activation"' in alog_text, alog_text
        except BaseException:
            for name in ("secured", "appd"):
                print(f"--- {name}.log\n" + (d / f"{name}.log").read_text(errors="replace"))
            raise
        finally:
            stop_processes(procs)
    if not mdwe:
        pytest.skip("served over activated sockets, but the kernel lacks PR_SET_MDWE: no-W+X not exercised")



def test_example_config_checks_with_credentials(pki: Pki, tmp_path: Path) -> None:
    """systemd/config.toml as the units use it: relative key paths found in $CREDENTIALS_DIRECTORY."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, source in (("rsa", pki.rsa), ("ecdsa", pki.ecdsa)):
        shutil.copy(source[0], creds / f"{name}.pem")
        shutil.copy(source[1], creds / f"{name}.key")
    config = str(UNITS / "config.toml")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(creds)}
    # tls-appd exists only where sysusers.d ran: name another user for secured's channel allow-list.
    out = subprocess.run([str(VENV_BIN / "secured"), "-c", config, "--appd-user", "nobody", "--check"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.count(": OK") == 2, out.stdout + out.stderr
    env.pop("CREDENTIALS_DIRECTORY")
    out = subprocess.run([str(VENV_BIN / "secured"), "-c", config, "--appd-user", "nobody", "--check"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 78 and "rsa.pem" in out.stderr  # outside systemd a relative path stays relative
    out = subprocess.run([str(VENV_BIN / "appd"), "-c", config, "--check"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr

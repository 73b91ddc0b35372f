"""First contact: the daemons work from any install root starts them from, and every start-up failure is one line.

As root, both daemons drop to an unprivileged user once their sockets and keys are open. An install in a
0700 directory (root's home, ``mktemp -d``) is then out of their reach, so they must have imported
everything before the drop (tls_privsep/shared/preload.py). The sealed-install test runs the interop,
reload and backend suites against daemons started from such an install; every pair those suites start
fails its test if a daemon logged a late import (tests/integration/helpers.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import tls_privsep
from tests.integration.helpers import AS_ROOT, ROOT, Pki
from tls_privsep.shared import cli

needs_root = pytest.mark.skipif(not AS_ROOT and os.environ.get("CI") != "true",
                                reason="the daemons drop privileges only when started as root")


def _runtime_distributions(name: str) -> list[importlib.metadata.Distribution]:
    """What ``name`` needs at run time (no extras; markers as this interpreter sees them), each once."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        current = canonicalize_name(todo.pop())
        if current in found:
            continue
        found[current] = dist = importlib.metadata.distribution(current)
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return [dist for key, dist in found.items() if key != canonicalize_name(name)]


@pytest.fixture(scope="module")
def sealed_python() -> Iterator[Path]:
    """A virtualenv holding tls_privsep and its run-time dependencies, in a 0700 directory root owns."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-sealed-"))
    assert (base.stat().st_mode & 0o777) == 0o700
    try:
        venv.create(base / "venv", with_pip=False, symlinks=True)
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(base / "venv")}))
        shutil.copytree(Path(tls_privsep.__file__).parent, purelib / "tls_privsep",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for dist in _runtime_distributions("tls-privsep"):
            for file in dist.files or ():
                source = Path(str(dist.locate_file(file)))
                target = (purelib / file).resolve()
                if not source.is_file() or purelib.resolve() not in target.parents:
                    continue  # console scripts and other files outside site-packages
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        python = base / "venv" / "bin" / "python"
        check = subprocess.run([python, "-E", "-P", "-c", "import tls_privsep.secured.handshake, tls_privsep.appd.stream,"
                                " trio, cbor2, structlog, cryptography.x509; print(tls_privsep.__file__)"],
                               capture_output=True, text=True, cwd="/", check=False)
        assert check.returncode == 0, check.stderr
        assert check.stdout.startswith(str(base)), check.stdout
        yield python
    finally:
        shutil.rmtree(base)


@needs_root
def test_daemons_from_a_sealed_install_serve_every_code_path(sealed_python: Path, tmp_path: Path) -> None:
    """Every suite, group, signature scheme, HRR, tickets and resumption, client certificates, KeyUpdate,
    ALPN, reload and each backend, against daemons started as root from a 0700 install and dropped to
    nobody, who cannot read a byte of it: all pass, and no daemon imports anything after the drop."""
    env = {**os.environ, "TLS_PRIVSEP_TEST_PYTHON": str(sealed_python), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "run"),
         "tests/integration/test_interop.py", "tests/integration/test_reload.py", "tests/integration/test_traffic.py",
         "tests/integration/test_smoke.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary


LATE_IMPORT_PROBE = textwrap.dedent("""
    import os, sys
    from tls_privsep.shared import cli, hardening, preload

    sys.path.insert(0, sys.argv[1])  # a directory only root may read, like a venv under /root
    sys.path.insert(0, sys.argv[2])  # a zip anyone may read

    def body():
        preload.preload("appd", ("tls_privsep.shared",))
        hardening.drop_privileges("nobody", daemon="appd")
        preload.watch_late_imports(lambda module: print("late import", module, file=sys.stderr), "nobody")
        import _symtable  # noqa: F401 - builtin: imports although an entry on the path is unreadable
        import from_a_zip  # noqa: F401 - readable where it is: imports too
        import never_preloaded  # noqa: F401

    sys.exit(cli.run_daemon("appd", body))
""")


@needs_root
def test_a_late_import_from_an_unreadable_install_is_one_line(tmp_path: Path) -> None:
    """Should any module still be imported after the drop, the daemon stops with one line that names the
    directory and the fix, and status 77 (EX_NOPERM), not a traceback."""
    sealed = Path(tempfile.mkdtemp(prefix="tls-privsep-unreadable-"))
    opened = Path(tempfile.mkdtemp(prefix="tls-privsep-readable-"))
    try:
        (sealed / "lib").mkdir()
        (sealed / "lib" / "never_preloaded.py").write_text("")
        zipped = opened / "open.zip"
        with zipfile.ZipFile(zipped, "w") as archive:
            archive.writestr("from_a_zip.py", "")
        os.chmod(opened, 0o755)
        os.chmod(zipped, 0o644)
        run = subprocess.run([sys.executable, "-c", LATE_IMPORT_PROBE, str(sealed / "lib"), str(zipped)], cwd="/",
                             capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(sealed)
        shutil.rmtree(opened)
    assert run.returncode == cli.EX_NOPERM, run.stderr
    assert run.stderr.splitlines() == [
        "late import _symtable",
        "late import from_a_zip",
        "late import never_preloaded",
        f"appd: error: cannot read {sealed} as user nobody (Permission denied): install where that user can read it",
    ]


# ---- start-up failures: one line each, with a sysexits status ------------------------------------------


def _appd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    as_user = ["--user", "nobody"] if AS_ROOT else []
    return subprocess.run([*cli.daemon_argv("appd"), "--log-format", "json", *as_user, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _secured(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli.daemon_argv("secured"), "--log-format", "json", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def _errors(run: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the JSON log lines: what a person reads."""
    return [line for line in run.stderr.splitlines() if not line.startswith("{")]


def test_unreadable_key_is_one_line(pki: Pki, tmp_path: Path) -> None:
    run = _secured("--cert", str(pki.ecdsa[0]), "--key", str(tmp_path / "gone.key"), "--socket", str(tmp_path / "s"),
                   "--user", "nobody")
    assert run.returncode == cli.EX_CONFIG
    assert _errors(run) == [f"secured: error: {tmp_path / 'gone.key'}: cannot read: No such file or directory"]


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[appd]\nlisten = 8443\n")
    run = _appd("-c", str(tmp_path / "bad.toml"))
    assert run.returncode == cli.EX_CONFIG
    assert _errors(run) == [f"appd: error: {tmp_path / 'bad.toml'}: appd.listen must be a list of strings"]


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _appd("--listen", f"127.0.0.1:{port}", "--socket", str(tmp_path / "s"))
    assert run.returncode == cli.EX_CONFIG
    assert _errors(run) == [f"appd: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_user_missing_is_one_line(tmp_path: Path) -> None:
    run = _appd("--listen", "127.0.0.1:0", "--socket", str(tmp_path / "s"), "--secured-user", "no-such-user-here")
    assert run.returncode == cli.EX_CONFIG
    assert _errors(run) == ["appd: error: no such user 'no-such-user-here'"]


def test_channel_socket_missing_is_one_line(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-nochannel-"))
    os.chmod(base, 0o711)
    try:
        (base / "appd.toml").write_text("[appd]\nstartup_timeout = 0.5\n")
        run = _appd("-c", str(base / "appd.toml"), "--listen", "127.0.0.1:0", "--socket", str(base / "secured.sock"))
    finally:
        shutil.rmtree(base)
    assert run.returncode == cli.EX_UNAVAILABLE
    assert _errors(run) == [f"appd: error: no channel to secured at {base / 'secured.sock'} after 0.5 s "
                            "(No such file or directory): is secured running?"]


@needs_root
def test_channel_socket_out_of_reach_is_one_line() -> None:
    """The socket sits below a directory appd's user may not enter (a 0700 --runtime-dir parent): appd says so
    at once instead of saying ready and failing every handshake."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-closed-"))
    try:
        (base / "run").mkdir(mode=0o711)
        run = _appd("--listen", "127.0.0.1:0", "--socket", str(base / "run" / "secured.sock"))
    finally:
        shutil.rmtree(base)
    assert run.returncode == cli.EX_NOPERM
    assert _errors(run) == [f"appd: error: cannot reach secured's socket {base / 'run' / 'secured.sock'} as user "
                            "nobody (Permission denied): let that user enter every directory above it, or choose "
                            "another --runtime-dir"]


PEER = textwrap.dedent("""
    import os, socket, sys
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(sys.argv[1])
    os.chmod(sys.argv[1], 0o666)
    os.setgid(65534); os.setuid(65534)  # listen() as nobody: that is the uid appd's SO_PEERCRED sees
    listener.listen()
    print("listening", flush=True)
    conn, _ = listener.accept()
    print("accepted", conn.recv(100), flush=True)
""")


@needs_root
def test_a_channel_peer_that_is_not_secured_is_refused(tmp_path: Path) -> None:
    """appd expects secured to run as 'daemon'; whatever listens on the path runs as nobody: refused before a
    byte is sent (SO_PEERCRED), one line, status 77."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-peer-"))
    os.chmod(base, 0o711)
    path = base / "secured.sock"
    fake = subprocess.Popen([sys.executable, "-c", PEER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "listening\n"
        run = _appd("--listen", "127.0.0.1:0", "--socket", str(path), "--secured-user", "daemon")
        fake.kill()
        out, _ = fake.communicate()
    finally:
        shutil.rmtree(base)
    assert run.returncode == cli.EX_NOPERM
    assert _errors(run) == [f"appd: error: the process answering on {path} runs as uid 65534, not as secured's user "
                            "(uid 1): refusing it (set appd.secured_user to secured's user)"]
    assert "accepted b''" in out or out == ""  # the fake saw at most a connection close, never a hello


def test_launcher_port_in_use_stops_at_once(pki: Pki, tmp_path: Path) -> None:
    """Through the launcher: appd's one line and nothing more, the launcher's exit status 78."""
    users = ["--secured-user", "nobody", "--appd-user", "nobody"] if AS_ROOT else []
    rundir = Path(tempfile.mkdtemp(prefix="tls-privsep-rundir-"))
    os.chmod(rundir, 0o711)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            run = subprocess.run([*cli.daemon_argv("launcher"), "run", "--listen", f"127.0.0.1:{port}",
                                  "--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1]), "--runtime-dir", str(rundir / "run"), "--log-format", "json", *users],
                                 capture_output=True, text=True, timeout=60, check=False)
        finally:
            shutil.rmtree(rundir)
    assert run.returncode == cli.EX_CONFIG, run.stderr
    assert _errors(run) == [f"appd: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def _launcher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli.daemon_argv("launcher"), *args], capture_output=True, text=True, timeout=60,
                          check=False)


@needs_root
def test_launcher_runtime_dir_out_of_reach_is_one_line(pki: Pki) -> None:
    """`start --runtime-dir /tmp/x/run` with /tmp/x 0700 used to print "ready" and then fail every handshake."""
    closed = Path(tempfile.mkdtemp(prefix="tls-privsep-closed-"))
    try:
        run = _launcher("start", "--runtime-dir", str(closed / "run"), "--listen", "127.0.0.1:0",
                        "--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1]),
                        "--secured-user", "nobody", "--appd-user", "nobody")
    finally:
        shutil.rmtree(closed)
    assert run.returncode == cli.EX_CONFIG
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        f"tls-privsep: error: appd runs as nobody and nobody cannot enter {closed} (mode drwx------): it could never "
        f"reach secured's socket in {closed / 'run'}; choose a --runtime-dir that user can reach"]


@needs_root
def test_launcher_user_missing_is_one_line(pki: Pki, tmp_path: Path) -> None:
    run = _launcher("run", "--runtime-dir", str(tmp_path / "run"), "--listen", "127.0.0.1:0",
                    "--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1]),
                    "--secured-user", "no-such-user-here", "--appd-user", "nobody")
    assert run.returncode == cli.EX_CONFIG
    assert run.stderr.splitlines() == ["tls-privsep: error: no such user 'no-such-user-here'"]


@needs_root
def test_secured_refusing_appds_user_is_one_line(pki: Pki) -> None:
    """secured runs as nobody and admits only itself; appd runs as daemon: secured closes each channel at
    once. appd must not say ready (nor reconnect in a busy loop): one line, 77."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-refused-"))
    os.chmod(base, 0o711)
    path = base / "secured.sock"
    (base / "secured.toml").write_text("[secured]\nsocket_mode = 0o666\n")
    secured = subprocess.Popen([*cli.daemon_argv("secured"), "-c", str(base / "secured.toml"), "--log-format", "json",
                                "--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1]), "--socket", str(path),
                                "--user", "nobody"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        run = subprocess.run([*cli.daemon_argv("appd"), "--log-format", "json", "--user", "daemon", "--listen",
                              "127.0.0.1:0", "--socket", str(path), "--secured-user", "nobody"],
                             capture_output=True, text=True, timeout=30, check=False)
    finally:
        secured.terminate()
        _, secured_log = secured.communicate(timeout=10)
        shutil.rmtree(base)
    assert run.returncode == cli.EX_NOPERM, run.stderr
    assert _errors(run) == [f"appd: error: secured at {path} closed the channel at once: it does not admit user "
                            "daemon (give secured --appd-user daemon, or add its uid to secured.allowed_uids)"]
    assert secured_log.count('"channel refused"') == 1  # one attempt, not a loop


def test_a_listener_that_never_answers_is_one_line(tmp_path: Path) -> None:
    """Something accepts on the channel path (as systemd does for a secured that then fails to start) and
    never answers the hello: appd gives up after its startup timeout instead of waiting forever."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-silent-"))
    os.chmod(base, 0o711)
    path = base / "secured.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        silent.bind(str(path))
        os.chmod(path, 0o666)
        silent.listen()
        (base / "appd.toml").write_text("[appd]\nstartup_timeout = 1.0\n")
        started = time.monotonic()
        run = _appd("-c", str(base / "appd.toml"), "--listen", "127.0.0.1:0", "--socket", str(path))
        took = time.monotonic() - started
    finally:
        silent.close()
        shutil.rmtree(base)
    assert run.returncode == cli.EX_UNAVAILABLE, run.stderr
    assert _errors(run) == [f"appd: error: secured at {path} accepted the channel but did not answer within 1 s: "
                            "is secured starting or stuck?"]
    assert took < 10


@pytest.mark.parametrize("command", ["run", "start", "status", "stop"])
def test_launcher_runtime_dir_that_cannot_be_one_is_one_line(command: str, pki: Pki) -> None:
    extra = ["--listen", "127.0.0.1:0", "--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1])]
    if AS_ROOT:
        extra += ["--secured-user", "nobody", "--appd-user", "nobody"]
    run = _launcher(command, "--runtime-dir", "/etc/passwd/x", *(extra if command in ("run", "start") else []))
    if command in ("run", "start"):
        assert (run.returncode, run.stderr.splitlines()) == (
            cli.EX_CONFIG, ["tls-privsep: error: runtime directory /etc/passwd/x: Not a directory"])
    else:  # nothing of ours can run there
        assert (run.returncode, run.stdout, run.stderr) == (3 if command == "status" else 0, "tls-privsep: not running\n", "")


def test_launcher_stops_at_secureds_line_without_waiting_for_appd(pki: Pki, tmp_path: Path) -> None:
    """secured refuses its key: the launcher exits with secured's line and 78 at once, not after appd's
    startup timeout with appd's line on top."""
    users = ["--secured-user", "nobody", "--appd-user", "nobody"] if AS_ROOT else []
    rundir = Path(tempfile.mkdtemp(prefix="tls-privsep-rundir-"))
    os.chmod(rundir, 0o711)
    started = time.monotonic()
    try:
        run = _launcher("run", "--listen", "127.0.0.1:0", "--cert", str(pki.ecdsa[0]), "--key", str(tmp_path),
                        "--runtime-dir", str(rundir / "run"), "--log-format", "json", *users)
    finally:
        shutil.rmtree(rundir)
    assert run.returncode == cli.EX_CONFIG, run.stderr
    assert _errors(run) == [f"secured: error: {tmp_path}: cannot read: Is a directory"]
    assert time.monotonic() - started < 8  # appd's startup timeout is 10 s


@needs_root
def test_the_launcher_from_a_sealed_install_with_workers_and_a_reload(sealed_python: Path, pki: Pki) -> None:
    """The launcher's own path from a 0700 install: a channel over the runtime directory's socket, SO_PEERCRED,
    two workers per daemon, tickets and resumption, and a reload (SIGHUP) that re-reads the keys as nobody.
    Every daemon's lines are checked: no import after the drop, no traceback."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-launched-"))
    os.chmod(base, 0o711)
    keys = base / "keys"
    keys.mkdir(mode=0o755)
    args: list[str] = []
    for issued in (pki.rsa, pki.ecdsa):
        for source in issued:
            shutil.copy(source, keys / Path(source).name)
            os.chmod(keys / Path(source).name, 0o644)  # readable by nobody: the reload reads them again
        args += ["--cert", str(keys / Path(issued[0]).name), "--key", str(keys / Path(issued[1]).name)]
    launcher = subprocess.Popen(
        [*cli.daemon_argv("launcher", str(sealed_python)), "run", "--listen", "127.0.0.1:0", *args, "--workers", "2",
         "--runtime-dir", str(base / "run"), "--log-format", "json", "--secured-user", "nobody", "--appd-user",
         "nobody"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        assert launcher.stdout is not None
        ready = launcher.stdout.readline()
        assert ready.startswith("tls-privsep: ready on https://127.0.0.1:"), ready
        port = int(ready.split("https://127.0.0.1:")[1].split("/")[0])
        context = pki.ca.client_context()
        session = None
        for attempt in range(6):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"ping %d" % attempt)
                assert tls.recv(100) == b"ping %d" % attempt
                assert tls.session_reused == (attempt > 0 and session is not None)
                session = tls.session
        launcher.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"after reload")
            assert tls.recv(100) == b"after reload"
    finally:
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=30)
        shutil.rmtree(base)
    assert launcher.returncode == 0, stderr[-3000:]
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e for e in events if e.get("event") == "late import"] == []
    assert "Traceback" not in stderr
    assert any(e.get("event") == "certificates reloaded" for e in events), stderr[-3000:]
    assert sum(e.get("event") == "handshake done" for e in events) == 7

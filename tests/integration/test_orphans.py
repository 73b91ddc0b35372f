"""No orphans, ever: whatever kills the launcher (or a test process), and however a pair fails to start, no daemon and
no worker is left running.

The daemons ask the kernel for SIGTERM at their parent's death (``PR_SET_PDEATHSIG``, armed again after dropping
root); workers ask it of their supervisor. Processes are found in /proc: by ancestry, or by a path unique to the test
in their command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import ENV, USERS, Pki, alive, wait_for
from tls_privsep.launcher import testing
from tls_privsep.shared import cli

GONE_WITHIN = 5.0  # seconds: SIGTERM, and appd drains (nothing is connected)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def descendants(root: int) -> set[int]:
    """Every live process under ``root`` (children, their workers, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[0] != "Z":
            parents[int(entry.name)] = stat[1]
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def mentioning(text: str) -> set[int]:
    """Live processes whose command line contains ``text``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        stat = _stat(int(entry.name))
        if text.encode() in cmdline and stat is not None and stat[0] != "Z":
            found.add(int(entry.name))
    return found


def our_zombies() -> set[int]:
    """Children of this process that exited and were never reaped."""
    me = os.getpid()
    return {int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and _stat(int(e.name)) == ("Z", me)}


def wait_gone(pids: set[int], timeout: float = GONE_WITHIN) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_to_the_launcher_takes_the_daemons_and_workers_along(pki: Pki, rundir: Path, tmp_path: Path,
                                                                     workers: int) -> None:
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [*cli.daemon_argv("launcher"), "run", "--listen", "127.0.0.1:0", *pki.cert_args("ecdsa", "rsa"),
             "--backend", "echo", "--workers", str(workers), "--runtime-dir", str(rundir), "--log-format", "json",
             *USERS],
            stdout=subprocess.PIPE, stderr=err, env=ENV,
        )
    everyone: set[int] = set()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"tls-privsep: ready"), (tmp_path / "stderr").read_text()
        expected = 2 if workers == 1 else 2 + 2 * workers  # the daemons, or their supervisors and workers
        everyone = wait_for(lambda: len(found := descendants(proc.pid)) == expected and found, 10,
                            f"{expected} processes under the launcher")  # type: ignore[assignment]
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        left = wait_gone(everyone)
        assert not left, f"still running {GONE_WITHIN} s after the launcher's SIGKILL: {sorted(left)}"
        print(f"\n--workers {workers}: {len(everyone)} processes gone {time.monotonic() - killed:.2f} s after kill -9")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in everyone:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


PAIR_IN_A_SCRIPT = """
import sys, time
from tls_privsep.launcher.testing import ThrowawayCA, start_server
server = start_server(ThrowawayCA(sys.argv[1] + "/ca"), sys.argv[1] + "/logs")
print(server.secured.pid, server.appd.pid, flush=True)
time.sleep(120)
"""


def test_sigkill_to_a_test_process_takes_its_pair_along(tmp_path: Path) -> None:
    """The pytest plugin's pair (launcher.testing) goes with the test process, even one killed with SIGKILL."""
    tmp_path.chmod(0o755)  # as root the daemons run as nobody and write nothing here, but must reach the files
    proc = subprocess.Popen([sys.executable, "-c", PAIR_IN_A_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    pids: set[int] = set()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode(errors="replace")[-3000:]
        pids = {int(p) for p in line.split()}
        assert all(alive(p) for p in pids)
        proc.kill()
        proc.wait()
        left = wait_gone(pids)
        assert not left, f"the pair outlived its SIGKILLed test process: {sorted(left)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_pairs_that_fail_to_start_leave_nothing_behind(tmp_path: Path) -> None:
    """20 pairs that cannot start, through launcher.testing: secured refusing its key, appd refusing its backend, or
    neither ready in time (killed while starting). Each is a StartupError, and afterwards not one process that was
    started for them is alive, nor a zombie child of ours."""
    tmp_path.chmod(0o755)
    ca = testing.ThrowawayCA(tmp_path / "ca")
    cert = ca.server_cert()
    zombies_before = our_zombies()
    # (args, startup timeout, what the StartupError says: the reason, or the failing daemon's line in its log tail)
    failures = {
        "missing key": (["--cert", str(cert.cert_file), "--key", str(tmp_path / "missing.key"), "--backend", "echo"],
                        testing.STARTUP_TIMEOUT, "missing.key"),
        "bad backend": (["--cert", str(cert.cert_file), "--key", str(cert.key_file), "--backend", "unix:"],
                        testing.STARTUP_TIMEOUT, "unix: needs a socket path"),
        "too slow": (["--cert", str(cert.cert_file), "--key", str(cert.key_file), "--backend", "echo"],
                     0.05, "within 0.05 s"),
    }
    started = time.monotonic()
    for attempt in range(20):
        name = list(failures)[attempt % len(failures)]
        args, timeout, reason = failures[name]
        with pytest.raises(testing.StartupError) as caught:
            testing.spawn(tmp_path / f"logs{attempt}", args, timeout=timeout)
        assert reason in str(caught.value), f"{name}: {str(caught.value)[:2000]}"
        assert not mentioning(str(tmp_path)), f"attempt {attempt + 1} ({name}) left daemons behind"
    print(f"\n20 failed starts in {time.monotonic() - started:.1f} s")
    assert not mentioning(str(tmp_path))
    assert our_zombies() <= zombies_before

"""``die_with_parent``: the parent-death signal is set, survives dropping root, and a parent already gone means exit.

Each case runs in a child process: the settings belong to the process that makes them, not to pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tls_privsep.shared import cli, hardening


def python(code: str, env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


def test_the_signal_is_set_for_the_expected_parent() -> None:
    result = python(
        "import os; from tls_privsep.shared import hardening\n"
        "assert hardening.parent_death_signal() == 0\n"
        "hardening.die_with_parent(os.getppid())\n"
        "print(hardening.parent_death_signal())"
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, str(int(signal.SIGTERM)), "")


def test_a_parent_already_gone_means_exit_at_once() -> None:
    """The fork race: our parent died before we asked; the kernel will never tell us, so we stop now."""
    result = python(
        "import os; from tls_privsep.shared import hardening\n"
        "hardening.die_with_parent(os.getppid() + 1000000)\n"
        "print('still here')"
    )
    assert (result.returncode, result.stdout) == (70, "")
    assert result.stderr.startswith("tls-privsep: error: the process that started it (pid ")
    assert result.stderr.endswith(") is gone; exiting\n") and len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_dropping_root_keeps_the_signal() -> None:
    """The kernel clears the parent-death signal when the effective uid changes; drop_privileges sets it again."""
    result = python(
        "import os; from tls_privsep.shared import hardening\n"
        "hardening.die_with_parent(os.getppid())\n"
        "hardening.drop_privileges('nobody', daemon='test')\n"
        "print(os.geteuid() != 0, hardening.parent_death_signal())"
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, f"True {int(signal.SIGTERM)}", "")
    # Without it: the kernel's own behaviour, which is why drop_privileges arms the signal again.
    bare = python(
        "import os, pwd; from tls_privsep.shared import hardening\n"
        "hardening.die_with_parent(os.getppid())\n"
        "entry = pwd.getpwnam('nobody'); os.setgroups([]); os.setgid(entry.pw_gid); os.setuid(entry.pw_uid)\n"
        "print(hardening.parent_death_signal())"
    )
    assert (bare.returncode, bare.stdout.strip()) == (0, "0")


def _daemon_check(parent: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, hardening.PARENT_PID_VARIABLE: parent}
    return subprocess.run([*cli.daemon_argv("appd"), "--check", "--listen", "127.0.0.1:0", "--backend", "echo"],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


def test_daemons_take_the_parent_from_the_environment() -> None:
    ok = _daemon_check(str(os.getpid()))
    assert ok.returncode == 0, ok.stderr
    gone = _daemon_check(str(os.getpid() + 1000000))
    assert (gone.returncode, gone.stdout) == (70, "")
    assert gone.stderr == f"appd: error: the process that started it (pid {os.getpid() + 1000000}) is gone; exiting\n"
    bad = _daemon_check("launcher")
    assert bad.returncode == cli.EX_USAGE
    assert bad.stderr.splitlines() == ["appd: error: $TLS_PRIVSEP_PARENT_PID is not a process id: 'launcher'"]

"""The pytest plugin as a user installs it: tls-privsep from a wheel into a fresh virtualenv, used by a project of
its own that has a ``shared`` and a ``launcher`` package (two of the commonest package names there are).

The daemons must import their own code, never the project's: everything we install lives under ``tls_privsep``,
and the daemons start with ``python -E -P``, so neither the project's directory nor PYTHONPATH comes first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT

USER_TEST = textwrap.dedent('''
    import socket
    import threading

    import pytest

    import shared.errors  # the project's own packages, named like ours once were
    import launcher


    @pytest.fixture
    def echo_service():
        listener = socket.create_server(("127.0.0.1", 0))

        def serve():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(conn.recv(1000).upper())

        threading.Thread(target=serve, daemon=True).start()
        yield listener.getsockname()
        listener.close()


    def test_my_service_behind_tls_privsep(tls_privsep, echo_service):
        assert shared.errors.MINE and launcher.MINE
        server = tls_privsep(backend=echo_service)
        with socket.create_connection((server.host, server.port)) as raw:
            with server.client_context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == "TLSv1.3"
                tls.sendall(b"hello")
                assert tls.recv(100) == b"HELLO"
''')


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    (found,) = out.glob("tls_privsep-*.whl")
    return found


def test_a_user_project_with_its_own_shared_package(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr[-3000:]
    # Its dependencies (cryptography, trio, ... and pytest) come from ours: a .pth adds our site-packages after
    # its own, where only the wheel's tls_privsep is. (Our editable install's finder is not loaded from there.)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir)}))
    (purelib / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run([python, "-c", "import tls_privsep; print(tls_privsep.__file__)"], capture_output=True,
                           text=True, check=True, cwd="/")
    assert where.stdout.startswith(str(purelib)), where.stdout

    project = tmp_path / "project"
    for package in ("shared", "launcher"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("MINE = True\n")
    (project / "shared" / "errors.py").write_text("MINE = True\n")
    (project / "test_service.py").write_text(USER_TEST)
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o755)  # as root the daemons run as nobody; they read nothing here but need not
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(project)  # the project's packages first, as a user's tooling often arranges
    run = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_service.py"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout

"""The pytest plugin (launcher/pytest_plugin.py, docs/pytest-plugin.md) as its users see it.

The first test is the example from docs/pytest-plugin.md, verbatim; the rest pin the plugin's own
behaviour: other backend forms, ALPN, client certificates, a startup failure, and (through pytester)
the installed entry point with nothing else loaded.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socketserver
import ssl
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tls_privsep.launcher.pytest_plugin import ServerFactory, StartupError, ThrowawayCA

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _plugin_loaded(request: pytest.FixtureRequest) -> None:
    """Under ``-p no:tls_privsep`` (or with the entry point not installed) the fixture tests skip."""
    uses_fixtures = {"tls_privsep", "tls_privsep_ca"} & set(request.fixturenames)
    if uses_fixtures and not request.config.pluginmanager.has_plugin("tls_privsep"):
        pytest.skip("the tls_privsep plugin is not loaded (-p no:tls_privsep, or tls-privsep not pip-installed)")


# --- the example from docs/pytest-plugin.md -------------------------------------------------------------------

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from my service\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def my_service() -> Iterator[tuple[str, int]]:
    """The service under test: plain HTTP on 127.0.0.1, an ephemeral port."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield ("127.0.0.1", httpd.server_port)
        httpd.shutdown()


def test_my_service_over_tls(tls_privsep: ServerFactory, my_service: tuple[str, int]) -> None:
    server = tls_privsep(backend=my_service, alpn=["http/1.1"])
    with urllib.request.urlopen(server.url, context=server.client_context) as response:
        assert response.read() == b"hello from my service\n"
# --- end of the example ---------------------------------------------------------------------------------------


class _Upper(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


@pytest.fixture
def unix_backend() -> Iterator[Path]:
    """An upper-casing line server on a Unix socket that appd can reach even as nobody (when run as root)."""
    directory = Path(tempfile.mkdtemp(prefix="tls-privsep-plugin-"))
    directory.chmod(0o755)
    path = directory / "upper.sock"
    with socketserver.ThreadingUnixStreamServer(str(path), _Upper) as srv:
        path.chmod(0o666)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield path
        srv.shutdown()
    shutil.rmtree(directory, ignore_errors=True)


def _roundtrip(tls: ssl.SSLSocket, data: bytes) -> bytes:
    tls.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = tls.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("form", ["path", "spec"])
def test_unix_backend(tls_privsep: ServerFactory, unix_backend: Path, form: str) -> None:
    server = tls_privsep(backend=unix_backend if form == "path" else f"unix:{unix_backend}")
    assert server.backend == f"unix:{unix_backend}"
    with server.connect() as tls:
        assert tls.version() == "TLSv1.3"
        assert _roundtrip(tls, b"through a unix socket\n") == b"THROUGH A UNIX SOCKET\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops the daemons to nobody")
def test_unix_backend_nobody_cannot_reach_is_refused_up_front(tls_privsep: ServerFactory, tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="nobody cannot enter"):
        tls_privsep(backend=tmp_path / "app.sock")


def test_alpn_choice_reaches_the_client(tls_privsep: ServerFactory) -> None:
    server = tls_privsep(backend="echo", alpn=["h2", "http/1.1"])
    assert server.url == f"https://localhost:{server.port}"
    assert server.address == f"127.0.0.1:{server.port}"
    server.client_context.set_alpn_protocols(["http/1.1", "h2"])
    with server.connect() as tls:
        assert tls.selected_alpn_protocol() == "h2"  # the server's preference wins
        assert _roundtrip(tls, b"echo") == b"echo"
    assert '"alpn": "h2"' in server.logs("secured")


def test_client_certificate_from_the_throwaway_ca(tls_privsep: ServerFactory, tls_privsep_ca: ThrowawayCA) -> None:
    server = tls_privsep(backend="echo", client_ca=tls_privsep_ca, tickets=0)
    with server.connect() as tls:  # server.client_context carries a client certificate from the same CA
        assert _roundtrip(tls, b"authenticated") == b"authenticated"
    # Without one, the server refuses it (in TLS 1.3 the client may see that only at its first read).
    try:
        with server.connect(context=tls_privsep_ca.client_context()) as tls:
            answer: bytes | None = _roundtrip(tls, b"anonymous")
    except (ssl.SSLError, OSError):
        answer = None
    assert answer != b"anonymous"


def test_rsa_certificate_and_extra_arguments(tls_privsep: ServerFactory, tls_privsep_ca: ThrowawayCA) -> None:
    rsa = tls_privsep_ca.issue("localhost", key_type="rsa")
    server = tls_privsep(certs=[rsa], args=["--log-level", "debug"])
    with server.connect() as tls:
        cert = tls.getpeercert()
        assert cert is not None and ("DNS", "localhost") in cert["subjectAltName"]
        assert _roundtrip(tls, b"rsa") == b"rsa"


def test_startup_failure_is_quick_and_names_the_problem(tls_privsep: ServerFactory, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    started = time.monotonic()
    with pytest.raises(StartupError) as failure:
        tls_privsep(certs=[(missing, tmp_path / "missing.key")])
    assert time.monotonic() - started < 10
    text = str(failure.value)
    assert "secured exited with status 78" in text
    assert f"{missing}: cannot read" in text  # secured's own line, from its log
    assert "--- appd log" in text


def test_a_bad_option_fails_at_startup(tls_privsep: ServerFactory) -> None:
    with pytest.raises(StartupError, match="exited with status"):
        tls_privsep(backend="ftp://example.invalid:21")


# --- the installed entry point, in a pytest of its own ---------------------------------------------------------

USER_TESTS = '''
def test_echo(tls_privsep):
    server = tls_privsep(backend="echo")
    with server.connect() as tls:
        tls.sendall(b"ping")
        assert tls.recv(100) == b"ping"


def test_fails_and_shows_the_logs(tls_privsep):
    server = tls_privsep(backend="echo")
    with server.connect() as tls:
        tls.sendall(b"ping")
        assert tls.recv(100) == b"pong"
'''


def test_entry_point_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the entry point is loaded (no autoload, no conftest): the fixtures work, a failure shows the logs,
    and ``-p no:tls_privsep`` removes them."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "tls_privsep", timeout=90)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*tls-privsep secured log (127.0.0.1:*)*", "*tls-privsep appd log (127.0.0.1:*)*"])
    assert '"handshake done"' in result.stdout.str()

    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")  # every installed plugin, but this one blocked
    blocked = pytester.runpytest_subprocess("-p", "no:tls_privsep", timeout=60)
    blocked.assert_outcomes(errors=2)
    blocked.stdout.fnmatch_lines(["*fixture 'tls_privsep' not found*"])


def test_the_documented_example_is_this_one() -> None:
    """docs/pytest-plugin.md shows the example above (after its imports) character for character."""
    here = Path(__file__).read_text()
    example = here.split("# --- the example from docs/pytest-plugin.md ", 1)[1].split("\n", 1)[1]
    example = example.split("# --- end of the example", 1)[0].strip()
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pytest-plugin.md").read_text()
    whole = doc.split("## The example, whole", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert whole.strip().endswith(example)
    assert example.startswith("class Hello")


def test_ca_files_and_context(tls_privsep_ca: ThrowawayCA) -> None:
    assert tls_privsep_ca.ca_file.read_bytes() == tls_privsep_ca.cert_pem
    issued = tls_privsep_ca.issue("client.example", client=True)
    cert_file, key_file = issued
    assert cert_file.read_bytes().endswith(tls_privsep_ca.cert_pem)
    assert key_file.stat().st_mode & 0o077 == 0
    ctx = tls_privsep_ca.client_context()
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_tls12_clients(tls_privsep: ServerFactory, tls_privsep_ca: ThrowawayCA) -> None:
    """A TLS 1.2 client against the default pair, and a pair serving TLS 1.2 only with its ready-made client."""
    server = tls_privsep()
    with server.connect(context=tls_privsep_ca.client_context(version="1.2")) as tls:
        assert tls.version() == "TLSv1.2"
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
    only12 = tls_privsep(versions=["1.2"])
    with only12.connect() as tls:
        assert tls.version() == "TLSv1.2"
    with pytest.raises(ssl.SSLError, match=r"(?i)protocol.version|unsupported protocol"):
        only12.connect(context=tls_privsep_ca.client_context(version="1.3")).close()

"""Real TLS 1.3 clients against the two daemons over loopback TCP.

openssl s_client, gnutls-cli, curl, Python's ssl, tlslite-ng and pyOpenSSL (the one that offers the
post-quantum hybrid X25519MLKEM768 by default, tests/pqclient.py) each talk to a secured + appd pair
and every test checks what a user of that client sees: the bytes echoed back, the HTTP answer, the
cipher/group/signature the client prints, the alert it reports. Servers that share a configuration
are started once per module (:class:`helpers.Pool`, the ``pool`` fixture); a test that may break its
server gets its own pair.
The results are summarised in interop_matrix.md next to this file.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from OpenSSL import SSL
from tlslite.api import HandshakeSettings
from tlslite.constants import KeyUpdateMessageType

from tests.integration.helpers import (
    Pair,
    Pki,
    Pool,
    Run,
    Step,
    connections,
    converse,
    curl,
    echo_server,
    echo_steps,
    gnutls_cli,
    gnutls_description,
    handshakes,
    http_server,
    leaf_der,
    mtls_server,
    new_connections,
    new_handshakes,
    py_echo,
    require_binary,
    s_client_cmd,
    tlslite_connect,
    tlslite_echo,
)
from tests.pqclient import client_context, echo_over_tcp

pytestmark = pytest.mark.interop

SUITES = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302, "TLS_CHACHA20_POLY1305_SHA256": 0x1303}
GROUP_IDS = {"x25519": 0x001D, "secp256r1": 0x0017}
OPENSSL_GROUPS = {"x25519": "X25519", "secp256r1": "P-256"}
OPENSSL_TEMP_KEY = {"x25519": "Server Temp Key: X25519", "secp256r1": "Server Temp Key: ECDH, prime256v1"}
GNUTLS_CIPHERS = {"TLS_AES_128_GCM_SHA256": "AES-128-GCM", "TLS_AES_256_GCM_SHA384": "AES-256-GCM",
                  "TLS_CHACHA20_POLY1305_SHA256": "CHACHA20-POLY1305"}
GNUTLS_GROUPS = {"x25519": "X25519", "secp256r1": "SECP256R1"}
GNUTLS_SIG = {"rsa": "RSA-PSS-RSAE-SHA256", "ecdsa": "ECDSA-SECP256R1-SHA256"}
TLSLITE_CIPHERS = {"TLS_AES_128_GCM_SHA256": "aes128gcm", "TLS_AES_256_GCM_SHA384": "aes256gcm",
                   "TLS_CHACHA20_POLY1305_SHA256": "chacha20-poly1305"}
CERT_KINDS = ("rsa", "ecdsa")
TLS13_ONLY = "NORMAL:-VERS-ALL:+VERS-TLS1.3"


# -- openssl s_client -----------------------------------------------------------------------------


def s_client(server: Pair, pki: Pki, *args: str) -> list[str]:
    return s_client_cmd(server, pki, "-tls1_3", *args)


def negotiated_cipher(run: Run) -> str | None:
    m = re.search(r"^(?:New|Reused), TLSv1\.3, Cipher is (\S+)$", run.out, re.M)
    return m.group(1) if m else None


@pytest.mark.parametrize("certs", CERT_KINDS)
@pytest.mark.parametrize("group", GROUP_IDS)
@pytest.mark.parametrize("suite", SUITES)
def test_openssl_suite_group_cert(pool: Pool, pki: Pki, suite: str, group: str, certs: str) -> None:
    """Every suite x group x certificate kind: the line comes back and s_client names what was negotiated."""
    server = echo_server(pool, certs)
    line = f"openssl {suite} {group} {certs}\n".encode()
    run = converse(s_client(server, pki, "-ciphersuites", suite, "-groups", OPENSSL_GROUPS[group]), echo_steps(line))
    assert line.decode() in run.out, run.text
    assert negotiated_cipher(run) == suite
    assert "Verification: OK" in run.out
    assert OPENSSL_TEMP_KEY[group] in run.out
    assert ("Peer signature type: RSA-PSS" if certs == "rsa" else "Peer signature type: ECDSA") in run.out
    assert f"Server public key is {2048 if certs == 'rsa' else 256} bit" in run.out


@pytest.mark.parametrize(("sigalgs", "sig_type", "key_bits"), [
    ("ECDSA+SHA256", "ECDSA", 256),
    ("rsa_pss_rsae_sha256", "RSA-PSS", 2048),
])
def test_openssl_sigalgs_pick_the_certificate(pool: Pool, pki: Pki, sigalgs: str, sig_type: str,
                                              key_bits: int) -> None:
    """With both certificates loaded, the client's signature_algorithms decide which one it gets."""
    server = echo_server(pool)
    run = converse(s_client(server, pki, "-sigalgs", sigalgs), echo_steps(b"sigalgs\n"))
    assert "sigalgs\n" in run.out, run.text
    assert f"Peer signature type: {sig_type}\n" in run.out
    assert f"Server public key is {key_bits} bit" in run.out


def test_openssl_sigalgs_without_a_matching_certificate(pool: Pool, pki: Pki) -> None:
    """An RSA-only server and a client that accepts only ECDSA: handshake_failure (40), nothing echoed."""
    server = echo_server(pool, "rsa")
    run = converse(s_client(server, pki, "-sigalgs", "ECDSA+SHA256"), echo_steps(b"nothing\n"))
    assert "SSL alert number 40" in run.err
    assert "nothing\n" not in run.out


@pytest.mark.parametrize(("groups", "group"), [("X448:X25519", "x25519"), ("X448:P-256", "secp256r1")])
def test_openssl_hello_retry_request(pool: Pool, pki: Pki, groups: str, group: str) -> None:
    """The client's only key share is X448, which we lack: a HelloRetryRequest gets the next group."""
    server = echo_server(pool)
    before = len(handshakes(server))
    run = converse(s_client(server, pki, "-groups", groups), echo_steps(b"after hrr\n"))
    assert "after hrr\n" in run.out, run.text
    assert OPENSSL_TEMP_KEY[group] in run.out
    (done,) = new_handshakes(server, before)
    assert done["hrr"] is True
    assert done["group"] == f"{GROUP_IDS[group]:#06x}"


@pytest.mark.parametrize("groups", ["X25519", "X448:X25519"], ids=["plain", "with-hrr"])
def test_openssl_resumption(pool: Pool, pki: Pki, tmp_path: Path, groups: str) -> None:
    """A ticket from the first connection resumes the second (also when the second needs an HRR)."""
    server = echo_server(pool)
    sess = tmp_path / "session.pem"
    before = len(handshakes(server))
    first = converse(s_client(server, pki, "-sess_out", str(sess)), echo_steps(b"first\n"))
    assert "first\n" in first.out and sess.exists(), first.text
    second = converse(s_client(server, pki, "-sess_in", str(sess), "-groups", groups), echo_steps(b"second\n"))
    assert "second\n" in second.out, second.text
    assert "Reused, TLSv1.3" in second.out
    full, resumed = new_handshakes(server, before, 2)
    assert (full["resumed"], resumed["resumed"]) == (False, True)
    assert resumed["hrr"] is (groups != "X25519")


def test_openssl_resumption_refused_without_tickets(pool: Pool, pki: Pki, tmp_path: Path) -> None:
    """--tickets 0: the client gets no session to save, so the next connection is a full one."""
    server = echo_server(pool, "both", "--tickets", "0")
    sess = tmp_path / "session.pem"
    first = converse(s_client(server, pki, "-sess_out", str(sess)), echo_steps(b"no ticket\n"))
    assert "no ticket\n" in first.out, first.text
    assert "New Session Ticket" not in first.out
    assert not sess.exists()


def test_openssl_key_update_both_ways(pool: Pool, pki: Pki) -> None:
    """'k' and 'K' make s_client send KeyUpdate; for 'K' the server updates too. No byte is lost."""
    server = echo_server(pool)
    steps = [
        Step(b"one\n", wait_for=b"one\n"),
        Step(b"k\n", wait_for=b"KEYUPDATE"),
        Step(b"two\n", wait_for=b"two\n"),
        Step(b"K\n", wait_for=b"KEYUPDATE"),
        Step(b"three\n", wait_for=b"three\n", pause=0.1),
    ]
    run = converse(s_client(server, pki, "-msg"), steps)
    data = [line for line in run.lines() if line in ("one", "two", "three", "k", "K")]
    assert data == ["one", "two", "three"], run.text
    assert run.err.count("KEYUPDATE") == 2
    assert run.out.count(">>> TLS 1.3, Handshake [length 0005], KeyUpdate") == 2
    # Only 'K' asks for an answer: exactly one KeyUpdate comes back from appd.
    assert run.out.count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate") == 1


@pytest.mark.parametrize(("offer", "expected"), [
    ("http/1.1", "ALPN protocol: http/1.1"),
    ("h2", "ALPN protocol: h2"),
    ("spdy/1,http/1.1", "ALPN protocol: http/1.1"),
    (None, "No ALPN negotiated"),
])
def test_openssl_alpn(pool: Pool, pki: Pki, offer: str | None, expected: str) -> None:
    """--alpn h2,http/1.1: the common protocol is chosen; a client without ALPN still gets through."""
    server = echo_server(pool, "both", "--alpn", "h2,http/1.1")
    run = converse(s_client(server, pki, *(["-alpn", offer] if offer else [])), echo_steps(b"alpn\n"))
    assert "alpn\n" in run.out, run.text
    assert expected in run.out


def test_openssl_alpn_mismatch(pool: Pool, pki: Pki) -> None:
    """No protocol in common: no_application_protocol (120) and no connection."""
    server = echo_server(pool, "both", "--alpn", "h2,http/1.1")
    run = converse(s_client(server, pki, "-alpn", "spdy/1"), echo_steps(b"refused\n"))
    assert "SSL alert number 120" in run.err
    assert "no application protocol" in run.err
    assert "refused\n" not in run.out
    assert run.rc != 0


def test_openssl_client_certificate(pool: Pool, pki: Pki) -> None:
    """--client-auth required: a client with a certificate from the client CA is served."""
    server = mtls_server(pool, pki)
    before = len(handshakes(server))
    cert, key = pki.client
    run = converse(s_client(server, pki, "-cert", str(cert), "-key", str(key)), echo_steps(b"with cert\n"))
    assert "with cert\n" in run.out, run.text
    (done,) = new_handshakes(server, before)
    assert done["client_cert"] is True


@pytest.mark.parametrize(("use_cert", "alert", "text"), [
    (False, 116, "certificate required"),
    (True, 48, "unknown ca"),
], ids=["no-cert", "untrusted-cert"])
def test_openssl_client_certificate_refused(pool: Pool, pki: Pki, use_cert: bool, alert: int, text: str) -> None:
    """No certificate: certificate_required (116); one the client CA did not issue: unknown_ca (48)."""
    server = mtls_server(pool, pki)
    cert, key = pki.ecdsa  # issued by the server CA, not the client CA
    args = ["-cert", str(cert), "-key", str(key)] if use_cert else []
    run = converse(s_client(server, pki, *args), echo_steps(b"refused\n"))
    assert f"SSL alert number {alert}" in run.err, run.text
    assert text in run.err
    assert "refused\n" not in run.out


# -- gnutls-cli -----------------------------------------------------------------------------------


@pytest.mark.parametrize("certs", CERT_KINDS)
@pytest.mark.parametrize("group", GROUP_IDS)
@pytest.mark.parametrize("suite", SUITES)
def test_gnutls_suite_group_cert(pool: Pool, pki: Pki, suite: str, group: str, certs: str) -> None:
    """Every suite x group x certificate kind through gnutls-cli, one suite and one group allowed at a time."""
    server = echo_server(pool, certs)
    priority = f"{TLS13_ONLY}:-CIPHER-ALL:+{GNUTLS_CIPHERS[suite]}:-GROUP-ALL:+GROUP-{GNUTLS_GROUPS[group]}"
    line = f"gnutls {suite} {group} {certs}\n"
    out = gnutls_cli(server, pki, priority, data=line.encode())
    assert line in out, out
    assert gnutls_description(out) == (
        f"(TLS1.3-X.509)-(ECDHE-{GNUTLS_GROUPS[group]})-({GNUTLS_SIG[certs]})-({GNUTLS_CIPHERS[suite]})"
    )
    assert "Peer has closed the GnuTLS connection" in out


def test_gnutls_resume(pool: Pool, pki: Pki) -> None:
    """--resume: the second connection uses the ticket from the first."""
    server = echo_server(pool)
    before = len(handshakes(server))
    out = gnutls_cli(server, pki, TLS13_ONLY, "--resume", data=b"resumed echo\n")
    assert "*** This is a resumed session" in out, out
    assert "resumed echo\n" in out
    full, resumed = new_handshakes(server, before, 2)
    assert (full["resumed"], resumed["resumed"]) == (False, True)


def test_gnutls_hello_retry_request(pool: Pool, pki: Pki) -> None:
    """GnuTLS shares its first group and the first of another kind: P-384, P-256 gets a share for P-384 only.

    (P-384, P-521, X25519 gets shares for P-384 and X25519, so there is no HRR: all groups must be NIST curves.)
    """
    server = echo_server(pool)
    before = len(handshakes(server))
    out = gnutls_cli(server, pki, f"{TLS13_ONLY}:-GROUP-ALL:+GROUP-SECP384R1:+GROUP-SECP256R1", data=b"hrr\n")
    assert "hrr\n" in out, out
    assert "(ECDHE-SECP256R1)" in (gnutls_description(out) or "")
    (done,) = new_handshakes(server, before)
    assert done["hrr"] is True


def test_gnutls_key_update(pool: Pool, pki: Pki) -> None:
    """Inline ^rekey1^ (ours only) and ^rekey^ (both sides) between lines; all lines come back."""
    server = echo_server(pool)
    cmd = [require_binary("gnutls-cli"), server.host, "-p", str(server.port), "--sni-hostname", "localhost",
           "--verify-hostname", "localhost", "--x509cafile", str(pki.ca_file), "--priority", TLS13_ONLY,
           "--inline-commands"]
    steps = [
        Step(b"one\n", wait_for=b"one\n"),
        Step(b"^rekey1^\n", wait_for=b"Rekey was completed"),
        Step(b"two\n", wait_for=b"two\n"),
        Step(b"^rekey^\n", wait_for=b"Rekey was completed"),
        Step(b"three\n", wait_for=b"three\n"),
    ]
    run = converse(cmd, steps)
    assert [line for line in run.lines() if line in ("one", "two", "three")] == ["one", "two", "three"], run.text
    assert run.text.count("Rekey was completed") == 2


def test_gnutls_client_certificate(pool: Pool, pki: Pki) -> None:
    """gnutls-cli with the client certificate against --client-auth required."""
    server = mtls_server(pool, pki)
    cert, key = pki.client
    out = gnutls_cli(server, pki, TLS13_ONLY, "--x509certfile", str(cert), "--x509keyfile", str(key),
                     data=b"gnutls mtls\n")
    assert "gnutls mtls\n" in out, out


# -- curl -----------------------------------------------------------------------------------------


def test_curl_insecure_by_address(pool: Pool) -> None:
    """curl -k to the IP address: 200 and the backend's greeting (no SNI for an address)."""
    server = http_server(pool)
    proc = curl("-k", f"https://{server.address}/")
    assert proc.returncode == 0, proc.stderr
    assert "status=200" in proc.stdout
    assert "Hello from tls-privsep" in proc.stdout
    assert "request: GET / HTTP/1.1" in proc.stdout
    assert "sni: -" in proc.stdout


@pytest.mark.parametrize("suite", [None, "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384"])
def test_curl_verified(pool: Pool, pki: Pki, suite: str | None) -> None:
    """--cacert and --resolve: the chain verifies for "localhost"; --tls13-ciphers picks the suite."""
    server = http_server(pool)
    args = ["--tlsv1.3", "--tls13-ciphers", suite] if suite else []
    proc = curl("--cacert", str(pki.ca_file), "--resolve", f"localhost:{server.port}:127.0.0.1", *args,
                f"https://localhost:{server.port}/path?q=1")
    assert proc.returncode == 0, proc.stderr
    assert "status=200" in proc.stdout
    assert "request: GET /path?q=1 HTTP/1.1" in proc.stdout
    assert "sni: localhost" in proc.stdout
    assert f"tls: TLSv1.3 {suite or 'TLS_AES_128_GCM_SHA256'}" in proc.stdout


def test_curl_two_urls_one_connection(pool: Pool, pki: Pki) -> None:
    """--http1.1 with two URLs: both answered over one connection (one handshake)."""
    server = http_server(pool)
    before = len(handshakes(server))
    base = f"https://localhost:{server.port}"
    proc = curl("-v", "--http1.1", "--cacert", str(pki.ca_file), "--resolve", f"localhost:{server.port}:127.0.0.1",
                f"{base}/a", f"{base}/b")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("status=200") == 2
    assert "request: GET /a HTTP/1.1" in proc.stdout and "request: GET /b HTTP/1.1" in proc.stdout
    assert "Re-using existing connection" in proc.stderr
    time.sleep(0.1)
    assert len(new_handshakes(server, before)) == 1


# -- Python ssl -----------------------------------------------------------------------------------


PY_VERSIONS = {"TLSv1.3": ssl.TLSVersion.TLSv1_3, "TLSv1.2": ssl.TLSVersion.TLSv1_2}


def py_context(pki: Pki, version: str = "TLSv1.3") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ctx.maximum_version = PY_VERSIONS[version]
    return ctx


@pytest.mark.parametrize("version", PY_VERSIONS)
@pytest.mark.parametrize("certs", CERT_KINDS)
def test_python_ssl_certificate_kinds(pool: Pool, pki: Pki, certs: str, version: str) -> None:
    """Python ssl verifies the chain for each kind and gets exactly that leaf (in TLS 1.2 with the suite of
    that kind); 100 KB come back intact."""
    server = echo_server(pool, certs)
    ctx = py_context(pki, version)
    data = bytes(range(256)) * 400
    with socket.create_connection((server.host, server.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == version
        if version == "TLSv1.2":
            assert (tls.cipher() or ("",))[0] == f"ECDHE-{certs.upper()}-AES128-GCM-SHA256"
        assert tls.getpeercert(binary_form=True) == leaf_der((pki.rsa if certs == "rsa" else pki.ecdsa)[0])
        tls.sendall(data)
        got = bytearray()
        while len(got) < len(data) and (chunk := tls.recv(65536)):
            got += chunk
        assert got == data


@pytest.mark.parametrize(("version", "cipher"), [("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
                                               ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")])
def test_python_ssl_resumption_and_sni(pool: Pool, pki: Pki, version: str, cipher: str) -> None:
    """SSLContext sessions (a TLS 1.3 ticket, or TLS 1.2's RFC 5077 one): the second connection resumes; the
    http backend reports the version, SNI and resumption."""
    server = http_server(pool)
    ctx = py_context(pki, version)
    request = b"GET /py HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    def get(session: ssl.SSLSession | None) -> tuple[str, ssl.SSLSession | None, bool]:
        with socket.create_connection((server.host, server.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(request)
            body = b""
            while chunk := tls.recv(65536):
                body += chunk
            return body.decode(), tls.session, bool(tls.session_reused)

    first, session, reused = get(None)
    assert first.startswith("HTTP/1.1 200 OK") and not reused
    assert f"tls: {version} {cipher}\n" in first
    assert "sni: localhost" in first and "(resumed)" not in first
    assert session is not None and session.has_ticket
    second, _, reused = get(session)
    assert reused
    assert f"tls: {version} {cipher} (resumed)" in second
    assert "sni: localhost" in second


def test_python_ssl_client_certificate(pool: Pool, pki: Pki) -> None:
    """Python ssl with the client certificate (and post_handshake_auth offered) against required auth."""
    server = mtls_server(pool, pki)
    ctx = py_context(pki)
    ctx.post_handshake_auth = True
    ctx.load_cert_chain(*map(str, pki.client))
    got, _ = py_echo(server, ctx, b"python mtls")
    assert got == b"python mtls"


def test_python_ssl_finished_and_data_in_one_segment(pool: Pool, pki: Pki) -> None:
    """Client Finished and the first application record in one TCP write: appd takes both."""
    server = echo_server(pool)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = py_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"right behind the Finished")
        sock.sendall(outgoing.read())  # Finished + application data together
        got = b""
        while got != b"right behind the Finished":
            try:
                got += tls.read(65536)
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                assert chunk, f"server closed; got {got!r}"
                incoming.write(chunk)


def test_python_ssl_simultaneous_connections(pair: Callable[..., Pair], pki: Pki) -> None:
    """16 clients connecting at once, three times over: every one is served and appd stays up."""
    server = pair("--backend", "echo")
    ctx = py_context(pki)
    results: list[object] = []

    def client(barrier: threading.Barrier, n: int) -> None:
        barrier.wait()
        try:
            got, _ = py_echo(server, ctx, b"burst %d" % n)
            results.append(got == b"burst %d" % n)
        except (OSError, ssl.SSLError) as exc:
            results.append(repr(exc))

    for _ in range(3):
        barrier = threading.Barrier(16)
        threads = [threading.Thread(target=client, args=(barrier, n)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    failures = [r for r in results if r is not True]
    errors = [line for line in server.log_text("appd").splitlines() if "Error" in line][-2:]
    assert not failures, f"{len(failures)} of {len(results)} failed, e.g. {failures[:2]}; appd: {errors}"
    assert server.appd.poll() is None, server.log_text("appd")[-2000:]


# -- tlslite-ng -----------------------------------------------------------------------------------


def tlslite_settings(suite: str = "TLS_AES_128_GCM_SHA256", curves: Sequence[str] = ("x25519", "secp256r1"),
                     shares: Sequence[str] = ("x25519",)) -> HandshakeSettings:
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 4)
    settings.cipherNames = [TLSLITE_CIPHERS[suite]]
    settings.eccCurves = list(curves)
    settings.keyShares = list(shares)
    return settings


@pytest.mark.parametrize("certs", CERT_KINDS)
@pytest.mark.parametrize("group", GROUP_IDS)
@pytest.mark.parametrize("suite", SUITES)
def test_tlslite_suite_group_cert(pool: Pool, pki: Pki, suite: str, group: str, certs: str) -> None:
    """tlslite-ng with one suite and one group: echo, and the suite and leaf it reports."""
    server = echo_server(pool, certs)
    conn = tlslite_connect(server, tlslite_settings(suite, [group], [group]))
    try:
        assert conn.version == (3, 4)
        assert conn.session.cipherSuite == SUITES[suite]
        leaf = conn.session.serverCertChain.x509List[0].bytes
        assert bytes(leaf) == leaf_der((pki.rsa if certs == "rsa" else pki.ecdsa)[0])
        assert tlslite_echo(conn, f"tlslite {suite} {group}".encode()) == f"tlslite {suite} {group}".encode()
    finally:
        conn.close()


@pytest.mark.parametrize(("curves", "shares", "group"), [
    (["x25519", "secp256r1"], [], "x25519"),
    (["x448", "secp256r1"], ["x448"], "secp256r1"),
], ids=["no-share", "x448-share"])
def test_tlslite_hello_retry_request(pool: Pool, pki: Pki, curves: list[str], shares: list[str],
                                     group: str) -> None:
    """No usable key share (none at all, or only X448): HRR, then the handshake and the echo succeed."""
    server = echo_server(pool)
    before = len(handshakes(server))
    conn = tlslite_connect(server, tlslite_settings(curves=curves, shares=shares))
    try:
        assert tlslite_echo(conn, b"tlslite hrr") == b"tlslite hrr"
    finally:
        conn.close()
    (done,) = new_handshakes(server, before)
    assert done["hrr"] is True
    assert done["group"] == f"{GROUP_IDS[group]:#06x}"


def test_tlslite_key_update_and_resumption(pool: Pool, pki: Pki) -> None:
    """KeyUpdate (requested and not) mid-stream, then the ticket resumes a second connection."""
    server = echo_server(pool)
    settings = tlslite_settings()
    conn = tlslite_connect(server, settings)
    try:
        assert tlslite_echo(conn, b"a") == b"a"
        for kind in (KeyUpdateMessageType.update_requested, KeyUpdateMessageType.update_not_requested):
            for _ in conn.send_keyupdate_request(kind):
                pass
            assert tlslite_echo(conn, b"after %d" % kind) == b"after %d" % kind
        assert conn.tickets
        session = conn.session
    finally:
        conn.close()
    conn = tlslite_connect(server, settings, session=session)
    try:
        assert conn.resumed
        assert tlslite_echo(conn, b"resumed") == b"resumed"
    finally:
        conn.close()


# -- pyOpenSSL: a client that offers the post-quantum hybrid by default ------------------------------


def post_quantum(pool: Pool, mode: str) -> list[str]:
    """``--post-quantum MODE``; under require also TLS 1.3 alone (secured.versions, no flag): TLS 1.2 has no
    hybrid key exchange, so the configuration refuses require beside it."""
    tls13_only = ["-c", pool.config('[secured]\nversions = ["1.3"]\n')] if mode == "require" else []
    return [*tls13_only, "--post-quantum", mode]


def pq_context(pki: Pki, *, groups: str | None = None, suite: str | None = None) -> SSL.Context:
    return client_context(pki.ca.cert, groups=groups, suite=suite)


@pytest.mark.parametrize("certs", CERT_KINDS)
@pytest.mark.parametrize("suite", SUITES)
def test_pyopenssl_hybrid_by_default(pool: Pool, pki: Pki, suite: str, certs: str) -> None:
    """pyOpenSSL sends X25519MLKEM768 and X25519 shares unasked: the hybrid is negotiated, as the client,
    secured's handshake line and appd's summary line all say, with every suite and both certificates."""
    server = echo_server(pool, certs)
    before_hs, before_conn = len(handshakes(server)), len(connections(server))
    data = f"pq {suite} {certs}".encode() * 50
    got = echo_over_tcp(server.host, server.port, pq_context(pki, suite=suite), data)
    assert got.echoed == data
    assert (got.group, got.cipher) == ("X25519MLKEM768", suite)
    (done,) = new_handshakes(server, before_hs)
    assert (done["group"], done["group_name"], done["hrr"]) == ("0x11ec", "X25519MLKEM768", False)
    assert done["suite"] == f"{SUITES[suite]:#06x}"
    (conn,) = new_connections(server, before_conn)
    assert (conn["group"], conn["group_name"]) == ("0x11ec", "X25519MLKEM768")


def test_pyopenssl_secp256r1mlkem768(pool: Pool, pki: Pki) -> None:
    server = echo_server(pool)
    before = len(handshakes(server))
    got = echo_over_tcp(server.host, server.port, pq_context(pki, groups="SecP256r1MLKEM768"), b"p-256 hybrid")
    assert (got.echoed, got.group) == (b"p-256 hybrid", "SecP256r1MLKEM768")
    (done,) = new_handshakes(server, before)
    assert (done["group"], done["group_name"]) == ("0x11eb", "SecP256r1MLKEM768")


@pytest.mark.parametrize(("mode", "group", "hrr"), [
    ("require", "X25519MLKEM768", True), ("prefer", "x25519", False), ("off", "x25519", False),
])
def test_pyopenssl_hybrid_listed_without_a_share(pool: Pool, pki: Pki, mode: str, group: str, hrr: bool) -> None:
    """The client lists the hybrid but shares X25519 only: --post-quantum require asks for the hybrid with a
    HelloRetryRequest; prefer and off take the X25519 share at once. appd's summary line names the group of
    the ServerHello, not the one the HelloRetryRequest before it asked for (that names none)."""
    server = echo_server(pool, "both", *post_quantum(pool, mode))
    before, before_conn = len(handshakes(server)), len(connections(server))
    got = echo_over_tcp(server.host, server.port, pq_context(pki, groups="*X25519:X25519MLKEM768"), b"listed")
    assert (got.echoed, got.group) == (b"listed", group)
    (done,) = new_handshakes(server, before)
    assert done["hrr"] is hrr
    assert done["group_name"] == group
    (conn,) = new_connections(server, before_conn)
    assert (conn["group"], conn["group_name"]) == ({"X25519MLKEM768": "0x11ec", "x25519": "0x001d"}[group], group)


@pytest.mark.parametrize("mode", ["prefer", "require"])
def test_pyopenssl_resumption_over_the_hybrid(pool: Pool, pki: Pki, mode: str) -> None:
    """A ticket from a hybrid handshake resumes with psk_dhe_ke and a fresh hybrid exchange."""
    server = echo_server(pool, "both", *post_quantum(pool, mode))
    ctx = pq_context(pki)
    before = len(handshakes(server))
    first = echo_over_tcp(server.host, server.port, ctx, b"first")
    second = echo_over_tcp(server.host, server.port, ctx, b"second", session=first.session)
    assert (first.reused, second.reused) == (False, True)
    assert second.group == "X25519MLKEM768" and second.echoed == b"second"
    full, resumed = new_handshakes(server, before, 2)
    assert (full["resumed"], resumed["resumed"]) == (False, True)
    assert resumed["group_name"] == "X25519MLKEM768"


def test_pyopenssl_off_takes_x25519(pool: Pool, pki: Pki) -> None:
    server = echo_server(pool, "both", "--post-quantum", "off")
    got = echo_over_tcp(server.host, server.port, pq_context(pki), b"classical")
    assert (got.echoed, got.group) == (b"classical", "x25519")


def test_pyopenssl_classical_only_under_require(pool: Pool, pki: Pki) -> None:
    """A client with no hybrid at all under --post-quantum require: handshake_failure, which it reports."""
    server = echo_server(pool, "both", *post_quantum(pool, "require"))
    with pytest.raises(SSL.Error, match="handshake failure"):
        echo_over_tcp(server.host, server.port, pq_context(pki, groups="X25519:P-256"), b"refused")


# -- classical clients under each post-quantum mode --------------------------------------------------


def _classical(client: str, server: Pair, pki: Pki) -> tuple[bool, str]:
    """One exchange with a client that knows no hybrid; (served, what it printed). curl gets the http backend."""
    line = f"{client} classical\n".encode()
    if client == "curl":
        proc = curl("--cacert", str(pki.ca_file), "--resolve", f"localhost:{server.port}:127.0.0.1",
                    f"https://localhost:{server.port}/")
        return proc.returncode == 0 and "status=200" in proc.stdout, proc.stdout + proc.stderr
    if client == "openssl":
        run = converse(s_client(server, pki), echo_steps(line))
        return line.decode() in run.out, run.text
    if client == "gnutls":
        out = gnutls_cli(server, pki, TLS13_ONLY, data=line)
        return line.decode() in out, out
    if client == "python":
        try:
            got, _ = py_echo(server, py_context(pki), line)
        except ssl.SSLError as exc:
            return False, str(exc)
        return got == line, got.decode(errors="replace")
    try:
        conn = tlslite_connect(server, tlslite_settings())
    except Exception as exc:  # tlslite raises its own alert classes
        return False, repr(exc)
    try:
        return tlslite_echo(conn, line) == line, ""
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["prefer", "off", "require"])
@pytest.mark.parametrize("client", ["openssl", "gnutls", "curl", "python", "tlslite"])
def test_classical_clients_under_each_mode(pool: Pool, pki: Pki, client: str, mode: str) -> None:
    """openssl s_client (3.0), gnutls-cli, curl, Python ssl and tlslite-ng offer no hybrid: prefer and off
    serve them x25519 unchanged; require refuses them with handshake_failure (40)."""
    server = pool.get("both", "--backend", "http" if client == "curl" else "echo", *post_quantum(pool, mode))
    before = len(handshakes(server))
    served, text = _classical(client, server, pki)
    if mode == "require":
        assert not served, text
        assert re.search(r"alert number 40|handshake.failure|description=40|Handshake failed",
                         text, re.I), text
        assert len(handshakes(server)) == before
    else:
        assert served, text
        (done,) = new_handshakes(server, before)
        assert done["group_name"] == "x25519", done

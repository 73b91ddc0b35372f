"""Real TLS 1.2 clients against the two daemons over loopback TCP.

openssl s_client, gnutls-cli, curl, Python's ssl and tlslite-ng, each held to TLS 1.2, talk to a secured + appd
pair, and every test checks what a user of that client sees: the bytes echoed back, the HTTP answer, the
version, cipher, group and extended master secret the client prints, the alert it reports; and what the
server's two log lines (secured's "handshake done", appd's "connection") say about the same connection.
Where no real client does the thing to test (application data in the segment of the client Finished, a
second renegotiation attempt, the raw ServerHello.random), tests/tls12client.Client12 writes the bytes
over a plain socket. Servers that share a configuration are started once (the ``pool`` fixture).
The results are in interop_matrix.md next to this file (TLS 1.2 section).
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tlslite.api import HandshakeSettings, TLSConnection
from tlslite.errors import TLSRemoteAlert

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
    s_client_cmd,
    tlslite_connect,
    tlslite_echo,
)
from tests.tls12client import CCS, RENEGOTIATION_INFO, Client12
from tests.tlsclient import record, records
from tls_privsep.shared import tls12
from tls_privsep.shared.errors import AlertDescription as AD
from tls_privsep.shared.record import Tls12Protection
from tls_privsep.shared.wire import vector

pytestmark = pytest.mark.interop

# OpenSSL's names (s_client, the connection line's cipher) -> IANA code, by the certificate they need.
SUITES12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B, "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
    "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F, "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
    "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
}
GROUP_IDS = {"x25519": 0x001D, "secp256r1": 0x0017}
OPENSSL_TEMP_KEY = {"x25519": "Server Temp Key: X25519", "secp256r1": "Server Temp Key: ECDH, prime256v1"}
GNUTLS_CIPHERS = {"AES128-GCM": "AES-128-GCM", "AES256-GCM": "AES-256-GCM", "CHACHA20-POLY1305": "CHACHA20-POLY1305"}
GNUTLS_GROUPS = {"x25519": "X25519", "secp256r1": "SECP256R1"}
# TLS 1.2's ECDSA schemes are not bound to a curve (RFC 5246 §7.4.1.4.1), and GnuTLS names them so.
GNUTLS_SIG = {"rsa": "RSA-PSS-RSAE-SHA256", "ecdsa": "ECDSA-SHA256"}
TLSLITE_CIPHERS = {"AES128-GCM": "aes128gcm", "AES256-GCM": "aes256gcm", "CHACHA20-POLY1305": "chacha20-poly1305"}
CERT_KINDS = ("rsa", "ecdsa")
TLS12_ONLY = "NORMAL:-VERS-ALL:+VERS-TLS1.2"
DOWNGRADE_TLS12 = bytes.fromhex("444f574e47524401")  # "DOWNGRD\x01", RFC 8446 §4.1.3
DOWNGRADE_TLS11 = bytes.fromhex("444f574e47524400")


def suite_code(kind: str, cipher: str) -> int:
    """The suite for a certificate kind and a cipher, e.g. ("rsa", "AES128-GCM") -> 0xC02F."""
    name = f"ECDHE-{kind.upper()}-{cipher}{'' if cipher.startswith('CHACHA') else '-SHA256' if '128' in cipher else '-SHA384'}"
    return SUITES12[name]


def cert_kind(suite: str) -> str:
    return "ecdsa" if "-ECDSA-" in suite else "rsa"


# -- servers ------------------------------------------------------------------------------------


def tls12_only(pool: Pool, certs: str = "both", *args: str) -> Pair:
    """An echo pair with secured.versions = ["1.2"] (Mozilla's "old"-style deployment: no sentinel, no fallback)."""
    return echo_server(pool, certs, "-c", pool.config('[secured]\nversions = ["1.2"]\n'), *args)


def ems_optional(pool: Pool) -> Pair:
    return echo_server(pool, "both", "-c", pool.config("[secured]\nrequire_extended_master_secret = false\n"))


def check_logs(server: Pair, before: tuple[int, int], suite: int, group: str | None, *, resumed: bool = False,
               count: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """secured's "handshake done" line and appd's "connection" line of the last of ``count`` new connections
    agree with what the client saw: TLSv1.2, the suite, the group (None: a resumption names none)."""
    done = new_handshakes(server, before[0], count)[-1]
    conn = new_connections(server, before[1], count)[-1]
    assert (done["version"], done["suite"], done["resumed"]) == ("TLSv1.2", f"{suite:#06x}", resumed), done
    assert (conn["version"], conn["suite"], conn["resumed"]) == ("TLSv1.2", f"{suite:#06x}", resumed), conn
    assert conn["outcome"] == "closed", conn
    if group is not None:
        assert done["group_name"] == group, done
        assert (conn["group"], conn["group_name"]) == (f"{GROUP_IDS[group]:#06x}", group), conn
    return done, conn


def log_marks(server: Pair) -> tuple[int, int]:
    return len(handshakes(server)), len(connections(server))


# -- openssl s_client -----------------------------------------------------------------------------


def s_client12(server: Pair, pki: Pki, *args: str) -> list[str]:
    return s_client_cmd(server, pki, "-tls1_2", *args)


def negotiated(run: Run) -> tuple[str, str] | None:
    """("New" or "Reused", the cipher) from s_client's summary line, for TLS 1.2 only."""
    m = re.search(r"^(New|Reused), TLSv1\.2, Cipher is (\S+)$", run.out, re.M)
    return (m.group(1), m.group(2)) if m else None


def assert_tls12_session(run: Run) -> None:
    """What s_client prints about every TLS 1.2 session with us: the version, EMS, RFC 5746."""
    assert "Protocol  : TLSv1.2" in run.out, run.text
    assert "Extended master secret: yes" in run.out
    assert "Secure Renegotiation IS supported" in run.out
    assert "Verification: OK" in run.out


@pytest.mark.parametrize("group", GROUP_IDS)
@pytest.mark.parametrize("suite", SUITES12)
def test_openssl_suite_group_cert(pool: Pool, pki: Pki, suite: str, group: str) -> None:
    """Every suite x group with the certificate its suite needs: echo, and what s_client and both log lines name.

    An ECDSA certificate's curve must be in the client's supported_groups too (RFC 8422 §5.1.1), so x25519
    with the ECDSA certificate is offered as X25519:P-256 (our preference then takes x25519)."""
    kind = cert_kind(suite)
    server = echo_server(pool, kind)
    curves = {"secp256r1": "P-256", "x25519": "X25519:P-256" if kind == "ecdsa" else "X25519"}[group]
    before = log_marks(server)
    line = f"openssl 1.2 {suite} {group}\n".encode()
    run = converse(s_client12(server, pki, "-cipher", suite, "-curves", curves), echo_steps(line))
    assert line.decode() in run.out, run.text
    assert negotiated(run) == ("New", suite)
    assert_tls12_session(run)
    assert OPENSSL_TEMP_KEY[group] in run.out
    assert ("Peer signature type: RSA-PSS" if kind == "rsa" else "Peer signature type: ECDSA") in run.out
    assert f"Server public key is {2048 if kind == 'rsa' else 256} bit" in run.out
    done, _ = check_logs(server, before, SUITES12[suite], group)
    assert done["sig_scheme"] == ("0x0804" if kind == "rsa" else "0x0403")


def test_openssl_ecdsa_certificate_needs_its_curve_offered(pool: Pool, pki: Pki) -> None:
    """Only X25519 in supported_groups: the P-256 certificate may not be used (RFC 8422 §5.1.1, as OpenSSL's
    own server decides), and without another certificate that is handshake_failure (40)."""
    server = echo_server(pool, "ecdsa")
    run = converse(s_client12(server, pki, "-curves", "X25519"), echo_steps(b"refused\n"))
    assert "SSL alert number 40" in run.err, run.text
    assert "refused\n" not in run.out


def test_openssl_both_certificates_server_preference(pool: Pool, pki: Pki) -> None:
    """Both certificates and s_client's defaults: our first suite, ECDHE-ECDSA-AES128-GCM-SHA256, over x25519."""
    server = echo_server(pool)
    before = log_marks(server)
    run = converse(s_client12(server, pki), echo_steps(b"defaults\n"))
    assert "defaults\n" in run.out, run.text
    assert negotiated(run) == ("New", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert_tls12_session(run)
    check_logs(server, before, 0xC02B, "x25519")


@pytest.mark.parametrize(("sigalgs", "sig_type", "scheme"), [
    ("RSA+SHA256", "RSA", "0x0401"), ("RSA+SHA512", "RSA", "0x0601"), ("RSA-PSS+SHA384", "RSA-PSS", "0x0805"),
])
def test_openssl_rsa_signature_schemes(pool: Pool, pki: Pki, sigalgs: str, sig_type: str, scheme: str) -> None:
    """TLS 1.2 clients that accept only PKCS#1 v1.5 (older ones) get a PKCS#1 ServerKeyExchange signature;
    PSS when they ask for it. Never SHA-1."""
    server = echo_server(pool, "rsa")
    before = log_marks(server)
    run = converse(s_client12(server, pki, "-sigalgs", sigalgs), echo_steps(b"sigalgs\n"))
    assert "sigalgs\n" in run.out, run.text
    assert f"Peer signature type: {sig_type}\n" in run.out
    done, _ = check_logs(server, before, 0xC02F, "x25519")
    assert done["sig_scheme"] == scheme


def test_openssl_resumption(pool: Pool, pki: Pki, tmp_path: Path) -> None:
    """The RFC 5077 ticket from the first connection resumes the second ("Reused"), EMS still on."""
    server = echo_server(pool)
    sess = tmp_path / "session.pem"
    before = log_marks(server)
    first = converse(s_client12(server, pki, "-sess_out", str(sess)), echo_steps(b"first\n"))
    assert "first\n" in first.out and sess.exists(), first.text
    assert "TLS session ticket lifetime hint" in first.out
    second = converse(s_client12(server, pki, "-sess_in", str(sess)), echo_steps(b"second\n"))
    assert "second\n" in second.out, second.text
    assert negotiated(second) == ("Reused", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert_tls12_session(second)
    check_logs(server, before, 0xC02B, None, resumed=True, count=2)
    full = new_handshakes(server, before[0], 2)[0]
    assert full["resumed"] is False


def test_openssl_resumption_refused_without_tickets(pool: Pool, pki: Pki, tmp_path: Path) -> None:
    """--tickets 0: no ticket and no session ID (we keep no session cache), so s_client has no resumable
    session to save."""
    server = echo_server(pool, "both", "--tickets", "0")
    sess = tmp_path / "session.pem"
    first = converse(s_client12(server, pki, "-sess_out", str(sess)), echo_steps(b"no ticket\n"))
    assert "no ticket\n" in first.out, first.text
    assert negotiated(first) == ("New", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert "TLS session ticket" not in first.out
    assert re.search(r"^\s*Session-ID: $", first.out, re.M)  # empty
    assert not sess.exists()


@pytest.mark.parametrize(("tickets", "expected"), [((), ["New"] + ["Reused"] * 5), (("--tickets", "0"), ["New"] * 6)],
                         ids=["tickets", "no-tickets"])
def test_openssl_reconnect(pool: Pool, pki: Pki, tickets: tuple[str, ...], expected: list[str]) -> None:
    """-reconnect: five more connections with the first one's session: resumed with a ticket, all "New" without."""
    server = echo_server(pool, "both", *tickets)
    before = log_marks(server)
    run = converse(s_client12(server, pki, "-reconnect"), echo_steps(b"reconnected\n"))
    assert "reconnected\n" in run.out, run.text
    assert re.findall(r"^(New|Reused), TLSv1\.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256$", run.out, re.M) == expected
    done = new_handshakes(server, before[0], 6)
    assert [d["resumed"] for d in done] == [e == "Reused" for e in expected]


@pytest.mark.parametrize(("offer", "expected"), [
    ("http/1.1", "ALPN protocol: http/1.1"),
    ("h2", "ALPN protocol: h2"),
    (None, "No ALPN negotiated"),
])
def test_openssl_alpn(pool: Pool, pki: Pki, offer: str | None, expected: str) -> None:
    server = echo_server(pool, "both", "--alpn", "h2,http/1.1")
    before = log_marks(server)
    run = converse(s_client12(server, pki, *(["-alpn", offer] if offer else [])), echo_steps(b"alpn\n"))
    assert "alpn\n" in run.out, run.text
    assert expected in run.out
    _, conn = check_logs(server, before, 0xC02B, "x25519")
    assert conn["alpn"] == offer


def test_openssl_alpn_mismatch(pool: Pool, pki: Pki) -> None:
    server = echo_server(pool, "both", "--alpn", "h2,http/1.1")
    run = converse(s_client12(server, pki, "-alpn", "spdy/1"), echo_steps(b"refused\n"))
    assert "SSL alert number 120" in run.err, run.text
    assert "refused\n" not in run.out


def test_openssl_client_certificate(pool: Pool, pki: Pki) -> None:
    server = mtls_server(pool, pki)
    before = log_marks(server)
    cert, key = pki.client
    run = converse(s_client12(server, pki, "-cert", str(cert), "-key", str(key)), echo_steps(b"with cert\n"))
    assert "with cert\n" in run.out, run.text
    assert_tls12_session(run)
    done, _ = check_logs(server, before, 0xC02B, "x25519")
    assert done["client_cert"] is True


def test_openssl_client_certificate_resumption(pool: Pool, pki: Pki, tmp_path: Path) -> None:
    """Under required client auth a ticket carries the client's certificate, so the session resumes
    without asking again, and both lines still say a client certificate was given."""
    server = mtls_server(pool, pki)
    cert, key = pki.client
    sess = tmp_path / "session.pem"
    before = log_marks(server)
    first = converse(s_client12(server, pki, "-cert", str(cert), "-key", str(key), "-sess_out", str(sess)),
                     echo_steps(b"mtls first\n"))
    assert "mtls first\n" in first.out and sess.exists(), first.text
    second = converse(s_client12(server, pki, "-sess_in", str(sess)), echo_steps(b"mtls resumed\n"))
    assert "mtls resumed\n" in second.out, second.text
    assert negotiated(second) == ("Reused", "ECDHE-ECDSA-AES128-GCM-SHA256")
    done, _ = check_logs(server, before, 0xC02B, None, resumed=True, count=2)
    assert done["client_cert"] is True


@pytest.mark.parametrize(("use_cert", "alert", "text"), [
    (False, 40, "handshake failure"),
    (True, 48, "unknown ca"),
], ids=["no-cert", "untrusted-cert"])
def test_openssl_client_certificate_refused(pool: Pool, pki: Pki, use_cert: bool, alert: int, text: str) -> None:
    """TLS 1.2 has no certificate_required: no certificate is handshake_failure (40), RFC 5246 §7.4.6; one
    the client CA did not issue is unknown_ca (48)."""
    server = mtls_server(pool, pki)
    cert, key = pki.ecdsa  # issued by the server CA, not the client CA
    args = ["-cert", str(cert), "-key", str(key)] if use_cert else []
    run = converse(s_client12(server, pki, *args), echo_steps(b"refused\n"))
    assert f"SSL alert number {alert}" in run.err, run.text
    assert text in run.err
    assert "refused\n" not in run.out


def test_openssl_renegotiation_refused(pool: Pool, pki: Pki) -> None:
    """'R' makes s_client renegotiate: we answer with a warning no_renegotiation alert, which OpenSSL turns
    into its own end of the connection ("no renegotiation"). The server carries on: the next client is served."""
    server = echo_server(pool)
    before = log_marks(server)
    steps = [Step(b"before\n", wait_for=b"before\n"), Step(b"R\n", wait_for=b"RENEGOTIATING"),
             Step(b"after\n", pause=0.3)]
    run = converse(s_client12(server, pki), steps)
    assert "before\n" in run.out, run.text
    assert "RENEGOTIATING" in run.err
    assert "no renegotiation" in run.err, run.text
    assert "after\n" not in run.out
    conn = new_connections(server, before[1])[-1]
    assert (conn["version"], conn["outcome"]) == ("TLSv1.2", "alert received: handshake_failure"), conn
    assert any('"renegotiation refused"' in line and f'"conn": {conn["conn"]},' in line
               for line in server.log_text("appd").splitlines())
    again = converse(s_client12(server, pki), echo_steps(b"still serving\n"))
    assert "still serving\n" in again.out, again.text
    assert server.appd.poll() is None and server.secured.poll() is None


def test_openssl_fallback_scsv_refused(pool: Pool, pki: Pki) -> None:
    """-fallback_scsv from a TLS 1.2 client while we speak 1.3: inappropriate_fallback (86), RFC 7507."""
    server = echo_server(pool)
    run = converse(s_client12(server, pki, "-fallback_scsv"), echo_steps(b"fallback\n"))
    assert "SSL alert number 86" in run.err, run.text
    assert "inappropriate fallback" in run.err
    assert "fallback\n" not in run.out


def test_openssl_fallback_scsv_accepted_when_12_is_our_best(pool: Pool, pki: Pki) -> None:
    """With secured.versions = ["1.2"] the same client falls back to our best: served."""
    server = tls12_only(pool)
    run = converse(s_client12(server, pki, "-fallback_scsv"), echo_steps(b"fallback ok\n"))
    assert "fallback ok\n" in run.out, run.text
    assert negotiated(run) == ("New", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_openssl_tls13_client_against_a_tls12_only_server(pool: Pool, pki: Pki) -> None:
    """OpenSSL offering 1.2 and 1.3 to a 1.2-only server gets 1.2, and no sentinel stops it (-msg shows the random)."""
    server = tls12_only(pool)
    run = converse(s_client_cmd(server, pki), echo_steps(b"best is 1.2\n"))
    assert "best is 1.2\n" in run.out, run.text
    assert negotiated(run) == ("New", "ECDHE-ECDSA-AES128-GCM-SHA256")


# -- the raw ServerHello: the TLS 1.3 downgrade sentinel (RFC 8446 §4.1.3) -------------------------------------


@dataclass
class Raw12:
    """A Client12 over a plain socket: the records as they arrive, decrypted once the server's CCS is in."""

    server: Pair
    client: Client12 = field(default_factory=Client12)
    reader: Tls12Protection | None = None

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.server.host, self.server.port), timeout=5)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def record(self) -> tuple[int, bytes]:
        """The next record (type, payload); decrypted after the server's ChangeCipherSpec. EOFError at the end."""
        while len(self.buf) < 5 or len(self.buf) < 5 + int.from_bytes(self.buf[3:5], "big"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"server closed; {len(self.buf)} bytes of a record pending")
            self.buf += chunk
        n = 5 + int.from_bytes(self.buf[3:5], "big")
        header, body, self.buf = self.buf[:5], self.buf[5:n], self.buf[n:]
        if self.reader is not None:
            return self.reader.open(header, body)
        if header[0] == 20:
            self.reader = self.client.server_reader()
        return header[0], body

    def hello(self) -> None:
        """Send the ClientHello, read the first flight up to ServerHelloDone and hand it to the client."""
        self.sock.sendall(self.client.client_hello_record())
        flight, messages = b"", b""
        while True:
            ctype, body = self.record()
            assert ctype == 22, f"record type {ctype} ({body.hex()}) in the server's first flight"
            flight += records(22, body)
            messages += body
            pos, types = 0, []
            while pos + 4 <= len(messages):
                types.append(messages[pos])
                pos += 4 + int.from_bytes(messages[pos + 1 : pos + 4], "big")
            if 14 in types:  # ServerHelloDone
                break
        self.client.read_server(flight)

    def server_finish(self) -> None:
        """Read [NewSessionTicket], CCS and the server Finished; check its verify_data (RFC 5246 §7.4.9)."""
        c = self.client
        assert c.suite is not None
        ctype, body = self.record()
        if ctype == 22 and body[0] == 4:  # NewSessionTicket: in the transcript of the server Finished
            c.messages += body
            ctype, body = self.record()
        assert (ctype, body) == (20, b"\x01"), (ctype, body)
        ctype, fin = self.record()
        digest = hashlib.new(c.suite.hash_name, c.messages).digest()
        expected = tls12.finished_verify_data(c.suite.hash_name, c.master, digest, client=False)
        assert (ctype, fin) == (22, b"\x14\x00\x00\x0c" + expected)

    def echo(self, data: bytes) -> bytes:
        self.sock.sendall(self.client.protect(data, 23))
        return self.read_data(len(data))

    def read_data(self, n: int) -> bytes:
        got = b""
        while len(got) < n:
            ctype, body = self.record()
            assert ctype == 23, (ctype, body.hex())
            got += body
        return got


def server_random(server: Pair) -> bytes:
    raw = Raw12(server)
    try:
        raw.hello()
    finally:
        raw.close()
    assert raw.client.server_msgs[2][4:6] == b"\x03\x03"  # ServerHello.server_version
    return raw.client.server_random


def test_downgrade_sentinel_while_13_is_enabled(pool: Pool) -> None:
    """A ClientHello without supported_versions gets TLS 1.2, and ServerHello.random ends in DOWNGRD\\x01,
    which a TLS 1.3 client would refuse: a man in the middle cannot force 1.2 unseen."""
    random = server_random(echo_server(pool))
    assert random[-8:] == DOWNGRADE_TLS12


def test_no_downgrade_sentinel_when_12_is_our_best(pool: Pool) -> None:
    random = server_random(tls12_only(pool))
    assert random[-8:] not in (DOWNGRADE_TLS12, DOWNGRADE_TLS11)


# -- data right behind the client Finished; renegotiation twice ------------------------------------------------


def test_application_data_in_the_finished_segment(pool: Pool) -> None:
    """ClientKeyExchange, CCS, Finished and an application record in one TCP write (what a False Start
    client does, before the server's Finished): appd delivers the record once its keys arrive."""
    server = echo_server(pool)
    before = log_marks(server)
    raw = Raw12(server)
    try:
        raw.hello()
        data = b"right behind the Finished"
        raw.sock.sendall(raw.client.full_flight() + raw.client.protect(data, 23))
        raw.server_finish()
        assert raw.read_data(len(data)) == data
        assert raw.echo(b"and after") == b"and after"
    finally:
        raw.close()
    (conn,) = new_connections(server, before[1])
    assert conn["version"] == "TLSv1.2" and conn["bytes_in"] >= len(data)


def test_renegotiation_refused_then_fatal(pool: Pool) -> None:
    """RFC 5746 §4.4: the first ClientHello after the handshake gets a warning no_renegotiation (100) and the
    connection goes on; the second is fatal (unexpected_message)."""
    server = echo_server(pool)
    before = len(connections(server))
    raw = Raw12(server)
    try:
        raw.hello()
        raw.sock.sendall(raw.client.full_flight())
        client_verify_data = raw.client.messages[-12:]  # our Finished's, for renegotiation_info
        raw.server_finish()
        again = Client12()
        again.hello.set(RENEGOTIATION_INFO, vector(1, client_verify_data))
        raw.sock.sendall(raw.client.protect(again.hello.encode()))
        assert raw.record() == (21, bytes((1, 100)))  # warning, no_renegotiation
        assert raw.echo(b"still talking") == b"still talking"
        raw.sock.sendall(raw.client.protect(Client12().hello.encode()))
        ctype, alert = raw.record()
        assert (ctype, alert[0]) == (21, 2), alert  # fatal
        assert alert[1] == 10, alert  # unexpected_message
        with pytest.raises((EOFError, ConnectionResetError)):
            raw.record()
    finally:
        raw.close()
    (conn,) = new_connections(server, before)
    assert conn["outcome"] == "alert sent: unexpected_message", conn
    assert server.appd.poll() is None


# -- gnutls-cli -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CERT_KINDS)
@pytest.mark.parametrize("group", GROUP_IDS)
@pytest.mark.parametrize("cipher", GNUTLS_CIPHERS)
def test_gnutls_suite_group_cert(pool: Pool, pki: Pki, cipher: str, group: str, kind: str) -> None:
    """Every suite gnutls-cli can name x group x certificate, TLS 1.2 only; the session line names them all,
    and gnutls reports the extended master secret and safe renegotiation."""
    server = echo_server(pool, kind)
    # The ECDSA certificate's curve must be offered as well (RFC 8422 §5.1.1); our order then takes x25519.
    groups = f"+GROUP-{GNUTLS_GROUPS[group]}" + (":+GROUP-SECP256R1" if kind == "ecdsa" and group == "x25519" else "")
    priority = f"{TLS12_ONLY}:-CIPHER-ALL:+{GNUTLS_CIPHERS[cipher]}:-GROUP-ALL:{groups}"
    before = log_marks(server)
    line = f"gnutls 1.2 {cipher} {group} {kind}\n"
    out = gnutls_cli(server, pki, priority, data=line.encode())
    assert line in out, out
    assert gnutls_description(out) == (
        f"(TLS1.2-X.509)-(ECDHE-{GNUTLS_GROUPS[group]})-({GNUTLS_SIG[kind]})-({GNUTLS_CIPHERS[cipher]})"
    )
    assert re.search(r"^- Options:.*extended master secret", out, re.M), out
    assert re.search(r"^- Options:.*safe renegotiation", out, re.M), out
    check_logs(server, before, suite_code(kind, cipher), group)


def test_gnutls_resume(pool: Pool, pki: Pki) -> None:
    server = echo_server(pool)
    before = log_marks(server)
    out = gnutls_cli(server, pki, TLS12_ONLY, "--resume", data=b"resumed echo\n")
    assert "*** This is a resumed session" in out, out
    assert "resumed echo\n" in out
    check_logs(server, before, 0xC02B, None, resumed=True, count=2)


def test_gnutls_client_certificate(pool: Pool, pki: Pki) -> None:
    server = mtls_server(pool, pki)
    cert, key = pki.client
    out = gnutls_cli(server, pki, TLS12_ONLY, "--x509certfile", str(cert), "--x509keyfile", str(key),
                     data=b"gnutls mtls 1.2\n")
    assert "gnutls mtls 1.2\n" in out, out
    assert "(TLS1.2-X.509)" in (gnutls_description(out) or "")


def test_gnutls_without_ems_refused(pool: Pool, pki: Pki) -> None:
    """%NO_SESSION_HASH: no extended master secret, which we require by default: handshake_failure."""
    server = echo_server(pool)
    out = gnutls_cli(server, pki, f"{TLS12_ONLY}:%NO_SESSION_HASH", data=b"no ems\n")
    assert "no ems\n" not in out
    assert "*** Received alert [40]: Handshake failed" in out, out


# -- curl -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", [None, "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384"])
def test_curl_tls12(pool: Pool, pki: Pki, cipher: str | None) -> None:
    """curl --tlsv1.2 --tls-max 1.2: 200, the backend says TLSv1.2 and the suite, curl -v says the same."""
    server = http_server(pool)
    before = log_marks(server)
    args = ["--ciphers", cipher] if cipher else []
    proc = curl("-v", "--tlsv1.2", "--tls-max", "1.2", "--cacert", str(pki.ca_file), "--resolve",
                f"localhost:{server.port}:127.0.0.1", *args, f"https://localhost:{server.port}/twelve")
    suite = cipher or "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert proc.returncode == 0, proc.stderr
    assert "status=200" in proc.stdout
    assert f"tls: TLSv1.2 {suite}\n" in proc.stdout
    assert "request: GET /twelve HTTP/1.1" in proc.stdout
    assert "sni: localhost" in proc.stdout
    assert f"SSL connection using TLSv1.2 / {suite}" in proc.stderr
    check_logs(server, before, SUITES12[suite], "x25519")


# -- Python ssl -----------------------------------------------------------------------------------


def py_context12(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# The Python ssl echo (each certificate kind) and resumption-with-SNI tests run for both versions in
# test_interop.py.


def test_python_ssl_client_certificate(pool: Pool, pki: Pki) -> None:
    server = mtls_server(pool, pki)
    ctx = py_context12(pki)
    ctx.load_cert_chain(*map(str, pki.client))
    before = log_marks(server)
    got, _ = py_echo(server, ctx, b"python mtls 1.2")
    assert got == b"python mtls 1.2"
    done, _ = check_logs(server, before, 0xC02B, "x25519")
    assert done["client_cert"] is True


def test_python_ssl_client_certificate_missing(pool: Pool, pki: Pki) -> None:
    server = mtls_server(pool, pki)
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        py_echo(server, py_context12(pki), b"no cert")


# -- tlslite-ng -----------------------------------------------------------------------------------


def tlslite12(cipher: str = "AES128-GCM", kind: str | None = None, curves: tuple[str, ...] = ("x25519", "secp256r1"),
              *, ems: bool = True) -> HandshakeSettings:
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 3)
    settings.cipherNames = [TLSLITE_CIPHERS[cipher]]
    if kind is not None:
        settings.keyExchangeNames = [f"ecdhe_{kind}"]
    settings.eccCurves = list(curves)
    settings.keyShares = list(curves[:1])  # TLS 1.3's, unused here; tlslite checks them against eccCurves
    settings.useExtendedMasterSecret = ems
    settings.requireExtendedMasterSecret = ems
    return settings


@pytest.mark.parametrize("kind", CERT_KINDS)
@pytest.mark.parametrize("group", GROUP_IDS)
@pytest.mark.parametrize("cipher", TLSLITE_CIPHERS)
def test_tlslite_suite_group_cert(pool: Pool, pki: Pki, cipher: str, group: str, kind: str) -> None:
    """tlslite-ng at (3, 3) with one suite, one group (plus P-256 for the ECDSA certificate, RFC 8422 §5.1.1)
    and requireExtendedMasterSecret: echo, and the version, suite, EMS and leaf it reports."""
    server = echo_server(pool, kind)
    curves = (group,) if kind == "rsa" or group == "secp256r1" else (group, "secp256r1")
    before = log_marks(server)
    conn = tlslite_connect(server, tlslite12(cipher, kind, curves))
    try:
        assert conn.version == (3, 3)
        assert conn.session.cipherSuite == suite_code(kind, cipher)
        assert conn.extendedMasterSecret
        leaf = conn.session.serverCertChain.x509List[0].bytes
        assert bytes(leaf) == leaf_der((pki.rsa if kind == "rsa" else pki.ecdsa)[0])
        data = f"tlslite 1.2 {cipher} {group} {kind}".encode()
        assert tlslite_echo(conn, data) == data
    finally:
        conn.close()
    check_logs(server, before, suite_code(kind, cipher), group)


def test_tlslite_resumption(pool: Pool, pki: Pki) -> None:
    """tlslite-ng's TLS 1.2 session (its ticket) resumes the second connection, EMS required on both sides."""
    server = echo_server(pool)
    settings = tlslite12()
    before = log_marks(server)
    conn = tlslite_connect(server, settings)
    try:
        assert tlslite_echo(conn, b"first") == b"first"
        session = conn.session
        assert session.tls_1_0_tickets
    finally:
        conn.close()
    conn = tlslite_connect(server, settings, session=session)
    try:
        assert conn.resumed and conn.extendedMasterSecret
        assert tlslite_echo(conn, b"resumed") == b"resumed"
    finally:
        conn.close()
    check_logs(server, before, 0xC02B, None, resumed=True, count=2)


def test_tlslite_without_ems_refused(pool: Pool, pki: Pki) -> None:
    """useExtendedMasterSecret off: the default server requires it (RFC 7627) and says handshake_failure."""
    server = echo_server(pool)
    with pytest.raises(TLSRemoteAlert, match="handshake_failure"):
        tlslite_connect(server, tlslite12(ems=False))


def test_tlslite_without_ems_where_optional(pool: Pool, pki: Pki) -> None:
    """require_extended_master_secret = false: a client without EMS is served, but gets no ticket, since such a
    session is never resumed (RFC 7627 §5.3: no abbreviated handshake without EMS): a full handshake follows."""
    server = ems_optional(pool)
    settings = tlslite12(ems=False)
    conn = tlslite_connect(server, settings)
    try:
        assert not conn.extendedMasterSecret
        assert tlslite_echo(conn, b"no ems") == b"no ems"
        session = conn.session
        assert not session.tls_1_0_tickets  # no ticket for a session that may never be resumed
    finally:
        conn.close()
    conn = tlslite_connect(server, settings, session=session)
    try:
        assert not conn.resumed
        assert tlslite_echo(conn, b"full again") == b"full again"
    finally:
        conn.close()


def test_tlslite_tls12_only_server(pool: Pool, pki: Pki) -> None:
    """tlslite-ng offering 1.3 and 1.2 to a 1.2-only server: 1.2 (it checks the sentinel, which is absent)."""
    server = tls12_only(pool)
    settings = HandshakeSettings()
    settings.maxVersion = (3, 4)
    conn = TLSConnection(socket.create_connection((server.host, server.port), timeout=5))
    try:
        conn.handshakeClientCert(settings=settings, serverName="localhost")
        assert conn.version == (3, 3)
        assert tlslite_echo(conn, b"negotiated down") == b"negotiated down"
    finally:
        conn.close()


# -- a record longer than TLS 1.3 frames, within TLS 1.2's bound ----------------------------------------------


def test_a_long_garbage_record_gets_bad_record_mac_in_the_handshake_and_after(pool: Pool) -> None:
    """RFC 5246 §6.2.3 frames records up to 2^14+2048 bytes: appd relays one whole to secured during the
    handshake, and secured (or appd, after it) judges it by its tag, as OpenSSL does: bad_record_mac, never a
    hang waiting for bytes."""
    server = echo_server(pool)
    garbage = bytes([22, 3, 3]) + (2**14 + 300).to_bytes(2, "big") + bytes(2**14 + 300)
    raw = Raw12(server)
    try:
        raw.hello()
        c = raw.client
        raw.sock.sendall(record(22, c.client_key_exchange()) + CCS + garbage)
        assert raw.record() == (21, bytes([2, AD.bad_record_mac]))  # before our CCS: in the clear
        with pytest.raises(EOFError):
            raw.record()
    finally:
        raw.close()
    raw = Raw12(server)
    try:
        raw.hello()
        raw.sock.sendall(raw.client.full_flight())
        raw.server_finish()
        assert raw.echo(b"fine") == b"fine"
        raw.sock.sendall(bytes([23]) + garbage[1:])
        assert raw.record() == (21, bytes([2, AD.bad_record_mac]))  # sealed under our key, by appd
        with pytest.raises(EOFError):
            raw.record()
    finally:
        raw.close()

"""The engine against a client that offers the hybrid by default (pyOpenSSL, OpenSSL 3.5+), in memory.

pyOpenSSL sends X25519MLKEM768 and X25519 shares unasked, as Chrome, Firefox and OpenSSL 3.5 do: every
test checks the group from both ends (what OpenSSL says it negotiated, what the engine chose) and moves
data through the exported state, imported as appd imports it.
"""

from __future__ import annotations

import contextlib

import pytest
from OpenSSL import SSL

from tests.inmemory import pki, server_config
from tests.pqclient import HYBRID, client_context, reused
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import AlertDescription, LocalAlert
from tls_privsep.shared.record import ApplicationData, RecordLayer

SUITES = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302, "TLS_CHACHA20_POLY1305_SHA256": 0x1303}
X25519MLKEM768, X25519 = 0x11EC, 0x001D


class MemPair:
    """A pyOpenSSL client and the engine, wired through memory BIOs."""

    def __init__(self, server: ServerHandshake, ctx: SSL.Context, session: SSL.Session | None = None) -> None:
        self.server = server
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_tlsext_host_name(b"localhost")
        if session is not None:
            self.conn.set_session(session)
        self.conn.set_connect_state()
        self.rl: RecordLayer | None = None

    def _from_client(self) -> bytes:
        try:
            return self.conn.bio_read(1 << 20)
        except SSL.WantReadError:
            return b""

    def handshake(self) -> None:
        done = False
        for _ in range(10):
            if not done:
                try:
                    self.conn.do_handshake()
                    done = True
                except SSL.WantReadError:
                    pass
            data = self._from_client()
            if data:
                self.server.receive_data(data)
            reply = self.server.data_to_send()
            if reply:
                self.conn.bio_write(reply)
            if done and self.server.complete:
                self.rl = RecordLayer.from_traffic_state(self.server.export())
                self.rl.receive_data(self.server.trailing)
                return
        raise AssertionError("handshake did not finish")

    def echo(self, data: bytes) -> bytes:
        """Client -> imported record layer -> back to the client (which takes in the tickets on the way)."""
        assert self.rl is not None
        self.conn.sendall(data)
        self.rl.receive_data(self._from_client())
        got = b""
        while (event := self.rl.next_event()) is not None:
            if isinstance(event, ApplicationData):
                got += event.data
        self.conn.bio_write(self.rl.send_application_data(got))
        out = b""
        while len(out) < len(got):
            out += self.conn.recv(65536)
        return out


def _engine(kind: str = "ecdsa", **kw: object) -> ServerHandshake:
    return ServerHandshake(server_config((kind,), **kw))


@pytest.mark.parametrize("kind", ["rsa2048", "ecdsa"])
@pytest.mark.parametrize("suite", SUITES)
def test_hybrid_by_default_every_suite_and_certificate(suite: str, kind: str) -> None:
    pair = MemPair(_engine(kind, cipher_suites=(SUITES[suite],)), client_context(pki().ca))
    pair.handshake()
    assert pair.conn.get_group_name() == HYBRID
    assert pair.server.info.group == X25519MLKEM768 and not pair.server.info.hrr
    assert pair.conn.get_cipher_name() == suite
    assert pair.echo(b"post-quantum " * 500) == b"post-quantum " * 500


def test_secp256r1mlkem768() -> None:
    pair = MemPair(_engine(), client_context(pki().ca, groups="SecP256r1MLKEM768"))
    pair.handshake()
    assert pair.conn.get_group_name() == "SecP256r1MLKEM768" and pair.server.info.group == 0x11EB
    assert pair.echo(b"p-256 hybrid") == b"p-256 hybrid"


@pytest.mark.parametrize(("policy", "group", "hrr"), [
    ("require", X25519MLKEM768, True), ("prefer", X25519, False), ("off", X25519, False),
])
def test_a_client_listing_the_hybrid_without_its_share(policy: str, group: int, hrr: bool) -> None:
    """Only an X25519 share, the hybrid listed: require asks for it (HelloRetryRequest); the others take X25519."""
    pair = MemPair(_engine(post_quantum=policy), client_context(pki().ca, groups=f"*X25519:{HYBRID}"))
    pair.handshake()
    assert pair.server.info.group == group and pair.server.info.hrr is hrr
    assert pair.conn.get_group_name() == (HYBRID if group == X25519MLKEM768 else "x25519")
    assert pair.echo(b"after the choice") == b"after the choice"


def test_off_takes_x25519_from_a_client_that_sent_both() -> None:
    pair = MemPair(_engine(post_quantum="off"), client_context(pki().ca))
    pair.handshake()
    assert pair.conn.get_group_name() == "x25519" and pair.server.info.group == X25519


def test_require_refuses_a_classical_only_client() -> None:
    pair = MemPair(_engine(post_quantum="require"), client_context(pki().ca, groups="X25519:P-256"))
    with pytest.raises(LocalAlert) as exc:
        pair.handshake()
    assert exc.value.description == AlertDescription.handshake_failure


@pytest.mark.parametrize("policy", ["prefer", "require"])
def test_resumption_with_psk_dhe_ke_over_the_hybrid(policy: str) -> None:
    """A ticket from a hybrid handshake resumes with a fresh hybrid exchange (psk_dhe_ke, OpenSSL's mode)."""
    config = server_config(("ecdsa",), post_quantum=policy)
    ctx = client_context(pki().ca)
    first = MemPair(ServerHandshake(config), ctx)
    first.handshake()
    assert first.echo(b"first") == b"first"  # the client reads its tickets with the answer
    session = first.conn.get_session()
    second = MemPair(ServerHandshake(config), ctx, session=session)
    second.handshake()
    assert reused(second.conn) and second.server.info.resumed
    assert second.server.info.group == X25519MLKEM768 and second.conn.get_group_name() == HYBRID
    assert second.echo(b"resumed") == b"resumed"
    with contextlib.suppress(SSL.Error):
        second.conn.shutdown()

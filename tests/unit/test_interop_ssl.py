"""The engine against a real OpenSSL client (Python's ssl) in memory: every suite, group and key type."""

from __future__ import annotations

import contextlib
import ssl

import pytest

from tests.inmemory import Pair, client_context, client_verifier, server_config
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import LocalAlert, PeerAlert
from tls_privsep.shared.record import KeyUpdated

SUITES = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302, "TLS_CHACHA20_POLY1305_SHA256": 0x1303}
GROUPS = {"x25519": 0x001D, "secp256r1": 0x0017}


@pytest.mark.parametrize("kind", ["rsa2048", "ecdsa", "ed25519"])
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("suite", SUITES)
def test_matrix(suite: str, group: str, kind: str) -> None:
    # Python's ssl cannot pick TLS 1.3 suites or groups, so the server narrows them; OpenSSL offers an
    # X25519 share only, so P-256 goes through a HelloRetryRequest.
    config = server_config((kind,), cipher_suites=(SUITES[suite],), groups=(GROUPS[group],))
    pair = Pair(ServerHandshake(config), client_context())
    pair.handshake()
    assert pair.client.version() == "TLSv1.3"
    assert pair.client.cipher()[0] == suite
    assert pair.server.info.hrr == (group == "secp256r1")
    assert pair.client_send(b"ping " * 100) == b"ping " * 100
    assert pair.server_send(b"pong" * 5000) == b"pong" * 5000
    pair.close()


@pytest.mark.parametrize(("order", "scheme"), [(("rsa2048", "ecdsa"), 0x0804), (("ecdsa", "rsa2048"), 0x0403)])
def test_rsa_and_ecdsa_loaded_together(order: tuple[str, str], scheme: int) -> None:
    # A client that takes both gets the first loaded; choice by the client's schemes is in
    # test_handshake_inputs (Python's ssl cannot narrow its signature_algorithms).
    pair = Pair(ServerHandshake(server_config(order)), client_context())
    pair.handshake()
    assert pair.server.info.sig_scheme == scheme


@pytest.mark.parametrize("tls12", [False, True], ids=["TLSv1.3", "TLSv1.2"])
def test_resumption_with_ticket_from_earlier_connection(tls12: bool) -> None:
    config = server_config(("ecdsa",))
    ctx = client_context(tls12=tls12)
    first = Pair(ServerHandshake(config), ctx)
    first.handshake()
    assert first.server_send(b"x") == b"x"  # the client reads the tickets with this record
    session = first.client.session
    assert session is not None and session.has_ticket
    second = Pair(ServerHandshake(config), ctx, session=session)
    second.handshake()
    assert second.client.session_reused
    assert second.server.info.resumed and second.state is not None and second.state.psk_resumed
    assert second.client_send(b"again") == b"again"
    assert second.server_send(b"back") == b"back"


@pytest.mark.parametrize("tls12", [False, True], ids=["TLSv1.3", "TLSv1.2"])
def test_resumption_refused_for_other_server_name(tls12: bool) -> None:
    config = server_config(("ecdsa",))
    ctx = client_context(tls12=tls12)
    ctx.check_hostname = False
    first = Pair(ServerHandshake(config), ctx, sni="localhost")
    first.handshake()
    first.server_send(b"x")
    second = Pair(ServerHandshake(config), ctx, sni="a.example.test", session=first.client.session)
    second.handshake()
    assert not second.server.info.resumed and not second.client.session_reused


def test_alpn_negotiated_and_mismatch() -> None:
    config = server_config(alpn=("h2", "http/1.1"))
    ctx = client_context()
    ctx.set_alpn_protocols(["http/1.1", "h2"])
    pair = Pair(ServerHandshake(config), ctx)
    pair.handshake()
    assert pair.client.selected_alpn_protocol() == "h2"  # server preference
    assert pair.state is not None and pair.state.alpn == "h2"
    ctx2 = client_context()
    ctx2.set_alpn_protocols(["spdy/3"])
    bad = Pair(ServerHandshake(config), ctx2)
    with pytest.raises(LocalAlert) as exc:
        bad.handshake()
    assert exc.value.description.name == "no_application_protocol"


def test_sni_selects_certificate_and_is_exported() -> None:
    config = server_config(("ecdsa",))
    ctx = client_context()
    pair = Pair(ServerHandshake(config), ctx, sni="www.example.test")
    pair.handshake()
    assert pair.state is not None and pair.state.sni == "www.example.test"


@pytest.mark.parametrize("kind", ["rsa2048", "ecdsa", "ed25519"])
def test_client_certificate_required(kind: str) -> None:
    config = server_config(client_auth="required", client_verifier=client_verifier())
    pair = Pair(ServerHandshake(config), client_context(client_cert=kind))
    pair.handshake()
    assert pair.server.info.client_cert
    assert pair.state is not None and len(pair.state.peer_certs) == 1
    assert pair.client_send(b"authenticated") == b"authenticated"


def test_client_certificate_required_but_absent() -> None:
    config = server_config(client_auth="required", client_verifier=client_verifier())
    pair = Pair(ServerHandshake(config), client_context())
    with pytest.raises(LocalAlert) as exc:
        pair.handshake()
    assert exc.value.description.name == "certificate_required"
    # The client learns why: OpenSSL reports the alert we sent.
    pair.incoming.write(pair.server.data_to_send())
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|certificate required"):
        pair.client.read(10)


def test_client_certificate_optional_absent() -> None:
    config = server_config(client_auth="optional", client_verifier=client_verifier())
    pair = Pair(ServerHandshake(config), client_context())
    pair.handshake()
    assert not pair.server.info.client_cert


def test_client_certificate_from_unknown_ca() -> None:
    from tests import certs

    other_ca, _ = certs.make_ca("someone else")
    config = server_config(client_auth="required", client_verifier=type(client_verifier())(ca_certs=[other_ca]))
    pair = Pair(ServerHandshake(config), client_context(client_cert="ecdsa"))
    with pytest.raises(LocalAlert) as exc:
        pair.handshake()
    assert exc.value.description.name == "unknown_ca"


def test_key_update_both_ways() -> None:
    pair = Pair(ServerHandshake(server_config()), client_context())
    pair.handshake()
    assert pair.rl is not None
    # We ask the client to update too; OpenSSL answers with its own KeyUpdate.
    pair.incoming.write(pair.rl.send_key_update(request_peer=True))
    assert pair.server_send(b"after our update") == b"after our update"
    pair.client.write(b"after theirs")
    events = pair.pump_to_server()
    assert any(isinstance(e, KeyUpdated) for e in events)
    assert pair.rl.read is not None and pair.rl.read.seq >= 1
    pair.close()


def test_client_sees_our_alert_on_bad_finished() -> None:
    """A corrupted client Finished record: bad_record_mac goes back, encrypted, and OpenSSL reads it."""
    pair = Pair(ServerHandshake(server_config()), client_context())
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.client.do_handshake()
    pair.server.receive_data(pair.outgoing.read())
    pair.incoming.write(pair.server.data_to_send())
    pair.client.do_handshake()
    finished = bytearray(pair.outgoing.read())
    finished[-1] ^= 0x01
    with pytest.raises(LocalAlert) as exc:
        pair.server.receive_data(bytes(finished))
    assert exc.value.description.name == "bad_record_mac"
    pair.incoming.write(pair.server.data_to_send())
    with pytest.raises(ssl.SSLError, match=r"BAD_RECORD_MAC|bad record mac"):
        pair.client.read(10)


def test_peer_alert_is_distinguishable() -> None:
    pair = Pair(ServerHandshake(server_config()), client_context())
    with pytest.raises(PeerAlert):
        pair.server.receive_data(b"\x15\x03\x03\x00\x02\x02\x28")


@pytest.mark.parametrize("policy", ["prefer", "off", "require"])
def test_a_classical_client_under_each_post_quantum_policy(policy: str) -> None:
    """Python's ssl (OpenSSL 3.0: an x25519 share, no hybrid listed) is served x25519 unchanged under prefer
    and off, and refused with handshake_failure under require, which it reports."""
    pair = Pair(ServerHandshake(server_config(post_quantum=policy)), client_context())
    if policy == "require":
        with pytest.raises(LocalAlert) as exc:
            pair.handshake()
        assert exc.value.description.name == "handshake_failure"
        pair.incoming.write(pair.server.data_to_send())
        with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure"):
            pair.client.do_handshake()
        return
    pair.handshake()
    assert pair.server.info.group == 0x001D and not pair.server.info.hrr
    assert pair.client_send(b"classical") == b"classical"

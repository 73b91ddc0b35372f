"""TLS 1.2: the engine against a real OpenSSL client (Python's ssl) in memory, no sockets.

Every suite, group and key type, resumption with a ticket, ALPN, SNI, client certificates, the
downgrade sentinel, and what OpenSSL reports when we refuse. The exported state is imported into a
fresh record layer as appd does it, so every test crosses the export/import boundary too.
"""

from __future__ import annotations

import contextlib
import ssl

import pytest

from tests.inmemory import Pair, client_context, client_verifier, server_config
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import LocalAlert
from tls_privsep.shared.state import TLS12, TLS13

# OpenSSL's name -> (our code, the key type that signs it)
SUITES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": (0xC02B, "ecdsa"),
    "ECDHE-RSA-AES128-GCM-SHA256": (0xC02F, "rsa2048"),
    "ECDHE-ECDSA-AES256-GCM-SHA384": (0xC02C, "ecdsa"),
    "ECDHE-RSA-AES256-GCM-SHA384": (0xC030, "rsa2048"),
    "ECDHE-ECDSA-CHACHA20-POLY1305": (0xCCA9, "ecdsa"),
    "ECDHE-RSA-CHACHA20-POLY1305": (0xCCA8, "rsa2048"),
}
GROUPS = {"X25519": 0x001D, "P-256": 0x0017}
DOWNGRADE_TLS12 = bytes.fromhex("444f574e47524401")


def _ctx(suite: str | None = None, **kw: object) -> ssl.SSLContext:
    ctx = client_context(tls12=True, **kw)  # type: ignore[arg-type]
    if suite is not None:
        ctx.set_ciphers(suite)
    return ctx


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("suite", SUITES)
def test_matrix(suite: str, group: str) -> None:
    code, kind = SUITES[suite]
    ctx = _ctx(suite)  # OpenSSL offers X25519 and P-256 (and must: P-256 is the ECDSA key's curve, RFC 8422 §5.1.1)
    pair = Pair(ServerHandshake(server_config((kind,), groups=(GROUPS[group],))), ctx)
    pair.handshake()
    assert pair.client.version() == "TLSv1.2"
    assert pair.client.cipher()[0] == suite
    assert pair.server.info.version == TLS12 and pair.server.info.suite == code
    assert pair.server.info.group == GROUPS[group]
    assert pair.state is not None and pair.state.version == TLS12
    assert pair.client_send(b"ping " * 100) == b"ping " * 100
    assert pair.server_send(b"pong" * 5000) == b"pong" * 5000
    pair.close()


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519", "rsa2048"])
def test_each_key_type_signs_the_key_exchange(kind: str) -> None:
    pair = Pair(ServerHandshake(server_config((kind,))), _ctx())
    pair.handshake()
    assert pair.client.version() == "TLSv1.2"
    assert pair.client_send(b"x") == b"x"


def test_server_chooses_the_suite_for_the_certificate_it_holds() -> None:
    # An RSA certificate only: the client offers ECDSA suites first, and gets an RSA one.
    pair = Pair(ServerHandshake(server_config(("rsa2048",))), _ctx())
    pair.handshake()
    assert "RSA" in pair.client.cipher()[0]


def test_downgrade_sentinel_only_while_tls13_is_enabled() -> None:
    for versions, sentinel in ((frozenset({TLS12, TLS13}), True), (frozenset({TLS12}), False)):
        engine = ServerHandshake(server_config(versions=versions))
        pair = Pair(engine, _ctx())
        with contextlib.suppress(ssl.SSLWantReadError):
            pair.client.do_handshake()
        engine.receive_data(pair.outgoing.read())
        flight = engine.data_to_send()
        # record header (5) + handshake header (4) + version (2): the ServerHello.random is next.
        random = flight[11:43]
        assert (random[24:] == DOWNGRADE_TLS12) is sentinel


def test_a_tls13_client_sees_through_a_forced_downgrade() -> None:
    # A client offering both versions, against a server restricted to 1.2 whose random still carries
    # the sentinel, would abort: we do not set it when we cannot speak 1.3, so this one connects.
    ctx = client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    pair = Pair(ServerHandshake(server_config(versions=frozenset({TLS12}))), ctx)
    pair.handshake()
    assert pair.client.version() == "TLSv1.2"


def test_client_offering_both_gets_tls13() -> None:
    ctx = client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    pair = Pair(ServerHandshake(server_config()), ctx)
    pair.handshake()
    assert pair.client.version() == "TLSv1.3"


def test_tls13_only_server_refuses_a_tls12_client() -> None:
    pair = Pair(ServerHandshake(server_config(versions=frozenset({TLS13}))), _ctx())
    with pytest.raises(LocalAlert) as exc:
        pair.handshake()
    assert exc.value.description.name == "protocol_version"


# Resumption with a ticket, and none for another server name: test_interop_ssl.py, for both versions.


def test_no_tickets_configured_means_full_handshakes() -> None:
    config = server_config(("ecdsa",), ticket_keys=None)
    ctx = _ctx()
    first = Pair(ServerHandshake(config), ctx)
    first.handshake()
    session = first.client.session
    second = Pair(ServerHandshake(config), ctx, session=session)
    second.handshake()
    assert not second.client.session_reused


def test_alpn_and_sni() -> None:
    config = server_config(alpn=("h2", "http/1.1"))
    ctx = _ctx()
    ctx.set_alpn_protocols(["http/1.1", "h2"])
    pair = Pair(ServerHandshake(config), ctx, sni="www.example.test")
    pair.handshake()
    assert pair.client.selected_alpn_protocol() == "h2"
    assert pair.state is not None and pair.state.alpn == "h2" and pair.state.sni == "www.example.test"


@pytest.mark.parametrize("kind", ["rsa2048", "ecdsa", "ed25519"])
def test_client_certificate_required(kind: str) -> None:
    config = server_config(client_auth="required", client_verifier=client_verifier())
    pair = Pair(ServerHandshake(config), _ctx(client_cert=kind))
    pair.handshake()
    assert pair.server.info.client_cert
    assert pair.state is not None and len(pair.state.peer_certs) == 1
    assert pair.client_send(b"authenticated") == b"authenticated"


def test_client_certificate_required_but_absent() -> None:
    config = server_config(client_auth="required", client_verifier=client_verifier())
    pair = Pair(ServerHandshake(config), _ctx())
    with pytest.raises(LocalAlert) as exc:
        pair.handshake()
    assert exc.value.description.name == "handshake_failure"  # RFC 5246 §7.4.6 (no certificate_required in 1.2)
    pair.incoming.write(pair.server.data_to_send())
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure"):
        pair.client.do_handshake()


def test_client_certificate_resumed_keeps_the_peer_chain() -> None:
    config = server_config(client_auth="required", client_verifier=client_verifier())
    ctx = _ctx(client_cert="ecdsa")
    first = Pair(ServerHandshake(config), ctx)
    first.handshake()
    second = Pair(ServerHandshake(config), ctx, session=first.client.session)
    second.handshake()
    assert second.client.session_reused
    assert second.state is not None and len(second.state.peer_certs) == 1


def test_no_suite_in_common() -> None:
    pair = Pair(ServerHandshake(server_config(cipher_suites12=(0xC02C,))), _ctx("ECDHE-ECDSA-AES128-GCM-SHA256"))
    with pytest.raises(LocalAlert) as exc:
        pair.handshake()
    assert exc.value.description.name == "handshake_failure"


@pytest.mark.parametrize("group", GROUPS)
def test_appd_reads_the_group_from_our_server_key_exchange(group: str) -> None:
    from tls_privsep.shared.serverhello import negotiated_group

    engine = ServerHandshake(server_config(groups=(GROUPS[group],)))
    pair = Pair(engine, _ctx())
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.client.do_handshake()
    engine.receive_data(pair.outgoing.read())
    flight = engine.data_to_send()
    assert negotiated_group(flight) == GROUPS[group]
    for cut in (0, 5, 60, len(flight) - 1):  # a part of the flight names no group, and never raises
        assert negotiated_group(flight[:cut]) in (None, GROUPS[group])


def test_a_tls12_configuration_no_certificate_can_serve_is_refused() -> None:
    # Only an ECDSA certificate and only RSA suites for TLS 1.2: every TLS 1.2 client would get
    # handshake_failure, so the configuration is refused (at start and on reload), naming why.
    with pytest.raises(ValueError, match=r"no TLS 1.2 cipher suite listed fits the certificates \(ECDSA\)"):
        server_config(("ecdsa",), cipher_suites12=(0xC02F, 0xCCA8))
    server_config(("ecdsa",), cipher_suites12=(0xC02F,), versions=frozenset({TLS13}))  # 1.2 not served: fine
    server_config(("ecdsa", "rsa2048"), cipher_suites12=(0xC02F,))


def test_versions_flag_and_what_is_served() -> None:
    from tls_privsep.shared import cli, config

    parser = cli.ArgumentParser()
    cli.add_common(parser)
    settings = cli.settings_from(parser.parse_args(["--versions", "1.3"]))
    assert settings.secured.versions == ("1.3",)
    settings = cli.settings_from(parser.parse_args([]))
    assert config.served_versions(settings.secured) == ("1.2", "1.3")
    hybrid_only = config.validate(config.from_dict({"secured": {"groups": ["X25519MLKEM768"]}}))
    assert config.served_versions(hybrid_only.secured) == ("1.3",)
    assert "only hybrids" in (config.tls12_left_out(hybrid_only.secured) or "")

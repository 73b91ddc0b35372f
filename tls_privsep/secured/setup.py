"""Turn validated settings into a ServerConfig: the one place secured reads key files."""

from __future__ import annotations

from tls_privsep.secured import groups
from tls_privsep.secured.credentials import Credential, CredentialStore
from tls_privsep.secured.handshake import ServerConfig, TicketSealer
from tls_privsep.secured.peerauth import ClientCertVerifier
from tls_privsep.secured.tickets import TicketKeys
from tls_privsep.shared.config import (
    GROUP_LABELS,
    GROUP_NAMES,
    SUITE12_NAMES,
    SUITE_NAMES,
    VERSION_NAMES,
    SecuredSettings,
    served_versions,
)
from tls_privsep.shared.errors import ConfigError


def load_credentials(settings: SecuredSettings) -> CredentialStore:
    if not settings.certificates:
        raise ConfigError("secured: no certificate configured (give --cert and --key)")
    return CredentialStore([Credential.from_files(p.cert, p.key) for p in settings.certificates])


def unavailable_groups(settings: SecuredSettings) -> list[str]:
    """The configured groups this ``cryptography`` cannot run (the hybrids, without ML-KEM), by IANA name.

    server_config() leaves them out under ``prefer``; the caller logs them (at start and on each reload),
    as this module has no logger, so that a silently classical server is not mistaken for a hybrid one.
    """
    if groups.hybrids_available():
        return []
    ids = (GROUP_NAMES[g.lower()] for g in settings.groups)
    return [GROUP_LABELS[g] for g in ids if groups.is_hybrid(g)]


def server_config(settings: SecuredSettings, credentials: CredentialStore | None = None,
                  ticket_keys: TicketSealer | None = None) -> ServerConfig:
    """Build the handshake configuration; ``credentials`` and ``ticket_keys`` may be reused on reload."""
    verifier = None
    if settings.client_ca:
        verifier = ClientCertVerifier(settings.client_ca)
    if ticket_keys is None and settings.tickets > 0:
        ticket_keys = TicketKeys(rotate_after=max(settings.ticket_lifetime / 2, 60.0))
    group_ids = tuple(GROUP_NAMES[g.lower()] for g in settings.groups)
    if not groups.hybrids_available() and any(groups.is_hybrid(g) for g in group_ids):
        # A cryptography built against an OpenSSL without ML-KEM: prefer falls back to the classical groups
        # (what it would give a client without the hybrid anyway); require cannot, and says so.
        if settings.post_quantum == "require":
            raise ConfigError("secured.post_quantum = \"require\", but this cryptography has no ML-KEM "
                              "(it needs OpenSSL 3.5 or later, as in its wheels)")
        group_ids = tuple(g for g in group_ids if not groups.is_hybrid(g))
        if not group_ids:
            raise ConfigError("secured.groups lists only hybrids, and this cryptography has no ML-KEM "
                              "(add x25519 or secp256r1, or use a cryptography built with OpenSSL 3.5 or later)")
    try:
        return ServerConfig(
            credentials=credentials or load_credentials(settings),
            cipher_suites=tuple(SUITE_NAMES[s] for s in settings.cipher_suites),
            versions=frozenset(VERSION_NAMES[v] for v in served_versions(settings)),
            cipher_suites12=tuple(dict.fromkeys(SUITE12_NAMES[s] for s in settings.tls12_cipher_suites)),
            require_ems=settings.require_extended_master_secret,
            groups=group_ids,
            post_quantum=settings.post_quantum,  # type: ignore[arg-type]
            alpn=settings.alpn,
            tickets=settings.tickets,
            ticket_keys=ticket_keys if settings.tickets > 0 else None,
            ticket_lifetime=settings.ticket_lifetime,
            allow_psk_ke=settings.allow_psk_ke,
            client_auth=settings.client_auth,  # type: ignore[arg-type]
            client_verifier=verifier,
            hrr_cookie=settings.hrr_cookie,
            max_handshake_message=settings.max_handshake_message,
            max_handshake_records=settings.max_handshake_records,
        )
    except ValueError as exc:
        raise ConfigError(f"secured: {exc}") from None

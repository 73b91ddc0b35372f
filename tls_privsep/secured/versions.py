"""Which TLS version a ClientHello gets: the one place it is decided.

RFC 8446 §4.2.1: a ClientHello with ``supported_versions`` is judged on that list alone
(``legacy_version`` is ignored); one without it offers ``legacy_version`` and everything below (RFC 5246
Appendix E.1), so 0x0303 or higher means TLS 1.2 and anything lower is refused with protocol_version.
RFC 7507: a client that says it is falling back (TLS_FALLBACK_SCSV) while we could give it more than it
offers gets inappropriate_fallback: something between us made its better attempt fail.
"""

from __future__ import annotations

from collections.abc import Collection

from tls_privsep.secured import messages as m
from tls_privsep.shared.errors import InappropriateFallback, ProtocolVersion

TLS12, TLS13 = m.TLS12, m.TLS13
VERSION_NAMES = {"1.2": TLS12, "1.3": TLS13}
TLS_FALLBACK_SCSV = 0x5600  # RFC 7507 §6
TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF  # RFC 5746 §3.3


def choose(ch: m.ClientHello, enabled: Collection[int]) -> int:
    """The version to speak (TLS12 or TLS13), or the alert (already the right one) to refuse with."""
    if ch.supported_versions is not None:
        offered = set(ch.supported_versions)
        client_max = max((v for v in offered if v in (TLS12, TLS13)), default=None)
        chosen = next((v for v in (TLS13, TLS12) if v in offered and v in enabled), None)
    else:
        client_max = TLS12 if ch.legacy_version >= TLS12 else None
        chosen = TLS12 if client_max is not None and TLS12 in enabled else None
    if chosen is None:
        names = "/".join(version_label(v) for v in sorted(ch.supported_versions or [ch.legacy_version]))
        ours = "/".join(version_label(v) for v in sorted(enabled))
        raise ProtocolVersion(f"no TLS version in common (client offers {names}, we serve {ours})")
    if TLS_FALLBACK_SCSV in ch.cipher_suites and client_max is not None and max(enabled) > client_max:
        best = version_label(max(enabled))
        raise InappropriateFallback(f"fallback to {version_label(client_max)}, and we serve {best}")
    return chosen


def version_label(version: int) -> str:
    """The name logs and the connection line use (OpenSSL's spelling, which operators grep for)."""
    return {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", TLS12: "TLSv1.2", TLS13: "TLSv1.3"}.get(
        version, f"{version:#06x}")

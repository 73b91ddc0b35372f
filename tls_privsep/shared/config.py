"""Configuration: one TOML file for the launcher and both daemons, command-line flags on top.

Pure: it names files but never opens a key. Every problem is a :class:`ConfigError` with one line
that says which setting is wrong and why (the daemons exit with 78, EX_CONFIG). See
docs/configuration.md for every key and its default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tls_privsep.shared.errors import ConfigError

SUITE_NAMES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
}
# TLS 1.2 suites by OpenSSL's names (what operators write) and IANA's; server preference is the list's order.
SUITE12_NAMES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B, "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C, "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9, "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
}
# "1.2" and "1.3"; ["1.3"] alone is Mozilla's "modern" profile, both (the default) its "intermediate".
VERSION_NAMES = {"1.2": 0x0303, "1.3": 0x0304}
# Names the settings accept (any case) for each group; the hybrids are draft-ietf-tls-ecdhe-mlkem's.
GROUP_NAMES = {"x25519": 0x001D, "secp256r1": 0x0017, "p-256": 0x0017,
               "x25519mlkem768": 0x11EC, "secp256r1mlkem768": 0x11EB}
# The one name each group goes by in logs and messages: IANA's (TLS Supported Groups registry).
GROUP_LABELS = {0x001D: "x25519", 0x0017: "secp256r1", 0x11EC: "X25519MLKEM768", 0x11EB: "SecP256r1MLKEM768"}
HYBRID_GROUPS = frozenset({0x11EC, 0x11EB})
# Where the hybrids stand in the choice of group (secured/groupchoice.py says what each does).
POST_QUANTUM = ("prefer", "require", "off")
CLIENT_AUTH = ("none", "optional", "required")
LOG_FORMATS = ("auto", "json", "console")
# RFC 8446 §5.5: AES-GCM keys are good for 2^24.5 full-size records; 2^24 is the conservative round
# number (ChaCha20-Poly1305 has no practical limit, but one setting for all suites keeps it simple).
AEAD_RECORD_LIMIT = 2**24
# The largest handshake message body the 24-bit length field can express (RFC 8446 §4).
_MAX_HANDSHAKE_BODY = 2**24 - 1


def shown(value: object, *, quote: bool = True) -> str:
    """Text from a file, a flag or a library, rendered for a ConfigError message.

    Quoted and escaped as ``repr`` does, so line breaks, control characters, lone surrogates and other
    unprintable characters appear as ``\\n``, ``\\x1e``, ``\\u2028`` and every message stays one
    printable line. With ``quote=False`` text that is already printable, non-empty and without
    surrounding spaces appears as it is (a key, a path), anything else still quoted.
    """
    text = str(value)
    if not quote and text and text.isprintable() and text == text.strip():
        return text
    return repr(text)


@dataclass(frozen=True)
class CertPair:
    cert: str
    key: str


MAX_WORKERS = 64


@dataclass(frozen=True)
class SecuredSettings:
    certificates: tuple[CertPair, ...] = ()
    versions: tuple[str, ...] = ("1.2", "1.3")
    cipher_suites: tuple[str, ...] = tuple(SUITE_NAMES)
    tls12_cipher_suites: tuple[str, ...] = tuple(list(SUITE12_NAMES)[:6])
    require_extended_master_secret: bool = True
    groups: tuple[str, ...] = ("X25519MLKEM768", "SecP256r1MLKEM768", "x25519", "secp256r1")
    post_quantum: str = "prefer"
    alpn: tuple[str, ...] = ()
    tickets: int = 2
    ticket_lifetime: int = 7200
    allow_psk_ke: bool = False
    client_ca: str | None = None
    client_auth: str = "none"
    hrr_cookie: bool = False
    socket: str = "/run/tls-privsep/secured.sock"
    socket_mode: int = 0o660
    allowed_uids: tuple[int, ...] = ()
    user: str | None = None
    max_handshakes_per_channel: int = 1024
    max_handshakes_total: int = 4096
    handshake_timeout: float = 10.0
    max_handshake_message: int = 131396  # the largest ClientHello there can be (record.MAX_CLIENT_HELLO)
    max_handshake_records: int = 64
    workers: int = 1


@dataclass(frozen=True)
class AppdSettings:
    listen: tuple[str, ...] = ("127.0.0.1:8443",)
    backend: str = "echo"
    secured_socket: str = "/run/tls-privsep/secured.sock"
    user: str | None = None
    secured_user: str | None = None  # who may answer on secured_socket (SO_PEERCRED); default: appd's own user
    startup_timeout: float = 10.0  # how long a starting appd waits for secured's channel before giving up
    idle_timeout: float = 300.0
    handshake_timeout: float = 10.0
    drain_timeout: float = 10.0
    max_connections: int = 10000
    proxy_protocol: bool = False
    key_update_after: int = AEAD_RECORD_LIMIT
    max_empty_records: int = 32
    max_key_updates: int = 32
    max_warning_alerts: int = 4
    workers: int = 1


@dataclass(frozen=True)
class Settings:
    secured: SecuredSettings = field(default_factory=SecuredSettings)
    appd: AppdSettings = field(default_factory=AppdSettings)
    runtime_dir: str = "/run/tls-privsep"
    log_format: str = "auto"
    log_level: str = "info"


def _check_type(where: str, value: Any, expected: Any) -> Any:
    """Coerce TOML values to a dataclass field's type, or say in one line what is wrong."""
    if expected in ("str", "str | None"):
        if value is None and expected == "str | None":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    if expected == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer")
        return value
    if expected == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        try:
            return float(value)
        except OverflowError:  # TOML integers are unbounded in tomllib; 10**400 is no float
            raise ConfigError(f"{where} is out of range") from None
    if expected == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if expected in ("tuple[str, ...]", "tuple[int, ...]"):
        item = str if "str" in expected else int
        if isinstance(value, item):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where} must be a list of {'strings' if item is str else 'integers'}")
        return tuple(value)
    if expected == "tuple[CertPair, ...]":
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of {{cert = ..., key = ...}} tables")
        pairs = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"cert", "key"}:
                raise ConfigError(f"{where}[{i}] must have exactly 'cert' and 'key'")
            pairs.append(CertPair(_check_type(f"{where}[{i}].cert", item["cert"], "str"),
                                  _check_type(f"{where}[{i}].key", item["key"], "str")))
        return tuple(pairs)
    raise AssertionError(f"unhandled type {expected}")  # pragma: no cover


def _section(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}.{shown(key, quote=False)}")
        kwargs[key] = _check_type(f"{where}.{key}", value, known[key].type)
    return cls(**kwargs)


def load(path: str | Path | None) -> Settings:
    """Read a TOML file (or the defaults when ``path`` is None) and validate it."""
    if path is None:
        return validate(Settings())
    p = Path(path)
    name = shown(p, quote=False)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{name}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{name}: {shown(exc.strerror, quote=False)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {shown(exc, quote=False)}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{name}: invalid TOML: nested too deeply") from None
    except ValueError as exc:  # tomllib lets int()'s digit limit through; open() refuses a NUL in the path
        raise ConfigError(f"{name}: {shown(str(exc).split(';')[0], quote=False)}") from None
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def from_dict(raw: dict[str, Any]) -> Settings:
    top = {k: v for k, v in raw.items() if k not in ("secured", "appd")}
    for name in ("secured", "appd"):
        if name in raw and not isinstance(raw[name], dict):
            raise ConfigError(f"[{name}] must be a table")
    settings = _section(Settings, top, "settings") if top else Settings()
    settings = replace(
        settings,
        secured=_section(SecuredSettings, raw.get("secured", {}), "secured"),
        appd=_section(AppdSettings, raw.get("appd", {}), "appd"),
    )
    return validate(settings)


def validate(s: Settings) -> Settings:
    """Checks that need no file access (the daemons check the files themselves)."""
    sec, app = s.secured, s.appd
    for name in sec.cipher_suites:
        if name not in SUITE_NAMES:
            raise ConfigError(f"secured.cipher_suites: unknown suite {shown(name)} (known: {', '.join(SUITE_NAMES)})")
    for name in sec.groups:
        if name.lower() not in GROUP_NAMES:
            known = ", ".join(GROUP_LABELS.values())
            raise ConfigError(f"secured.groups: unknown group {shown(name)} (known: {known})")
    if not sec.cipher_suites or not sec.groups:
        raise ConfigError("secured.cipher_suites and secured.groups must not be empty")
    if not sec.versions or len(set(sec.versions)) != len(sec.versions):
        raise ConfigError("secured.versions must list \"1.2\" and/or \"1.3\", each once")
    for name in sec.versions:
        if name not in VERSION_NAMES:
            raise ConfigError(f"secured.versions: unknown version {shown(name)} (known: \"1.2\", \"1.3\")")
    for name in sec.tls12_cipher_suites:
        if name not in SUITE12_NAMES:
            known = ", ".join(list(SUITE12_NAMES)[:6])
            raise ConfigError(f"secured.tls12_cipher_suites: unknown suite {shown(name)} (known: {known}, "
                              "or their IANA names; ECDHE with AES-GCM or ChaCha20-Poly1305 only: no CBC, RSA key "
                              "exchange or DHE)")
    if sec.post_quantum not in POST_QUANTUM:
        raise ConfigError(f"secured.post_quantum must be one of {', '.join(POST_QUANTUM)}")
    hybrid = [GROUP_NAMES[name.lower()] in HYBRID_GROUPS for name in sec.groups]
    if sec.post_quantum == "require" and not any(hybrid):
        raise ConfigError("secured.post_quantum = \"require\" needs a hybrid in secured.groups (X25519MLKEM768)")
    if sec.post_quantum == "off" and all(hybrid):
        raise ConfigError("secured.post_quantum = \"off\" leaves no group: secured.groups lists only hybrids")
    if sec.post_quantum == "require" and sec.allow_psk_ke:
        raise ConfigError("secured.post_quantum = \"require\" excludes secured.allow_psk_ke "
                          "(a psk_ke resumption has no key exchange, so no hybrid)")
    if not served_versions(sec):
        raise ConfigError(f"secured.versions = [\"1.2\"] cannot be served: {tls12_left_out(sec)}")
    if "1.2" in served_versions(sec) and not sec.tls12_cipher_suites:
        raise ConfigError("secured.tls12_cipher_suites must not be empty while secured.versions has \"1.2\"")
    if sec.client_auth not in CLIENT_AUTH:
        raise ConfigError(f"secured.client_auth must be one of {', '.join(CLIENT_AUTH)}")
    if sec.client_auth != "none" and not sec.client_ca:
        raise ConfigError("secured.client_auth needs secured.client_ca (a CA bundle)")
    if not 0 <= sec.tickets <= 16:
        raise ConfigError("secured.tickets must be 0 to 16")
    if not 1 <= sec.ticket_lifetime <= 604800:
        raise ConfigError("secured.ticket_lifetime must be 1 to 604800 seconds")
    for proto in sec.alpn:
        if not 1 <= len(proto.encode()) <= 255:
            raise ConfigError(f"secured.alpn: protocol name {shown(proto)} must be 1 to 255 bytes")
    if sec.max_handshakes_per_channel < 1:
        raise ConfigError("secured.max_handshakes_per_channel must be at least 1")
    if sec.max_handshakes_total < 1:
        raise ConfigError("secured.max_handshakes_total must be at least 1")
    if not 1024 <= sec.max_handshake_message <= _MAX_HANDSHAKE_BODY:
        raise ConfigError(f"secured.max_handshake_message must be 1024 to {_MAX_HANDSHAKE_BODY} bytes")
    if sec.max_handshake_records < 8:
        raise ConfigError("secured.max_handshake_records must be at least 8 (a full handshake may need that many)")
    if not 2 <= app.key_update_after <= AEAD_RECORD_LIMIT:
        raise ConfigError(f"appd.key_update_after must be 2 to {AEAD_RECORD_LIMIT} records (RFC 8446 §5.5)")
    if app.max_empty_records < 0:
        raise ConfigError("appd.max_empty_records must be 0 or more")
    if app.max_key_updates < 1:
        raise ConfigError("appd.max_key_updates must be at least 1 (every client may update its key)")
    if app.max_warning_alerts < 0:
        raise ConfigError("appd.max_warning_alerts must be 0 or more")
    for where, value in (("secured.handshake_timeout", sec.handshake_timeout),
                         ("appd.handshake_timeout", app.handshake_timeout),
                         ("appd.idle_timeout", app.idle_timeout),
                         ("appd.startup_timeout", app.startup_timeout)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where} must be a positive number of seconds")
    if not (math.isfinite(app.drain_timeout) and app.drain_timeout >= 0):
        raise ConfigError("appd.drain_timeout must be a number of seconds, 0 or more")
    if not 0 <= sec.socket_mode <= 0o777:
        raise ConfigError("secured.socket_mode must be a permission mode, 0 to 0o777")
    if app.max_connections < 1:
        raise ConfigError("appd.max_connections must be at least 1")
    for uid in sec.allowed_uids:
        if not 0 <= uid < 2**32 - 1:  # (uid_t)-1 is "no user"
            raise ConfigError(f"secured.allowed_uids: {uid} is not a uid (0 to 4294967294)")
    for where, value in (("secured.workers", sec.workers), ("appd.workers", app.workers)):
        if not 1 <= value <= MAX_WORKERS:
            raise ConfigError(f"{where} must be 1 to {MAX_WORKERS} processes")
    if not app.listen:
        raise ConfigError("appd.listen must name at least one address")
    for addr in app.listen:
        parse_address(addr, "appd.listen")
    if s.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    if s.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    return s


def tls12_left_out(sec: SecuredSettings) -> str | None:
    """Why TLS 1.2 is not served although ``versions`` lists it, or None: under ``post_quantum = "require"``
    every handshake must use a hybrid, and with only hybrids in ``groups`` there is no group for it; in both
    cases TLS 1.2 (which has no hybrid) is left out rather than the configuration refused."""
    if "1.2" not in sec.versions:
        return None
    if sec.post_quantum == "require":
        return 'post_quantum = "require" (TLS 1.2 has no hybrid key exchange)'
    if not any(GROUP_NAMES[name.lower()] not in HYBRID_GROUPS for name in sec.groups if name.lower() in GROUP_NAMES):
        return "secured.groups lists only hybrids, which are TLS 1.3 only"
    return None


def served_versions(sec: SecuredSettings) -> tuple[str, ...]:
    """The versions secured serves: ``versions``, less TLS 1.2 where :func:`tls12_left_out` says why."""
    if tls12_left_out(sec) is not None:
        return tuple(v for v in sec.versions if v != "1.2")
    return sec.versions


def group_label(group: int | None) -> str | None:
    """A group's name for a log line (None stays None; a group we do not know is shown in hex)."""
    if group is None:
        return None
    return GROUP_LABELS.get(group, f"{group:#06x}")


def parse_address(text: str, where: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{where}: {shown(text)} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        suggestion = shown(f"[{host}]:{port}")
        raise ConfigError(f"{where}: {shown(text)}: an IPv6 address needs brackets, {suggestion}")
    if not host or host != host.strip() or any(c.isspace() for c in host):
        raise ConfigError(f"{where}: {shown(text)} has no usable host")
    if not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise ConfigError(f"{where}: port in {shown(text)} is not a number")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ConfigError(f"{where}: port {number} out of range")
    return host, number

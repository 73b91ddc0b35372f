"""The TLS 1.3 key schedule (RFC 8446 §7.1-§7.3, §4.4.4, §4.6.1, §4.6.3).

Pure functions over bytes plus a small :class:`KeySchedule` that walks early -> handshake -> master
secret. HMAC comes from the stdlib (``hmac.digest`` runs in C), which is all HKDF needs.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from dataclasses import dataclass


class CipherSuite(enum.IntEnum):
    TLS_AES_128_GCM_SHA256 = 0x1301
    TLS_AES_256_GCM_SHA384 = 0x1302
    TLS_CHACHA20_POLY1305_SHA256 = 0x1303


@dataclass(frozen=True)
class SuiteParams:
    suite: CipherSuite
    hash_name: str  # hashlib / hmac name
    hash_len: int
    key_len: int
    iv_len: int = 12


SUITES: dict[int, SuiteParams] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: SuiteParams(CipherSuite.TLS_AES_128_GCM_SHA256, "sha256", 32, 16),
    CipherSuite.TLS_AES_256_GCM_SHA384: SuiteParams(CipherSuite.TLS_AES_256_GCM_SHA384, "sha384", 48, 32),
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: SuiteParams(
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256, "sha256", 32, 32
    ),
}


@functools.cache
def hash_len(hash_name: str) -> int:
    return hashlib.new(hash_name).digest_size


def transcript_hash(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(hash_name, data).digest()


@functools.cache
def _empty_hash(hash_name: str) -> bytes:
    return transcript_hash(hash_name, b"")


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869); an empty salt means HashLen zero bytes."""
    if not salt:
        salt = bytes(hash_len(hash_name))
    return hmac.digest(salt, ikm, hash_name)


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    if length <= hash_len(hash_name):  # every TLS 1.3 use: one block, one HMAC
        return hmac.digest(prk, info + b"\x01", hash_name)[:length]
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return out[:length]


@functools.lru_cache(maxsize=128)
def _label_head(label: bytes, length: int) -> bytes:
    """HkdfLabel up to the context: the labels are a handful of constants, so this is built once each."""
    full = b"tls13 " + label
    return length.to_bytes(2, "big") + bytes([len(full)]) + full


def hkdf_label(label: bytes, context: bytes, length: int) -> bytes:
    """The HkdfLabel structure of §7.1 (label gets the "tls13 " prefix)."""
    return _label_head(label, length) + bytes([len(context)]) + context


def hkdf_expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    return hkdf_expand(hash_name, secret, hkdf_label(label, context, length), length)


def derive_secret(hash_name: str, secret: bytes, label: bytes, transcript_digest: bytes) -> bytes:
    """Derive-Secret(Secret, Label, Messages), given the transcript's hash already computed."""
    return hkdf_expand_label(hash_name, secret, label, transcript_digest, hash_len(hash_name))


@functools.cache
def _no_psk_secrets(hash_name: str) -> tuple[bytes, bytes]:
    """(early_secret, its "derived" secret) without a PSK: constants of the hash, computed once."""
    early = hkdf_extract(hash_name, b"", bytes(hash_len(hash_name)))
    return early, derive_secret(hash_name, early, b"derived", _empty_hash(hash_name))


@functools.cache
def _key_iv_infos(key_len: int, iv_len: int) -> tuple[bytes, bytes]:
    """HKDF-Expand's one-block input (HkdfLabel, empty context, counter 1) for "key" and "iv"."""
    return _label_head(b"key", key_len) + b"\x00\x01", _label_head(b"iv", iv_len) + b"\x00\x01"


def traffic_key_iv(params: SuiteParams, secret: bytes) -> tuple[bytes, bytes]:
    """[sender]_write_key and [sender]_write_iv from a traffic secret (§7.3).

    Each is HKDF-Expand-Label with an empty context, and shorter than the hash: one HMAC block.
    Both HMACs are keyed with the same secret, so it is keyed once and copied for the second,
    which costs less than keying it twice (every record key setup pays this).
    """
    key_info, iv_info = _key_iv_infos(params.key_len, params.iv_len)
    key_mac = hmac.new(secret, digestmod=params.hash_name)
    iv_mac = key_mac.copy()
    key_mac.update(key_info)
    iv_mac.update(iv_info)
    return key_mac.digest()[: params.key_len], iv_mac.digest()[: params.iv_len]


def next_traffic_secret(hash_name: str, secret: bytes) -> bytes:
    """application_traffic_secret_N+1 (§7.2), used on KeyUpdate."""
    return hkdf_expand_label(hash_name, secret, b"traffic upd", b"", hash_len(hash_name))


def finished_key(hash_name: str, base_key: bytes) -> bytes:
    return hkdf_expand_label(hash_name, base_key, b"finished", b"", hash_len(hash_name))


def finished_verify_data(hash_name: str, base_key: bytes, transcript_digest: bytes) -> bytes:
    """verify_data of a Finished message (§4.4.4)."""
    return hmac.digest(finished_key(hash_name, base_key), transcript_digest, hash_name)


def resumption_psk(hash_name: str, resumption_master_secret: bytes, ticket_nonce: bytes) -> bytes:
    """The PSK a NewSessionTicket stands for (§4.6.1)."""
    return hkdf_expand_label(hash_name, resumption_master_secret, b"resumption", ticket_nonce, hash_len(hash_name))


class KeySchedule:
    """Walks the secrets of §7.1 for one connection.

    Secrets are plain ``bytes`` while in use here; the exported state copies what the record layer
    needs into ``bytearray`` so that secured can overwrite its copy after the export.
    """

    def __init__(self, hash_name: str, psk: bytes | None = None) -> None:
        self.hash_name = hash_name
        self.hash_len = hash_len(hash_name)
        self._empty_hash = _empty_hash(hash_name)
        # The early secret's "derived" secret, when it is a constant (no PSK); else derived on use.
        self._early_derived: bytes | None = None
        if psk is None:
            self.early_secret, self._early_derived = _no_psk_secrets(hash_name)
        else:
            self.early_secret = hkdf_extract(hash_name, b"", psk)
        self.handshake_secret = b""
        self.master_secret = b""

    def binder_key(self, external: bool = False) -> bytes:
        label = b"ext binder" if external else b"res binder"
        return derive_secret(self.hash_name, self.early_secret, label, self._empty_hash)

    def binder(self, truncated_transcript_digest: bytes, external: bool = False) -> bytes:
        return finished_verify_data(self.hash_name, self.binder_key(external), truncated_transcript_digest)

    def client_early_traffic_secret(self, ch_digest: bytes) -> bytes:
        return derive_secret(self.hash_name, self.early_secret, b"c e traffic", ch_digest)

    def derive_handshake(self, ecdhe: bytes | None) -> None:
        derived = self._early_derived or derive_secret(self.hash_name, self.early_secret, b"derived", self._empty_hash)
        self.handshake_secret = hkdf_extract(self.hash_name, derived, ecdhe if ecdhe else bytes(self.hash_len))

    def handshake_traffic_secrets(self, ch_sh_digest: bytes) -> tuple[bytes, bytes]:
        """(client, server) handshake traffic secrets."""
        c = derive_secret(self.hash_name, self.handshake_secret, b"c hs traffic", ch_sh_digest)
        s = derive_secret(self.hash_name, self.handshake_secret, b"s hs traffic", ch_sh_digest)
        return c, s

    def derive_master(self) -> None:
        derived = derive_secret(self.hash_name, self.handshake_secret, b"derived", self._empty_hash)
        self.master_secret = hkdf_extract(self.hash_name, derived, bytes(self.hash_len))

    def application_traffic_secrets(self, through_server_finished_digest: bytes) -> tuple[bytes, bytes]:
        """(client, server) application_traffic_secret_0."""
        h, ms = self.hash_name, self.master_secret
        return (
            derive_secret(h, ms, b"c ap traffic", through_server_finished_digest),
            derive_secret(h, ms, b"s ap traffic", through_server_finished_digest),
        )

    def exporter_master_secret(self, through_server_finished_digest: bytes) -> bytes:
        return derive_secret(self.hash_name, self.master_secret, b"exp master", through_server_finished_digest)

    def resumption_master_secret(self, through_client_finished_digest: bytes) -> bytes:
        return derive_secret(self.hash_name, self.master_secret, b"res master", through_client_finished_digest)

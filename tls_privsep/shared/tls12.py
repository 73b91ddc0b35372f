"""TLS 1.2 cipher suites and key derivation: the PRF (RFC 5246 §5), the master secret (§8.1, RFC 7627 §4),
the key block (§6.3) and Finished (§7.4.9).

Only AEAD suites with ECDHE (Mozilla's intermediate profile): AES-GCM (RFC 5288, 5289) and
ChaCha20-Poly1305 (RFC 7905). With an AEAD there are no MAC keys, so the key block is the two write
keys and the two implicit IVs: a 4-byte salt for AES-GCM (the other 8 nonce bytes travel with each
record), 12 bytes for ChaCha20-Poly1305 (XORed with the sequence number, as in TLS 1.3).

Both daemons use this module: secured derives, appd's record protection only reads :data:`SUITES12`.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

from tls_privsep.shared.state import TLS12 as TLS12

VERIFY_DATA_LEN = 12  # §7.4.9: every suite here keeps the default
MASTER_SECRET_LEN = 48


class Suite12(enum.IntEnum):
    ECDHE_ECDSA_AES128_GCM_SHA256 = 0xC02B
    ECDHE_RSA_AES128_GCM_SHA256 = 0xC02F
    ECDHE_ECDSA_AES256_GCM_SHA384 = 0xC02C
    ECDHE_RSA_AES256_GCM_SHA384 = 0xC030
    ECDHE_ECDSA_CHACHA20_POLY1305 = 0xCCA9
    ECDHE_RSA_CHACHA20_POLY1305 = 0xCCA8


@dataclass(frozen=True, slots=True)
class Suite12Params:
    suite: Suite12
    name: str  # OpenSSL's name, as operators write it
    auth: str  # "ECDSA" or "RSA": which certificate key the suite's ServerKeyExchange is signed with
    chacha: bool  # ChaCha20-Poly1305 (RFC 7905) rather than AES-GCM (RFC 5288)
    key_len: int
    hash_name: str  # the PRF's hash, and the transcript hash for Finished and EMS

    @property
    def fixed_iv_len(self) -> int:
        """The implicit IV in the key block: the GCM salt, or ChaCha's whole 12-byte IV."""
        return 12 if self.chacha else 4

    @property
    def key_material_len(self) -> int:
        """One direction's write key followed by its implicit IV, as a TrafficState carries it."""
        return self.key_len + self.fixed_iv_len


_S = Suite12
SUITES12: dict[int, Suite12Params] = {
    _S.ECDHE_ECDSA_AES128_GCM_SHA256: Suite12Params(_S.ECDHE_ECDSA_AES128_GCM_SHA256,
                                                    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDSA", False, 16, "sha256"),
    _S.ECDHE_RSA_AES128_GCM_SHA256: Suite12Params(_S.ECDHE_RSA_AES128_GCM_SHA256,
                                                  "ECDHE-RSA-AES128-GCM-SHA256", "RSA", False, 16, "sha256"),
    _S.ECDHE_ECDSA_AES256_GCM_SHA384: Suite12Params(_S.ECDHE_ECDSA_AES256_GCM_SHA384,
                                                    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDSA", False, 32, "sha384"),
    _S.ECDHE_RSA_AES256_GCM_SHA384: Suite12Params(_S.ECDHE_RSA_AES256_GCM_SHA384,
                                                  "ECDHE-RSA-AES256-GCM-SHA384", "RSA", False, 32, "sha384"),
    _S.ECDHE_ECDSA_CHACHA20_POLY1305: Suite12Params(_S.ECDHE_ECDSA_CHACHA20_POLY1305,
                                                    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDSA", True, 32, "sha256"),
    _S.ECDHE_RSA_CHACHA20_POLY1305: Suite12Params(_S.ECDHE_RSA_CHACHA20_POLY1305,
                                                  "ECDHE-RSA-CHACHA20-POLY1305", "RSA", True, 32, "sha256"),
}
del _S
# Mozilla intermediate's order: ECDSA before RSA within a strength, AES-128 first, ChaCha last (it only
# matters where the client prefers it, and the client's order is not ours to follow).
DEFAULT_SUITES12: tuple[int, ...] = (0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8)
SUITE12_BY_NAME: dict[str, int] = {p.name: code for code, p in SUITES12.items()}


def prf(hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """PRF(secret, label, seed) = P_hash(secret, label + seed), cut to ``length`` (RFC 5246 §5)."""
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)  # A(i) = HMAC(secret, A(i-1))
        out += hmac.digest(secret, a + seed, hash_name)
    return bytes(out[:length])


def master_secret(hash_name: str, pre_master: bytes, *, client_random: bytes, server_random: bytes,
                  session_hash: bytes | None) -> bytes:
    """The 48-byte master secret: RFC 7627's extended form when ``session_hash`` is given (the transcript
    hash through ClientKeyExchange), else RFC 5246 §8.1's from the two randoms."""
    if session_hash is not None:
        return prf(hash_name, pre_master, b"extended master secret", session_hash, MASTER_SECRET_LEN)
    return prf(hash_name, pre_master, b"master secret", client_random + server_random, MASTER_SECRET_LEN)


def key_block(params: Suite12Params, master: bytes, *, client_random: bytes,
              server_random: bytes) -> tuple[bytes, bytes]:
    """(client write key ‖ client IV, server write key ‖ server IV) from the key block (§6.3).

    The block is client_write_key, server_write_key, client_write_IV, server_write_IV (no MAC keys
    with an AEAD); note the seed is server_random first, the other way round from the master secret.
    """
    k, iv = params.key_len, params.fixed_iv_len
    block = prf(params.hash_name, master, b"key expansion", server_random + client_random, 2 * (k + iv))
    client_key, server_key = block[:k], block[k : 2 * k]
    client_iv, server_iv = block[2 * k : 2 * k + iv], block[2 * k + iv :]
    return client_key + client_iv, server_key + server_iv


def finished_verify_data(hash_name: str, master: bytes, transcript_digest: bytes, *, client: bool) -> bytes:
    """verify_data = PRF(master, finished_label, Hash(handshake_messages))[0..11] (§7.4.9)."""
    label = b"client finished" if client else b"server finished"
    return prf(hash_name, master, label, transcript_digest, VERIFY_DATA_LEN)

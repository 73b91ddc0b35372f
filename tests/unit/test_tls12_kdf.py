"""shared.tls12 against published TLS 1.2 numbers (the PRF, the master secret plain and RFC 7627, the key
expansion, Finished), each with its source; then against tlslite-ng on random inputs, for what no source
publishes (the SHA-384 key block) and for the EMS and Finished paths at large.

Only the published numbers are taken from the sources, no code."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tlslite.handshakehashes import HandshakeHashes
from tlslite.mathtls import calc_key

from tls_privsep.shared import tls12

h = bytes.fromhex


# -- 1. The PRF ---------------------------------------------------------------------------------------------
# https://www.ietf.org/mail-archive/web/tls/current/msg03416.html (TLS WG list, "test vectors for TLS 1.2 PRF");
# the same numbers, with that URL, are in BearSSL's test/test_crypto.c (do_KAT_PRF).
@pytest.mark.parametrize(("hash_name", "secret", "seed", "out"), [
    ("sha256", "9bbe436ba940f017b17652849a71db35", "a0ba9f936cda311827a6f796ffd5198c",
     "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af"
     "0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66"),
    ("sha384", "b80b733d6ceefcdc71566ea48e5567df", "cd665cf6a8447dd6ff8b27555edb7465",
     "7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cde9ca0faa60be9fe34f82b1233c9146a0"
     "e534cb400fed2700884f9dc236f80edd8bfa961144c9e8d792eca722a7b32fc3d416d473ebc2c5fd4abfdad05d9184259b"
     "5bf8cd4d90fa0d31e2dec479e4f1a26066f2eea9a69236a3e52655c9e9aee691c8f3a26854308d5eaa3be85e0990703d73e56f"),
])
def test_prf_ietf_vectors(hash_name: str, secret: str, seed: str, out: str) -> None:
    want = h(out)
    assert tls12.prf(hash_name, h(secret), b"test label", h(seed), len(want)) == want
    assert tls12.prf(hash_name, h(secret), b"test label", h(seed), 17) == want[:17]  # cut mid-block


# -- 2. A whole connection: "The Illustrated TLS 1.2 Connection" ----------------------------------------------
# https://tls12.xargs.org/#client-encryption-keys-calculation (source: github.com/syncsynchalt/illustrated-tls12,
# site/index.html; the master secret and keys are also asserted, citing that URL, by other public test suites).
# Suite ECDHE-RSA-AES128-CBC-SHA (0xC013): its PRF is P_SHA256, like every TLS 1.2 suite without SHA-384.
# Published: both randoms, the X25519 PreMasterSecret, the MasterSecret, the six key-block fields, and for
# each Finished the SHA-256 transcript hash and its verify_data.
X_CLIENT_RANDOM = bytes(range(0x00, 0x20))  # 00 01 .. 1f
X_SERVER_RANDOM = bytes(range(0x70, 0x90))  # 70 71 .. 8f
X_PRE_MASTER = h("df4a291baa1eb7cfa6934b29b474baad2697e29f1f920dcc77c8a0a088447624")
X_MASTER = h("916abf9da55973e13614ae0a3f5d3f37b023ba129aee02cc9134338127cd7049781c8e19fc1eb2a7387ac06ae237344c")
X_KEY_EXPANSION = h(  # RFC 5246 §6.3 order, as published field by field:
    "1b7d117c7d5f690bc263cae8ef60af0f1878acc2"  # client MAC key (20)   bytes   0-19
    "2ad8bdd8c601a617126f63540eb20906f781fad2"  # server MAC key (20)           20-39
    "f656d037b173ef3e11169f27231a84b6"  # client write key (16)                 40-55
    "752a18e7a9fcb7cbcdd8f98dd8f769eb"  # server write key (16)                 56-71
    "a0d2550c9238eebfef5c32251abb67d6"  # client write IV (16)                  72-87
    "434528db4937d540d393135e06a11bb8"  # server write IV (16)                  88-103
)


def test_xargs_master_secret() -> None:
    got = tls12.master_secret("sha256", X_PRE_MASTER, client_random=X_CLIENT_RANDOM,
                              server_random=X_SERVER_RANDOM, session_hash=None)
    assert got == X_MASTER


def test_xargs_key_expansion() -> None:
    got = tls12.prf("sha256", X_MASTER, b"key expansion", X_SERVER_RANDOM + X_CLIENT_RANDOM, len(X_KEY_EXPANSION))
    assert got == X_KEY_EXPANSION


# Derived, not published: an AEAD suite reads the same PRF stream without MAC keys (RFC 5288 §3, RFC 7905 §2):
# client key, server key, client IV, server IV. Both SHA-256 AEAD layouts fit inside the 104 published bytes,
# so the expected values are slices of the published expansion at the RFC offsets written out here.
K = X_KEY_EXPANSION


@pytest.mark.parametrize(("suite", "client", "server"), [
    # AES-128-GCM: 16-byte keys, 4-byte implicit salts: bytes 0-15, 16-31, 32-35, 36-39
    (tls12.Suite12.ECDHE_RSA_AES128_GCM_SHA256, K[0:16] + K[32:36], K[16:32] + K[36:40]),
    (tls12.Suite12.ECDHE_ECDSA_AES128_GCM_SHA256, K[0:16] + K[32:36], K[16:32] + K[36:40]),
    # ChaCha20-Poly1305: 32-byte keys, 12-byte IVs: bytes 0-31, 32-63, 64-75, 76-87
    (tls12.Suite12.ECDHE_RSA_CHACHA20_POLY1305, K[0:32] + K[64:76], K[32:64] + K[76:88]),
    (tls12.Suite12.ECDHE_ECDSA_CHACHA20_POLY1305, K[0:32] + K[64:76], K[32:64] + K[76:88]),
])
def test_xargs_key_block_aead_layout(suite: int, client: bytes, server: bytes) -> None:
    got = tls12.key_block(tls12.SUITES12[suite], X_MASTER, client_random=X_CLIENT_RANDOM,
                          server_random=X_SERVER_RANDOM)
    assert got == (client, server)


@pytest.mark.parametrize(("client", "transcript_hash", "verify_data"), [
    (True, "061dda04b3c2217ff73bd79b9cf88a2bb6ec505404aac8722db03ef417b54cb4", "cf919626f1360c536aaad73a"),
    (False, "b2017ba28d0e27f03ae327456b6ff00b4d5bbf0ef7cda83ce1029b521c3e7c35", "844d3c10746dd722f92f0c7e"),
])
def test_xargs_finished(client: bool, transcript_hash: str, verify_data: str) -> None:
    assert tls12.finished_verify_data("sha256", X_MASTER, h(transcript_hash), client=client) == h(verify_data)


# -- 3. RFC 7627 extended master secret ----------------------------------------------------------------------
# Go's FIPS 140 self-test of its TLS 1.2 EMS, "TLSv1.2-SHA2-256":
# https://github.com/golang/go/blob/master/src/crypto/internal/fips140/tls12/cast.go
# (pre-master 01..10, "transcript" 11..20 used as the session_hash itself, SHA-256).
def test_ems_go_fips_cast() -> None:
    got = tls12.master_secret("sha256", bytes(range(0x01, 0x11)), client_random=b"", server_random=b"",
                              session_hash=bytes(range(0x11, 0x21)))
    assert got == h("8c3eeda71c1b4cc0a0449075a88ebc7c5e1c4b1e4fe3c106ebdcc05dc0c8ecf3"
                    "e2b9d1035eb2605d12684f49dfa99dcc")


# tlslite-ng's own unit tests, https://github.com/tlsfuzzer/tlslite-ng/blob/master/unit_tests/test_tlslite_mathtls.py
# (TestCalcMasterSecret, TestCalcExtendedMasterSecret, TestCalcFinishedInTLS1_2WithSHA256/SHA384): values that
# tlslite-ng computed and pinned, so a second implementation's answer rather than an independent derivation.
# Master secrets: pre-master 48 zero bytes; EMS over handshake messages of 48 zero bytes; plain over zero randoms.
@pytest.mark.parametrize(("hash_name", "want"), [
    ("sha256", "03c9335978cb6a53456d7a2a0bc3c03447f3e37bee138bacd7b7e6ba5986d5f26f3f8fc6f2191d06e04eb5ca4a58e81d"),
    ("sha384", "d6ed7d4bfb6fb2dba4eea10f8f072a84772fbf5fbdc1555e93cfe8ca82b75f42a34fd9568612fd082492274caec04001"),
])
def test_ems_tlslite_vectors(hash_name: str, want: str) -> None:
    session_hash = hashlib.new(hash_name, bytes(48)).digest()
    got = tls12.master_secret(hash_name, bytes(48), client_random=b"", server_random=b"", session_hash=session_hash)
    assert got == h(want)


def test_master_secret_tlslite_vector() -> None:
    got = tls12.master_secret("sha256", bytes(48), client_random=bytes(32), server_random=bytes(32),
                              session_hash=None)
    assert got == h("49cfaee55b8692d3bb6dd6ee6b536f2f17afbc8418094763bcb5bed6b005adf888d060e48c5eb2266c73cb1a3d2d4b68")


# Finished: master secret 48 zero bytes, handshake messages 10 zero bytes.
@pytest.mark.parametrize(("hash_name", "client", "want"), [
    ("sha256", True, "8e8c7e036c5524539f7a5ccc"),
    ("sha256", False, "a8f1df38737ced555c5a3d55"),
    ("sha384", True, "5542ee7186a5884c20048933"),
    ("sha384", False, "02537413a8e6b6a21c34ffc5"),
])
def test_finished_tlslite_vectors(hash_name: str, client: bool, want: str) -> None:
    digest = hashlib.new(hash_name, bytes(10)).digest()
    assert tls12.finished_verify_data(hash_name, bytes(48), digest, client=client) == h(want)


# -- 4. Cross-implementation checks against tlslite-ng (not KATs) --------------------------------------------
# tlslite.mathtls.calc_key picks P_SHA384 from the suite code alone, so these also check SUITES12's hash choice.
# (key length, implicit IV length) per RFC 5288 §3 and RFC 7905 §2, written out rather than read from SUITES12.
LAYOUT = {0xC02B: (16, 4), 0xC02F: (16, 4), 0xC02C: (32, 4), 0xC030: (32, 4), 0xCCA9: (32, 12), 0xCCA8: (32, 12)}
SUITE = st.sampled_from(sorted(tls12.SUITES12))
SETTINGS = settings(max_examples=60, deadline=None)


def _hashes(transcript: bytes) -> HandshakeHashes:
    hh = HandshakeHashes()
    hh.update(bytearray(transcript))
    return hh


def test_layout_table_covers_suites() -> None:
    assert set(LAYOUT) == set(tls12.SUITES12)


@SETTINGS
@given(suite=SUITE, pre_master=st.binary(min_size=1, max_size=100), transcript=st.binary(max_size=600))
def test_ems_matches_tlslite(suite: int, pre_master: bytes, transcript: bytes) -> None:
    hash_name = tls12.SUITES12[suite].hash_name
    ours = tls12.master_secret(hash_name, pre_master, client_random=b"", server_random=b"",
                               session_hash=hashlib.new(hash_name, transcript).digest())
    theirs = calc_key((3, 3), bytearray(pre_master), suite, b"extended master secret",
                      handshake_hashes=_hashes(transcript), output_length=48)
    assert ours == bytes(theirs)


@SETTINGS
@given(suite=SUITE, pre_master=st.binary(min_size=1, max_size=100),
       randoms=st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)))
def test_master_secret_and_key_block_match_tlslite(suite: int, pre_master: bytes,
                                                   randoms: tuple[bytes, bytes]) -> None:
    cr, sr = randoms
    params = tls12.SUITES12[suite]
    master = tls12.master_secret(params.hash_name, pre_master, client_random=cr, server_random=sr,
                                 session_hash=None)
    assert master == bytes(calc_key((3, 3), bytearray(pre_master), suite, b"master secret",
                                    client_random=bytearray(cr), server_random=bytearray(sr), output_length=48))
    k, iv = LAYOUT[suite]
    block = bytes(calc_key((3, 3), bytearray(master), suite, b"key expansion", client_random=bytearray(cr),
                           server_random=bytearray(sr), output_length=2 * (k + iv)))
    want = (block[:k] + block[2 * k : 2 * k + iv], block[k : 2 * k] + block[2 * k + iv :])
    assert tls12.key_block(params, master, client_random=cr, server_random=sr) == want


@SETTINGS
@given(suite=SUITE, master=st.binary(min_size=48, max_size=48), transcript=st.binary(max_size=600),
       client=st.booleans())
def test_finished_matches_tlslite(suite: int, master: bytes, transcript: bytes, client: bool) -> None:
    hash_name = tls12.SUITES12[suite].hash_name
    ours = tls12.finished_verify_data(hash_name, master, hashlib.new(hash_name, transcript).digest(), client=client)
    label = b"client finished" if client else b"server finished"
    theirs = calc_key((3, 3), bytearray(master), suite, label, handshake_hashes=_hashes(transcript), output_length=12)
    assert ours == bytes(theirs)

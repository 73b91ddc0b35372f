"""Key schedule against every secret, key and IV of RFC 8448 §3 (and the §4 binder), HKDF against RFC 5869,
and the cached no-PSK secrets against the general computation."""

import pytest

from tests.vectors import section
from tls_privsep.shared import keyschedule as ks

S = ks.SUITES[ks.CipherSuite.TLS_AES_128_GCM_SHA256]


def test_simple_1rtt_schedule() -> None:
    v = section("simple_1rtt")
    sched = ks.KeySchedule("sha256")
    assert sched.early_secret == v["early_secret"]
    sched.derive_handshake(v["ecdhe_shared_secret"])
    assert sched.handshake_secret == v["handshake_secret"]
    c_hs, s_hs = sched.handshake_traffic_secrets(v["transcript_hash_server_hello"])
    assert c_hs == v["client_handshake_traffic_secret"]
    assert s_hs == v["server_handshake_traffic_secret"]
    assert ks.traffic_key_iv(S, s_hs) == (v["server_handshake_key"], v["server_handshake_iv"])
    assert ks.traffic_key_iv(S, c_hs) == (v["client_handshake_key"], v["client_handshake_iv"])
    assert ks.finished_key("sha256", s_hs) == v["server_finished_key"]
    sched.derive_master()
    assert sched.master_secret == v["master_secret"]
    c_ap, s_ap = sched.application_traffic_secrets(v["transcript_hash_server_finished"])
    assert c_ap == v["client_application_traffic_secret_0"]
    assert s_ap == v["server_application_traffic_secret_0"]
    assert ks.traffic_key_iv(S, s_ap) == (v["server_application_key"], v["server_application_iv"])
    assert sched.exporter_master_secret(v["transcript_hash_server_finished"]) == v["exporter_master_secret"]
    rms = sched.resumption_master_secret(v["transcript_hash_client_finished"])
    assert rms == v["resumption_master_secret"]
    assert ks.resumption_psk("sha256", rms, v["ticket_nonce"]) == v["resumption_psk"]


def test_resumed_binder() -> None:
    v = section("resumed_0rtt")
    sched = ks.KeySchedule("sha256", psk=v["psk"])
    assert sched.early_secret == v["early_secret"]
    assert sched.binder_key() == v["binder_key"]
    assert sched.binder(v["binder_transcript_hash"]) == v["psk_binder"]


def test_next_generation_secret_changes_keys() -> None:
    s0 = bytes(range(32))
    s1 = ks.next_traffic_secret("sha256", s0)
    assert s1 != s0 and len(s1) == 32
    assert ks.traffic_key_iv(S, s1) != ks.traffic_key_iv(S, s0)


def test_sha384_lengths() -> None:
    p = ks.SUITES[ks.CipherSuite.TLS_AES_256_GCM_SHA384]
    sched = ks.KeySchedule("sha384")
    assert len(sched.early_secret) == 48
    key, iv = ks.traffic_key_iv(p, bytes(48))
    assert len(key) == 32 and len(iv) == 12


def test_traffic_key_iv_is_expand_label_for_every_suite() -> None:
    for params in ks.SUITES.values():
        assert max(params.key_len, params.iv_len) <= params.hash_len  # one HMAC block each
        for secret in (bytes(params.hash_len), bytes(range(params.hash_len)), bytes([0xFF]) * params.hash_len):
            expected = (
                ks.hkdf_expand_label(params.hash_name, secret, b"key", b"", params.key_len),
                ks.hkdf_expand_label(params.hash_name, secret, b"iv", b"", params.iv_len),
            )
            assert ks.traffic_key_iv(params, secret) == expected


@pytest.mark.parametrize("hash_name", ["sha256", "sha384"])
def test_no_psk_constants_equal_an_all_zero_psk(hash_name: str) -> None:
    """Without a PSK the early secrets come from a cache; an explicit all-zero PSK takes the long way."""
    zero_psk = bytes(ks.hash_len(hash_name))
    cached, computed = ks.KeySchedule(hash_name), ks.KeySchedule(hash_name, psk=zero_psk)
    assert cached.early_secret == computed.early_secret
    ecdhe = bytes(range(32))
    cached.derive_handshake(ecdhe)
    computed.derive_handshake(ecdhe)
    assert cached.handshake_secret == computed.handshake_secret


def test_hkdf_expand_over_one_block_is_rfc5869() -> None:
    """RFC 5869 A.1: 42 bytes of output take two HMAC blocks (TLS 1.3 itself never needs more than one)."""
    prk = ks.hkdf_extract("sha256", bytes(range(13)), b"\x0b" * 22)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = ks.hkdf_expand("sha256", prk, bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )

"""Key schedule against every secret, key and IV of RFC 8448 §3 (and the §4 binder)."""

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

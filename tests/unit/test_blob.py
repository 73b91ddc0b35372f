"""shared.blob: sealed one-time TrafficState blobs and the strict CBOR gate in front of cbor2."""

from __future__ import annotations

import enum
import os
import subprocess
import types
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from tls_privsep.shared import blob as B
from tls_privsep.shared.errors import BlobError
from tls_privsep.shared.keyschedule import SUITES, traffic_key_iv
from tls_privsep.shared.state import TLS12, TLS13, TrafficState
from tls_privsep.shared.tls12 import SUITES12

KEY = bytes(range(32))
CH = bytes(range(100, 116))
SETTINGS = settings(max_examples=200, deadline=None)
SUITES13_IDS = sorted(SUITES)
SUITES12_IDS = sorted(SUITES12)
# The release before blob version 2 (and channel version 3): its opener must refuse what this one seals.
PREVIOUS_RELEASE = "fd6132d"


def make_state(suite: int = 0x1301, **kw: object) -> TrafficState:
    """A state for ``suite``: TLS 1.3 traffic secrets, or TLS 1.2 key material for a TLS 1.2 suite."""
    tls12 = suite in SUITES12
    n = SUITES12[suite].key_material_len if tls12 else SUITES[suite].hash_len
    fields: dict[str, object] = {
        "version": TLS12 if tls12 else TLS13,
        "suite": suite,
        "read_secret": bytearray(os.urandom(n)),
        "write_secret": bytearray(os.urandom(n)),
        "read_seq": 1,
        "write_seq": 3,
        "records_protected": 4,
        "alpn": "h2",
        "sni": "example.com",
        "peer_certs": [b"\x30\x82cert-1", b"\x30\x82cert-2"],
        "psk_resumed": True,
        "created": 1_700_000_000,
    }
    fields.update(kw)
    return TrafficState(**fields)  # type: ignore[arg-type]


def pair() -> tuple[B.BlobSealer, B.BlobOpener]:
    return B.BlobSealer(KEY, CH), B.BlobOpener(KEY, CH)


def same(a: TrafficState, b: TrafficState) -> bool:
    names = ["suite", "read_seq", "write_seq", "records_protected", "alpn", "sni", "peer_certs"]
    names += ["psk_resumed", "created", "version", "read_secret", "write_secret"]
    return all(getattr(a, n) == getattr(b, n) for n in names)


def outer(blob: bytes) -> dict[str, object]:
    d = cbor2.loads(blob)
    assert isinstance(d, dict)
    return d


def refused(opener: B.BlobOpener, blob: bytes, conn: int = 7) -> str:
    last = opener.last
    with pytest.raises(BlobError) as ei:
        opener.open(blob, conn)
    assert opener.last == last, "a refusal must not advance the one-time counter"
    return ei.value.reason


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("suite", [0x1301, 0x1302, 0x1303])
def test_round_trip_every_suite(suite: int) -> None:
    sealer, opener = pair()
    state = make_state(suite)
    expect = make_state(suite, read_secret=bytearray(state.read_secret), write_secret=bytearray(state.write_secret))
    blob = sealer.seal(state, conn=7)
    state.wipe()  # secured destroys its copy right after sealing
    got = opener.open(blob, conn=7)
    assert same(got, expect)
    assert len(got.read_secret) == SUITES[suite].hash_len
    assert isinstance(got.read_secret, bytearray) and isinstance(got.write_secret, bytearray)
    assert got.read_secret != bytes(len(got.read_secret)), "wiping the original must not touch the import"
    params = SUITES[suite]
    for a, b in ((got.read_secret, expect.read_secret), (got.write_secret, expect.write_secret)):
        assert traffic_key_iv(params, bytes(a)) == traffic_key_iv(params, bytes(b))


@pytest.mark.parametrize("suite", SUITES12_IDS)
def test_round_trip_every_tls12_suite(suite: int) -> None:
    sealer, opener = pair()
    state = make_state(suite)
    assert state.version == TLS12
    expect = make_state(suite, read_secret=bytearray(state.read_secret), write_secret=bytearray(state.write_secret))
    blob = sealer.seal(state, conn=7)
    state.wipe()
    got = opener.open(blob, conn=7)
    assert same(got, expect) and got.version == TLS12
    assert len(got.read_secret) == len(got.write_secret) == SUITES12[suite].key_material_len
    assert isinstance(got.read_secret, bytearray) and got.read_secret != bytes(len(got.read_secret))


@pytest.mark.parametrize(("suite", "length"), [(0xC02F, 16), (0xC02F, 36), (0xC030, 20), (0xC02C, 48),
                                               (0xCCA8, 32), (0xCCA9, 36), (0xCCA8, 0)])
def test_tls12_key_material_of_the_wrong_length(suite: int, length: int) -> None:
    sealer, opener = pair()
    state = make_state(suite, write_secret=bytearray(length))
    with pytest.raises(BlobError) as ei:
        sealer.seal(state, 1)
    assert ei.value.reason == "bad_secret_length"
    assert f"{SUITES12[suite].key_material_len}" in str(ei.value) and "key and IV" in str(ei.value)
    inner = good_inner(version=TLS12, suite=suite, read_secret=bytes(length),
                       write_secret=bytes(SUITES12[suite].key_material_len))
    assert refused(opener, seal_raw_inner(cbor2.dumps(inner, canonical=True))) == "bad_secret_length"


@pytest.mark.parametrize("suite", [0xC027, 0xC013, 0xCCAA, 0x009C, 0x1301, 0x0000])
def test_tls12_unknown_suite(suite: int) -> None:
    """CBC, DHE, RSA key exchange, a TLS 1.3 suite: none is a suite of ours for TLS 1.2."""
    sealer, opener = pair()
    with pytest.raises(BlobError) as ei:
        state = make_state(0xC02F)
        state.suite = suite
        sealer.seal(state, 1)
    assert ei.value.reason == "unknown_suite" and "TLS 1.2" in str(ei.value)
    inner = good_inner(version=TLS12, suite=suite, read_secret=b"r" * 20, write_secret=b"w" * 20)
    assert refused(opener, seal_raw_inner(cbor2.dumps(inner, canonical=True))) == "unknown_suite"


@pytest.mark.parametrize(("version", "suite"), [(TLS12, 0x1301), (TLS12, 0x1303), (TLS13, 0xC02B), (TLS13, 0xCCA9)])
def test_a_suite_of_the_other_version(version: int, suite: int) -> None:
    """The schema is a choice on the version: a suite is judged against its version's table only."""
    sealer, opener = pair()
    other = make_state(suite)
    with pytest.raises(BlobError) as ei:
        sealer.seal(make_state(suite, version=version, read_secret=other.read_secret,
                               write_secret=other.write_secret), 1)
    assert ei.value.reason == "unknown_suite"
    inner = good_inner(version=version, suite=suite, read_secret=bytes(other.read_secret),
                       write_secret=bytes(other.write_secret))
    assert refused(opener, seal_raw_inner(cbor2.dumps(inner, canonical=True))) == "unknown_suite"


def test_tls12_lengths_are_not_tls13_lengths() -> None:
    """32-byte secrets fit a TLS 1.3 SHA-256 suite, never a TLS 1.2 one (20, 36 or 44 bytes)."""
    assert {p.key_material_len for p in SUITES12.values()} == {20, 36, 44}
    sealer, _ = pair()
    with pytest.raises(BlobError) as ei:
        sealer.seal(make_state(0xC02B, read_secret=bytearray(32), write_secret=bytearray(32)), 1)
    assert ei.value.reason == "bad_secret_length"


def _previous_release_blob_module() -> types.ModuleType:
    """The blob module as the previous release shipped it, loaded beside today's (same errors, CBOR, state)."""
    root = Path(__file__).resolve().parents[2]
    try:
        source = subprocess.run(["git", "show", f"{PREVIOUS_RELEASE}:tls_privsep/shared/blob.py"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover - an export without history
        pytest.skip(f"no git history here: {exc}")
    module = types.ModuleType("previous_release_blob")
    exec(compile(source, f"{PREVIOUS_RELEASE}:tls_privsep/shared/blob.py", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("suite", [0x1301, 0xC02F])
def test_the_previous_release_refuses_a_new_blob_clearly(suite: int) -> None:
    """An appd left at the previous release names what it was given (the channel hello refuses the pair first)."""
    old = _previous_release_blob_module()
    assert old.BLOB_VERSION == 1
    blob = B.BlobSealer(KEY, CH).seal(make_state(suite), 7)
    opener = old.BlobOpener(KEY, CH)
    with pytest.raises(BlobError) as ei:
        opener.open(blob, 7)
    assert ei.value.reason == "unsupported_version" and "v=2" in str(ei.value)
    assert opener.last == 0


def test_a_previous_release_blob_is_refused_clearly() -> None:
    old = _previous_release_blob_module()
    blob = old.BlobSealer(KEY, CH).seal(make_state(0x1301), 7)
    assert refused(B.BlobOpener(KEY, CH), blob) == "unsupported_version"


def test_round_trip_nulls_and_empty_certs() -> None:
    sealer, opener = pair()
    state = make_state(alpn=None, sni=None, peer_certs=[], psk_resumed=False, read_seq=0, created=0)
    assert same(opener.open(sealer.seal(state, 1), 1), state)


def test_wipe_of_import_leaves_nothing_shared() -> None:
    sealer, opener = pair()
    state = make_state()
    got = opener.open(sealer.seal(state, 1), 1)
    got.wipe()
    assert state.read_secret != bytes(32)


def test_counter_starts_at_one_and_increases() -> None:
    sealer, _opener = pair()
    ns = [outer(sealer.seal(make_state(), 1))["n"] for _ in range(3)]
    assert ns == [1, 2, 3]


def test_outer_layout_is_deterministic() -> None:
    sealer, _ = pair()
    blob = sealer.seal(make_state(), 5)
    # keys sorted by their encodings: "n", "v", then the two-letter "ch", "ct"
    assert blob[:1] == b"\xa4"
    assert blob[1:6] == b"\x61n\x01\x61v"
    assert list(outer(blob)) == ["n", "v", "ch", "ct"]
    assert blob[6] == B.BLOB_VERSION == 2
    assert B.blob_aad(CH, 1, 5) == cbor2.dumps({"c": 5, "n": 1, "v": 2, "ch": CH})


def test_sealer_refuses_bad_state_without_burning_a_counter() -> None:
    sealer, _opener = pair()
    with pytest.raises(BlobError) as ei:
        sealer.seal(make_state(0x1302, read_secret=bytearray(32)), 1)
    assert ei.value.reason == "bad_secret_length"
    assert outer(sealer.seal(make_state(), 1))["n"] == 1


def test_sealer_refuses_oversize() -> None:
    sealer, _ = pair()
    with pytest.raises(BlobError) as ei:
        sealer.seal(make_state(peer_certs=[b"x" * B.MAX_BLOB]), 1)
    assert ei.value.reason == "oversize"


def test_reprs_and_errors_never_show_secrets() -> None:
    sealer, opener = pair()
    state = make_state(0x1302)
    for text in (repr(state), repr(sealer), repr(opener)):
        assert state.read_secret.hex() not in text and KEY.hex() not in text
    with pytest.raises(BlobError) as ei:
        sealer.seal(make_state(0x1301, read_secret=bytearray(b"\xaa" * 48)), 1)
    assert "aa" * 8 not in str(ei.value)


# ------------------------------------------------------------------ one-time rule, channel, conn


def test_replay_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    opener.open(blob, 7)
    assert refused(opener, blob) == "replayed"


def test_older_blob_after_newer_refused() -> None:
    sealer, opener = pair()
    first, second = sealer.seal(make_state(), 1), sealer.seal(make_state(), 2)
    opener.open(second, 2)
    assert refused(opener, first, 1) == "replayed"


def test_other_channel_refused() -> None:
    sealer = B.BlobSealer(KEY, bytes(16))
    _, opener = pair()
    assert refused(opener, sealer.seal(make_state(), 7)) == "wrong_channel"


def test_other_key_same_channel_id_refused() -> None:
    sealer = B.BlobSealer(bytes(32), CH)
    _, opener = pair()
    assert refused(opener, sealer.seal(make_state(), 7)) == "bad_tag"


def test_other_conn_refused() -> None:
    sealer, opener = pair()
    state = make_state()
    blob = sealer.seal(state, 7)
    assert refused(opener, blob, conn=8) == "bad_tag"
    assert same(opener.open(blob, 7), state)


def test_bad_conn_argument() -> None:
    sealer, opener = pair()
    with pytest.raises(BlobError) as ei:
        sealer.seal(make_state(), -1)
    assert ei.value.reason == "bad_conn"
    assert refused(opener, sealer.seal(make_state(), 1), conn=2**64) == "bad_conn"


# ------------------------------------------------------------------ tampering


def test_flipped_bit_at_every_position_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    reasons = set()
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            reasons.add(refused(opener, bytes(bad)))
    assert opener.last == 0
    assert "bad_tag" in reasons and "wrong_channel" in reasons
    opener.open(blob, 7)  # the genuine blob still imports afterwards


def test_truncated_at_every_length_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    for n in range(len(blob)):
        refused(opener, blob[:n])
    opener.open(blob, 7)


def test_oversize_refused_before_parsing() -> None:
    _, opener = pair()
    assert refused(opener, b"\xff" * (B.MAX_BLOB + 1)) == "oversize"


def reencode(blob: bytes, **changes: object) -> bytes:
    d = outer(blob)
    d.update(changes)
    return cbor2.dumps(d, canonical=True)


def test_wrong_version_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    for v in (1, 3):  # version 1 too: both ends come from one install, so an old blob is a half-done upgrade
        assert refused(opener, reencode(blob, v=v)) == "unsupported_version"
        assert refused(opener, reencode(blob, v=v, ch=b"")) == "unsupported_version"  # v is checked first


@pytest.mark.parametrize(
    "change",
    [{"v": "1"}, {"ch": "text"}, {"n": -1}, {"n": 0}, {"ct": []}, {"extra": 1}],
)
def test_bad_outer_shape(change: dict[str, object]) -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    assert refused(opener, reencode(blob, **change)) == "bad_outer"


def test_missing_outer_field_and_non_map() -> None:
    sealer, opener = pair()
    d = outer(sealer.seal(make_state(), 7))
    del d["ct"]
    assert refused(opener, cbor2.dumps(d, canonical=True)) == "bad_outer"
    assert refused(opener, cbor2.dumps([1, 2])) == "bad_outer"


def test_short_ciphertext() -> None:
    sealer, opener = pair()
    assert refused(opener, reencode(sealer.seal(make_state(), 7), ct=b"x")) == "bad_tag"


def test_trailing_bytes_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    assert refused(opener, blob + b"\x00") == "trailing_bytes"
    assert refused(opener, blob + blob) == "trailing_bytes"
    opener.open(blob, 7)


def test_semantic_tags_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    assert refused(opener, b"\xd9\xd9\xf7" + blob) == "tag"  # self-describe tag 55799 around it
    assert refused(opener, reencode(blob, n=cbor2.CBORTag(2, b"\x05"))) == "tag"  # bignum 5


def _map_items(blob: bytes) -> list[bytes]:
    """The encoded key/value items of the outer map, in order (for hand-built variants)."""
    d = outer(blob)
    return [cbor2.dumps(k) + cbor2.dumps(v) for k, v in d.items()]


def test_indefinite_length_map_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    assert refused(opener, b"\xbf" + b"".join(_map_items(blob)) + b"\xff") == "indefinite_length"


def test_duplicate_key_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    items = _map_items(blob)
    # {"n": 1, "n": 1, "v": 1, "ch": .., "ct": ..}: the scanner sees two equal keys
    assert refused(opener, b"\xa5" + items[0] + b"".join(items)) == "duplicate_key"


def test_non_canonical_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    items = _map_items(blob)
    long_n = b"\x61n\x18\x01"  # n = 1 in a two-byte head
    assert refused(opener, b"\xa4" + long_n + b"".join(items[1:])) == "non_canonical"
    assert refused(opener, b"\xa4" + b"".join(reversed(items))) == "non_canonical"
    ch_long = b"\x62ch\x58\x10" + CH  # 16-byte string with a one-byte length head
    assert refused(opener, b"\xa4" + items[0] + items[1] + ch_long + items[3]) == "non_canonical"
    opener.open(blob, 7)


def test_float_and_simple_values_refused() -> None:
    sealer, opener = pair()
    blob = sealer.seal(make_state(), 7)
    assert refused(opener, reencode(blob, n=1.0)) == "malformed"
    assert refused(opener, b"\xf7") == "malformed"  # undefined


# ------------------------------------------------------------------ inner map (behind a valid tag)


def seal_raw_inner(inner: bytes, n: int = 1, conn: int = 7) -> bytes:
    """Test-only path: seal arbitrary inner bytes with the channel key, as a buggy secured might."""
    ct = AESGCM(KEY).encrypt(B.blob_nonce(n), inner, B.blob_aad(CH, n, conn))
    return cbor2.dumps({"v": B.BLOB_VERSION, "ch": CH, "n": n, "ct": ct}, canonical=True)


def good_inner(**changes: object) -> dict[object, object]:
    m: dict[object, object] = {
        B.K_VERSION: 0x0304,
        B.K_SUITE: 0x1301,
        B.K_READ_SECRET: b"r" * 32,
        B.K_WRITE_SECRET: b"w" * 32,
        B.K_READ_SEQ: 0,
        B.K_WRITE_SEQ: 2,
        B.K_RECORDS_PROTECTED: 2,
        B.K_ALPN: None,
        B.K_SNI: "a.example",
        B.K_PEER_CERTS: [],
        B.K_PSK_RESUMED: False,
        B.K_CREATED: 5,
    }
    names = {v: k for k, v in B.INNER_KEYS.items()}
    for name, value in changes.items():
        m[names[name]] = value
    return m


def test_hand_made_inner_imports() -> None:
    _, opener = pair()
    got = opener.open(seal_raw_inner(cbor2.dumps(good_inner(), canonical=True)), 7)
    assert got.read_secret == bytearray(b"r" * 32) and got.write_seq == 2 and got.sni == "a.example"


_MISSING = object()

INNER_FAULTS = [
    ("unknown key", {12: 0}, "unknown_field"),
    ("text key", {"x": 0}, "unknown_field"),
    ("missing suite", {B.K_SUITE: _MISSING}, "missing_field"),
    ("suite as text", {B.K_SUITE: "0x1301"}, "wrong_type"),
    ("seq as bool", {B.K_READ_SEQ: True}, "wrong_type"),
    ("psk_resumed as int", {B.K_PSK_RESUMED: 1}, "wrong_type"),
    ("secret as text", {B.K_READ_SECRET: "r" * 32}, "wrong_type"),
    ("certs not a list", {B.K_PEER_CERTS: b"cert"}, "wrong_type"),
    ("cert as text", {B.K_PEER_CERTS: ["cert"]}, "wrong_type"),
    ("TLS 1.1", {B.K_VERSION: 0x0302}, "bad_tls_version"),
    ("TLS 1.2 version with a TLS 1.3 suite", {B.K_VERSION: 0x0303}, "unknown_suite"),
    ("TLS 1.3 version with a TLS 1.2 suite", {B.K_SUITE: 0xC02F, B.K_READ_SECRET: b"r" * 20,
                                              B.K_WRITE_SECRET: b"w" * 20}, "unknown_suite"),
    ("unknown suite", {B.K_SUITE: 0x1304}, "unknown_suite"),
    ("short secret", {B.K_WRITE_SECRET: b"w" * 31}, "bad_secret_length"),
    ("48-byte secret for a SHA-256 suite", {B.K_READ_SECRET: b"r" * 48}, "bad_secret_length"),
    ("negative seq", {B.K_WRITE_SEQ: -1}, "bad_seq"),
    ("negative records_protected", {B.K_RECORDS_PROTECTED: -5}, "bad_seq"),
    ("negative created", {B.K_CREATED: -1}, "bad_value"),
    ("empty alpn", {B.K_ALPN: ""}, "bad_value"),
    ("long sni", {B.K_SNI: "a" * 256}, "bad_value"),
    ("empty cert", {B.K_PEER_CERTS: [b""]}, "bad_value"),
]


@pytest.mark.parametrize(("label", "change", "reason"), INNER_FAULTS, ids=[f[0] for f in INNER_FAULTS])
def test_inner_faults(label: str, change: dict[object, object], reason: str) -> None:
    _, opener = pair()
    m = good_inner()
    for k, v in change.items():
        if v is _MISSING:
            del m[k]
        else:
            m[k] = v
    assert refused(opener, seal_raw_inner(cbor2.dumps(m, canonical=True))) == reason
    opener.open(seal_raw_inner(cbor2.dumps(good_inner(), canonical=True), n=2), 7)


@pytest.mark.parametrize(
    "inner",
    [
        cbor2.dumps([1, 2]),  # not a map
        b"\xa0\x00",  # trailing byte
        b"\xc0\x00",  # tag
        b"",  # nothing
        cbor2.dumps(good_inner())[::-1],  # garbage
        b"\xa2\x01\x00\x00\x00",  # unsorted integer keys
    ],
)
def test_inner_cbor_faults(inner: bytes) -> None:
    _, opener = pair()
    assert refused(opener, seal_raw_inner(inner)) == "bad_inner"


def test_inner_duplicate_key() -> None:
    _, opener = pair()
    body = cbor2.dumps(good_inner(), canonical=True)
    assert body[:1] == b"\xac"  # 12 entries
    dup = b"\xad" + b"\x00\x19\x03\x04" + body[1:]  # 13 entries: version twice
    assert refused(opener, seal_raw_inner(dup)) == "bad_inner"


def test_wipe_bytes() -> None:
    buf = bytearray(b"secret")
    B.wipe_bytes(buf)
    assert buf == bytearray(6)


# ------------------------------------------------------------------ property tests


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_only_blob_error(data: bytes) -> None:
    _, opener = pair()
    with pytest.raises(BlobError):
        opener.open(data, 7)
    assert opener.last == 0


_SEALED = B.BlobSealer(KEY, CH).seal(make_state(), 7)


@SETTINGS
@given(st.data())
def test_random_edits_of_a_valid_blob_only_blob_error(data: st.DataObject) -> None:
    blob = bytearray(_SEALED)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        i = data.draw(st.integers(0, len(blob) - 1))
        if op == "set":
            new = data.draw(st.integers(0, 255))
            if blob[i] == new:
                new ^= 1
            blob[i] = new
        elif op == "insert":
            blob.insert(i, data.draw(st.integers(0, 255)))
        else:
            del blob[i]
    _, opener = pair()
    if bytes(blob) == _SEALED:
        return
    with pytest.raises(BlobError):
        opener.open(bytes(blob), 7)


@SETTINGS
@given(
    suite=st.sampled_from(SUITES13_IDS + SUITES12_IDS),
    seqs=st.tuples(*[st.integers(0, 2**64 - 1)] * 3),
    alpn=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    certs=st.lists(st.binary(min_size=1, max_size=50), max_size=3),
    created=st.integers(0, 2**64 - 1),
    conn=st.integers(0, 2**64 - 1),
)
def test_round_trip_property(
    suite: int, seqs: tuple[int, int, int], alpn: str | None, certs: list[bytes], created: int, conn: int
) -> None:
    sealer, opener = pair()
    state = make_state(
        suite,
        read_seq=seqs[0],
        write_seq=seqs[1],
        records_protected=seqs[2],
        alpn=alpn,
        peer_certs=certs,
        created=created,
    )
    assert same(opener.open(sealer.seal(state, conn), conn), state)


# ------------------------------------------------------------------ schema check: fast and field-by-field paths


def test_seal_accepts_int_subclasses_like_before() -> None:
    """An IntEnum suite is not one of the exact types: the field-by-field path still accepts it."""

    class Suite(enum.IntEnum):
        AES_128_GCM = 0x1301

    sealer, opener = pair()
    state = make_state(0x1301)
    state.suite = Suite.AES_128_GCM
    got = opener.open(sealer.seal(state, 3), 3)
    assert got.suite == 0x1301 and type(got.suite) is int


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({True: 0x1301}, "unknown_field"),  # equal to key 1 in a set comparison, still not an integer key
        ({1.0: 0x1301}, "unknown_field"),
        ({B.K_SUITE: True}, "wrong_type"),
        ({B.K_PSK_RESUMED: 0}, "wrong_type"),
        ({B.K_PEER_CERTS: (b"cert",)}, "wrong_type"),
        ({B.K_PEER_CERTS: [b"cert", "text"]}, "wrong_type"),
    ],
)
def test_parse_inner_finds_the_reason(change: dict[object, object], reason: str) -> None:
    m = good_inner()
    for key, value in change.items():
        if key in (True, 1.0):
            del m[B.K_SUITE]
        m[key] = value
    with pytest.raises(BlobError) as ei:
        B._parse_inner(m)
    assert ei.value.reason == reason


def test_missing_field_reported_in_key_order() -> None:
    """A wrong type on an earlier key wins over a missing later one, as the table order says."""
    m = good_inner(suite="x")
    del m[B.K_CREATED]
    with pytest.raises(BlobError) as ei:
        B._parse_inner(m)
    assert ei.value.reason == "wrong_type"


def test_seal_wipes_its_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    wiped: list[bytearray] = []
    real = B.wipe_bytes

    def spy(buf: bytearray) -> None:
        real(buf)
        wiped.append(buf)

    monkeypatch.setattr(B, "wipe_bytes", spy)
    state = make_state()
    sealer, _ = pair()
    sealer.seal(state, 1)
    assert len(wiped) == 1 and type(wiped[0]) is bytearray
    assert wiped[0] == bytearray(len(wiped[0])) and len(wiped[0]) > 2 * len(state.read_secret)

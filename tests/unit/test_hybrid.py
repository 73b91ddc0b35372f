"""The hybrid groups X25519MLKEM768 and SecP256r1MLKEM768 (draft-ietf-tls-ecdhe-mlkem) in the engine.

Wire layout and secret against a client built from the primitives (tests/tlsclient.py); the hostile shares,
each with its exact alert on the wire; hypothesis over the share parser; the post-quantum policy on the
ClientHellos real clients send; a large ClientHello cut at every byte of its key share, across reads and
across records; and what appd reads of the ServerHello it relays.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.inmemory import pki, server_config
from tests.tlsclient import HYBRID_ECDH, P256, P256MLKEM768, X25519, X25519MLKEM768, Client, record, u16s
from tls_privsep.secured import __main__ as secured_main
from tls_privsep.secured import groups, setup
from tls_privsep.secured import messages as m
from tls_privsep.secured.credentials import CredentialStore
from tls_privsep.secured.groupchoice import PQ_POLICIES, PqPolicy, choose, ranking
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.config import SecuredSettings
from tls_privsep.shared.errors import AlertDescription as AD
from tls_privsep.shared.errors import ConfigError, IllegalParameter, InternalError, LocalAlert
from tls_privsep.shared.record import RecordLayer
from tls_privsep.shared.serverhello import negotiated_group
from tls_privsep.shared.wire import u16, vector

HYBRIDS = (X25519MLKEM768, P256MLKEM768)
Q = 3329  # FIPS 203: the ML-KEM modulus


def _server(**kw: object) -> ServerHandshake:
    return ServerHandshake(server_config(("ecdsa",), **kw))


def _first_flight(c: Client, **kw: object) -> ServerHandshake:
    hs = _server(**kw)
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())
    return hs


def _ek() -> bytes:
    return mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()


def _x25519() -> bytes:
    return x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()


def _p256() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _with_coefficient(ek: bytes, index: int, value: int) -> bytes:
    """``ek`` with its ``index``-th 12-bit coefficient (FIPS 203 ByteEncode_12) set to ``value``."""
    out = bytearray(ek)
    at = index // 2 * 3
    if index % 2 == 0:
        out[at] = value & 0xFF
        out[at + 1] = (out[at + 1] & 0xF0) | (value >> 8)
    else:
        out[at + 1] = (out[at + 1] & 0x0F) | ((value & 0x0F) << 4)
        out[at + 2] = value >> 4
    return bytes(out)


def _hybrid_share(group: int, ek: bytes | None = None, ecdh: bytes | None = None) -> bytes:
    ek = _ek() if ek is None else ek
    if group == X25519MLKEM768:
        return ek + (_x25519() if ecdh is None else ecdh)
    return (_p256() if ecdh is None else ecdh) + ek


# ---- layout and secret -------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", HYBRIDS)
def test_full_handshake_with_each_hybrid(group: int) -> None:
    """The client derives the same keys as the server: its Finished verifies, so the order of the two
    parts in the server share and in the secret is the draft's (§3.1.2, §3.1.3)."""
    c = Client(groups=(group, X25519), share_groups=(group,))
    hs = _first_flight(c)
    assert c.group == group and hs.info.group == group and not hs.info.hrr
    hs.receive_data(c.protect(c.finished_message()))
    assert hs.complete


@pytest.mark.parametrize("group", HYBRIDS)
def test_respond_layout(group: int) -> None:
    """Client share 1184 + ECDH, server share 1088 + ECDH, secret 32 + 32, each in the group's order."""
    kem = mlkem.MLKEM768PrivateKey.generate()
    ek = kem.public_key().public_bytes_raw()
    ecdh_group = HYBRID_ECDH[group]
    client_key = groups.generate(ecdh_group)
    share = _hybrid_share(group, ek, groups.public_share(client_key))
    assert len(share) == {X25519MLKEM768: 1216, P256MLKEM768: 1249}[group]
    server_share, secret = groups.respond(group, share)
    assert len(server_share) == {X25519MLKEM768: 1120, P256MLKEM768: 1153}[group] and len(secret) == 64
    if group == X25519MLKEM768:
        ct, server_ecdh = server_share[:1088], server_share[1088:]
        kem_secret, ecdh_secret = secret[:32], secret[32:]
        peer = x25519.X25519PublicKey.from_public_bytes(server_ecdh)
        assert isinstance(client_key, x25519.X25519PrivateKey)
        assert client_key.exchange(peer) == ecdh_secret
    else:
        server_ecdh, ct = server_share[:65], server_share[65:]
        ecdh_secret, kem_secret = secret[:32], secret[32:]
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), server_ecdh)
        assert isinstance(client_key, ec.EllipticCurvePrivateKey)
        assert client_key.exchange(ec.ECDH(), point) == ecdh_secret
    assert kem.decapsulate(ct) == kem_secret


def test_fresh_keys_every_time() -> None:
    """Draft §4: the ECDH part is never reused across connections (nor is the encapsulation)."""
    share = _hybrid_share(X25519MLKEM768)
    (a, sa), (b, sb) = groups.respond(X25519MLKEM768, share), groups.respond(X25519MLKEM768, share)
    assert a[1088:] != b[1088:] and a[:1088] != b[:1088] and sa != sb


# ---- FIPS 203 §7.2: the encapsulation key check --------------------------------------------------------------


@pytest.mark.parametrize(("index", "value"), [(0, Q), (0, 0xFFF), (1, Q), (767, Q + 1), (400, 0xFFF)])
def test_cryptography_refuses_a_coefficient_of_q_or_more(index: int, value: int) -> None:
    """What respond() relies on: from_public_bytes does the modulus check (ValueError), for any coefficient."""
    with pytest.raises(ValueError):
        mlkem.MLKEM768PublicKey.from_public_bytes(_with_coefficient(_ek(), index, value))


@pytest.mark.parametrize("group", HYBRIDS)
def test_an_encapsulation_key_failing_the_modulus_check_is_illegal_parameter(group: int) -> None:
    share = _hybrid_share(group, _with_coefficient(_ek(), 5, Q))
    with pytest.raises(IllegalParameter, match="FIPS 203"):
        groups.respond(group, share)


def test_coefficient_q_minus_one_is_fine() -> None:
    server_share, _ = groups.respond(X25519MLKEM768, _hybrid_share(X25519MLKEM768, _with_coefficient(_ek(), 5, Q - 1)))
    assert len(server_share) == 1120


# ---- hostile shares, through the engine: exact alert, plaintext on the wire ----------------------------------


def _share_ext(*entries: tuple[int, bytes]) -> bytes:
    return vector(2, b"".join(u16(g) + vector(2, s) for g, s in entries))


ZERO_POINT = bytes(32)  # X25519 of any key with it is all zeros (RFC 8446 §7.4.2)
ORDER_TWO = b"\xec\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" \
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"  # p - 1, a point of small order
OFF_CURVE = b"\x04" + b"\x01" * 64
HOSTILE: list[tuple[str, int, bytes | None, AD, dict[str, object]]] = [
    # (id, group, share (None: the share of another group, see the case), alert, server settings)
    ("X25519MLKEM768 truncated by one", X25519MLKEM768, _hybrid_share(X25519MLKEM768)[:-1], AD.illegal_parameter, {}),
    ("X25519MLKEM768 padded by one", X25519MLKEM768, _hybrid_share(X25519MLKEM768) + b"\x00", AD.illegal_parameter, {}),
    ("X25519MLKEM768 the X25519 share alone", X25519MLKEM768, _x25519(), AD.illegal_parameter, {}),
    ("X25519MLKEM768 the encapsulation key alone", X25519MLKEM768, _ek(), AD.illegal_parameter, {}),
    ("X25519MLKEM768 bad encapsulation key", X25519MLKEM768, _hybrid_share(X25519MLKEM768, _with_coefficient(_ek(), 0, 0xFFF)), AD.illegal_parameter, {}),
    ("X25519MLKEM768 all-zero X25519 result", X25519MLKEM768, _hybrid_share(X25519MLKEM768, ecdh=ZERO_POINT), AD.illegal_parameter, {}),
    ("X25519MLKEM768 small-order X25519 point", X25519MLKEM768, _hybrid_share(X25519MLKEM768, ecdh=ORDER_TWO), AD.illegal_parameter, {}),
    ("X25519MLKEM768 parts swapped", X25519MLKEM768, _x25519() + _ek(), AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 truncated by one", P256MLKEM768, _hybrid_share(P256MLKEM768)[:-1], AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 padded by one", P256MLKEM768, _hybrid_share(P256MLKEM768) + b"\x00", AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 bad encapsulation key", P256MLKEM768, _hybrid_share(P256MLKEM768, _with_coefficient(_ek(), 767, Q)), AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 point off the curve", P256MLKEM768, _hybrid_share(P256MLKEM768, ecdh=OFF_CURVE), AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 point at infinity", P256MLKEM768, _hybrid_share(P256MLKEM768, ecdh=bytes(65)), AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 compressed point, padded", P256MLKEM768, _hybrid_share(P256MLKEM768, ecdh=b"\x02" + _p256()[1:33] + bytes(32)), AD.illegal_parameter, {}),
    ("SecP256r1MLKEM768 parts swapped", P256MLKEM768, _ek() + _p256(), AD.illegal_parameter, {}),
    # RFC 8446 §4.2.8: a share for a group the client does not list.
    ("hybrid share for a group not in supported_groups", X25519MLKEM768, None, AD.illegal_parameter, {}),
    # The length is judged for every share of a group we implement, even one the policy will not use.
    ("truncated hybrid share beside a good x25519 one, post_quantum off", X25519MLKEM768, _hybrid_share(X25519MLKEM768)[:-1], AD.illegal_parameter, {"post_quantum": "off"}),
    ("require: no hybrid listed", X25519, _x25519(), AD.handshake_failure, {"post_quantum": "require"}),
]


@pytest.mark.parametrize(("group", "share", "alert", "kw"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_share(group: int, share: bytes | None, alert: AD, kw: dict[str, object]) -> None:
    c = Client(groups=(group, X25519) if group != X25519 else (X25519,))
    if share is None:  # listed as x25519 only, a hybrid share sent all the same
        c.hello.set(10, u16s([X25519]))
        c.hello.set(51, _share_ext((X25519MLKEM768, _hybrid_share(X25519MLKEM768))))
    elif group == X25519:
        c.hello.set(51, _share_ext((X25519, share)))
    else:
        c.hello.set(51, _share_ext((group, share), (X25519, _x25519())))
    hs = _server(**kw)
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(c.client_hello_record())
    assert exc.value.description == alert, exc.value.reason
    assert hs.data_to_send() == bytes([21, 3, 3, 0, 2, 2, alert])


class _ZeroExchange(x25519.X25519PrivateKey):
    """A real X25519 key whose exchange returns 32 zero bytes instead of raising, as OpenSSL does for a point
    of small order: the only way to reach groups.py's own all-zero check."""

    def __init__(self) -> None:
        self._key = x25519.X25519PrivateKey.generate()

    def public_key(self) -> x25519.X25519PublicKey:
        return self._key.public_key()

    def private_bytes(self, *args: Any, **kw: Any) -> bytes:
        return self._key.private_bytes(*args, **kw)

    def private_bytes_raw(self) -> bytes:
        return self._key.private_bytes_raw()

    def exchange(self, peer_public_key: x25519.X25519PublicKey) -> bytes:
        return bytes(32)

    def __copy__(self) -> _ZeroExchange:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _ZeroExchange:
        return self


def test_openssl_itself_refuses_an_all_zero_x25519_result() -> None:
    """Why groups.py's all-zero check is defence in depth: the exchange raises first, for the small-order
    points there are (here the zero point and p - 1)."""
    for point in (ZERO_POINT, ORDER_TWO):
        with pytest.raises(ValueError):
            x25519.X25519PrivateKey.generate().exchange(x25519.X25519PublicKey.from_public_bytes(point))


@pytest.mark.parametrize("group", [X25519, X25519MLKEM768])
def test_an_all_zero_x25519_result_is_illegal_parameter(group: int) -> None:
    """RFC 8446 §7.4.2, draft §3.1.3: should the exchange return zeros rather than raise, still refused, and
    under the group the client chose."""
    share = _x25519() if group == X25519 else _hybrid_share(group)
    with pytest.raises(IllegalParameter, match=f"all-zero shared secret for group {group:#06x}"):
        groups.respond(group, share, lambda _: _ZeroExchange())


@pytest.mark.parametrize(("group", "ecdh", "message"), [
    (X25519MLKEM768, ORDER_TWO, "invalid key share for group 0x11ec"),
    (P256MLKEM768, OFF_CURVE, "invalid key share for group 0x11eb"),
    (P256MLKEM768, b"\x02" + bytes(64), "not an uncompressed point"),
])
def test_a_bad_ecdh_part_is_reported_under_the_hybrid(group: int, ecdh: bytes, message: str) -> None:
    """The client sent a hybrid share, not one of x25519 (0x001d) or secp256r1 (0x0017): the reason says so."""
    with pytest.raises(IllegalParameter, match=message) as exc:
        groups.respond(group, _hybrid_share(group, ecdh=ecdh))
    assert f"{group:#06x}" in exc.value.reason and "0x001d" not in exc.value.reason and "0x0017" not in exc.value.reason


@pytest.mark.parametrize("group", [X25519, P256, X25519MLKEM768, P256MLKEM768])
def test_an_ephemeral_key_of_the_wrong_kind_is_internal_error(group: int) -> None:
    """A key factory handing out the other curve's key is our bug, not the client's: internal_error."""
    wrong = P256 if group in (X25519, X25519MLKEM768) else X25519
    share = {X25519: _x25519(), P256: _p256()}.get(group) or _hybrid_share(group)
    with pytest.raises(InternalError):
        groups.respond(group, share, lambda _: groups.generate(wrong))


# ---- hypothesis over the share parser ------------------------------------------------------------------------


def _byte_encode_12(coefficients: list[int]) -> bytes:
    """FIPS 203 ByteEncode_12: two 12-bit coefficients to three bytes, little end first."""
    out = bytearray()
    for a, b in zip(coefficients[::2], coefficients[1::2], strict=True):
        out += bytes([a & 0xFF, (a >> 8) | ((b & 0x0F) << 4), b >> 4])
    return bytes(out)


def _encapsulation_keys(valid: bool) -> st.SearchStrategy[bytes]:
    """ML-KEM-768 encapsulation keys: 768 coefficients and a 32-byte seed. ``valid``: real keys, or every
    coefficient below q; otherwise also random bytes and keys with one coefficient of q or more."""
    coefficients = st.lists(st.integers(0, Q - 1), min_size=768, max_size=768)
    built = st.builds(lambda c, rho: _byte_encode_12(c) + rho, coefficients, st.binary(min_size=32, max_size=32))
    good = st.one_of(st.builds(_ek), built)
    if valid:
        return good
    over = st.builds(_with_coefficient, good, st.integers(0, 767), st.integers(Q, 0xFFF))
    return st.one_of(good, over, st.binary(min_size=groups.MLKEM768_EK, max_size=groups.MLKEM768_EK))


def _ecdh_shares(group: int, valid: bool) -> st.SearchStrategy[bytes]:
    """The ECDH part of ``group``: a real share, or (not ``valid``) also random bytes of its length and a real
    share with one byte changed (for P-256 almost always a point off the curve)."""
    real = st.builds(_x25519 if group == X25519MLKEM768 else _p256)
    if valid:
        return real
    size = groups.HYBRIDS[group].ecdh_share
    flipped = st.builds(lambda s, i, x: s[:i] + bytes([s[i] ^ x]) + s[i + 1 :], real, st.integers(0, size - 1),
                        st.integers(1, 255))
    # Any 32 bytes are an X25519 public key; only a point of small order (u = 0 or 1, say) is refused, so those
    # are offered outright rather than left to chance.
    small_order = st.sampled_from([bytes(32), (1).to_bytes(32, "little")]) if group == X25519MLKEM768 else st.nothing()
    return st.one_of(real, flipped, st.binary(min_size=size, max_size=size), small_order)


def _secret_or_illegal_parameter(group: int, share: bytes) -> str:
    """respond() on ``share``: a 64-byte secret and a server share of the right length, or illegal_parameter;
    never another exception. Which of the two it was."""
    try:
        server_share, secret = groups.respond(group, share)
    except IllegalParameter:
        return "illegal_parameter"
    assert len(secret) == 64
    assert len(server_share) == {X25519MLKEM768: 1120, P256MLKEM768: 1153}[group]
    return "secret"


def _both_outcomes(group: int, ek: st.SearchStrategy[bytes], ecdh: st.SearchStrategy[bytes]) -> set[str]:
    """What respond() made of shares built from ``ek`` and ``ecdh`` (150 derandomized examples)."""
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(ek=ek, ecdh=ecdh)
    def prop(ek: bytes, ecdh: bytes) -> None:
        outcome = _secret_or_illegal_parameter(group, _hybrid_share(group, ek, ecdh))
        event(outcome)
        seen.add(outcome)

    prop()
    return seen


@pytest.mark.parametrize("group", HYBRIDS)
def test_any_ecdh_part_beside_a_good_encapsulation_key_is_a_secret_or_illegal_parameter(group: int) -> None:
    """A key that passes FIPS 203's check, so the ECDH part is always reached; both outcomes are seen (random
    encapsulation keys almost never pass the modulus check, and would hide the ECDH part from the fuzzer)."""
    seen = _both_outcomes(group, _encapsulation_keys(valid=True), _ecdh_shares(group, valid=False))
    assert seen == {"secret", "illegal_parameter"}


@pytest.mark.parametrize("group", HYBRIDS)
def test_any_encapsulation_key_beside_a_good_ecdh_part_is_a_secret_or_illegal_parameter(group: int) -> None:
    """The other way round: a real ECDH share, the encapsulation key fuzzed, valid and not; both outcomes."""
    seen = _both_outcomes(group, _encapsulation_keys(valid=False), _ecdh_shares(group, valid=True))
    assert seen == {"secret", "illegal_parameter"}


@settings(max_examples=200, deadline=None)
@given(group=st.sampled_from(HYBRIDS), share=st.binary(max_size=1300))
def test_a_share_of_any_length_is_a_secret_or_illegal_parameter(group: int, share: bytes) -> None:
    """Any bytes at all (mostly of a wrong length): never another exception."""
    _secret_or_illegal_parameter(group, share)


def test_byte_encode_12_matches_a_real_key() -> None:
    """The fuzzer's encoder is FIPS 203's: a real key re-encoded from its own coefficients is itself."""
    ek = _ek()
    coefficients = []
    for at in range(0, 1152, 3):
        a, b, c = ek[at : at + 3]
        coefficients += [a | (b & 0x0F) << 8, b >> 4 | c << 4]
    assert _byte_encode_12(coefficients) + ek[1152:] == ek


@settings(max_examples=100, deadline=None)
@given(group=st.sampled_from(HYBRIDS), kem=st.binary(min_size=1184, max_size=1184), data=st.data())
def test_split_and_join_are_inverse(group: int, kem: bytes, data: st.DataObject) -> None:
    hybrid = groups.HYBRIDS[group]
    ecdh = data.draw(st.binary(min_size=hybrid.ecdh_share, max_size=hybrid.ecdh_share))
    assert hybrid.split_client_share(hybrid.join(kem, ecdh)) == (kem, ecdh)


# ---- the policy ----------------------------------------------------------------------------------------------

ALL = groups.SUPPORTED_GROUPS
CHROME = ([X25519MLKEM768, X25519, P256, 0x0018], [(X25519MLKEM768, b"k"), (X25519, b"x")])
OPENSSL_30 = ([X25519, P256, 0x001E, 0x0018, 0x0019], [(X25519, b"x")])
OPENSSL_35 = ([X25519MLKEM768, X25519, 0x001E, P256], [(X25519MLKEM768, b"k"), (X25519, b"x")])
LISTS_HYBRID_SHARES_X25519 = ([X25519, X25519MLKEM768], [(X25519, b"x")])
NOTHING_USABLE = ([0x001E, X25519MLKEM768, X25519], [(0x001E, b"y")])
POLICY: list[tuple[str, tuple[list[int], list[tuple[int, bytes]]], PqPolicy, int | None, bool]] = [
    # (client, hello, policy, group, HelloRetryRequest)
    ("chrome", CHROME, "prefer", X25519MLKEM768, False),
    ("chrome", CHROME, "require", X25519MLKEM768, False),
    ("chrome", CHROME, "off", X25519, False),
    ("openssl-3.0", OPENSSL_30, "prefer", X25519, False),
    ("openssl-3.0", OPENSSL_30, "require", None, False),
    ("openssl-3.0", OPENSSL_30, "off", X25519, False),
    ("openssl-3.5", OPENSSL_35, "prefer", X25519MLKEM768, False),
    ("lists hybrid, shares x25519", LISTS_HYBRID_SHARES_X25519, "prefer", X25519, False),
    ("lists hybrid, shares x25519", LISTS_HYBRID_SHARES_X25519, "require", X25519MLKEM768, True),
    ("lists hybrid, shares x25519", LISTS_HYBRID_SHARES_X25519, "off", X25519, False),
    ("only an x448 share", NOTHING_USABLE, "prefer", X25519MLKEM768, True),
    ("only an x448 share", NOTHING_USABLE, "off", X25519, True),
]


@pytest.mark.parametrize(("hello", "policy", "group", "hrr"), [c[1:] for c in POLICY],
                         ids=[f"{c[0]}-{c[2]}" for c in POLICY])
def test_policy(hello: tuple[list[int], list[tuple[int, bytes]]], policy: PqPolicy, group: int | None,
                hrr: bool) -> None:
    choice = choose(ALL, policy, *hello)
    assert choice.group == group
    assert (choice.group is not None and choice.share is None) == hrr


def test_prefer_puts_hybrids_first_whatever_the_list_order() -> None:
    assert ranking((X25519, P256, P256MLKEM768, X25519MLKEM768), "prefer") == [P256MLKEM768, X25519MLKEM768, X25519, P256]
    assert choose((X25519, X25519MLKEM768), "prefer", *CHROME).group == X25519MLKEM768


@settings(max_examples=300)
@given(configured=st.lists(st.sampled_from(ALL), min_size=1, unique=True), policy=st.sampled_from(PQ_POLICIES),
       listed=st.lists(st.sampled_from([*ALL, 0x001E, 0x0018]), unique=True),
       shared=st.lists(st.sampled_from([*ALL, 0x001E]), unique=True))
def test_policy_properties(configured: list[int], policy: PqPolicy, listed: list[int], shared: list[int]) -> None:
    """A share the policy can use is never passed over for a retry; require never picks a classical group,
    off never a hybrid; prefer takes a hybrid share whenever one is usable."""
    shares = [(g, b"s") for g in shared]
    choice = choose(configured, policy, listed, shares)
    usable = ranking(configured, policy)
    if choice.group is not None:
        assert choice.group in usable
    if any(g in usable for g in shared):
        assert choice.share is not None
    if policy == "require" and choice.group is not None:
        assert groups.is_hybrid(choice.group)
    if policy == "off" and choice.group is not None:
        assert not groups.is_hybrid(choice.group)
    if policy == "prefer" and any(groups.is_hybrid(g) and g in usable for g in shared):
        assert choice.group is not None and groups.is_hybrid(choice.group)


def test_require_sends_a_hello_retry_request_for_the_hybrid() -> None:
    c = Client(groups=(X25519MLKEM768, X25519), share_groups=(X25519,))
    hs = _server(post_quantum="require")
    hs.receive_data(c.client_hello_record())
    hrr = hs.data_to_send()
    assert negotiated_group(hrr) is None  # a HelloRetryRequest is no ServerHello for appd's line
    assert m.HRR_RANDOM in hrr and u16(51) + u16(2) + u16(X25519MLKEM768) in hrr
    c2 = Client(groups=(X25519MLKEM768, X25519), share_groups=(X25519MLKEM768,))
    c2.hello.random, c2.hello.session_id = c.hello.random, c.hello.session_id
    hs.receive_data(c2.client_hello_record())
    assert hs.info.hrr and hs.info.group == X25519MLKEM768


@pytest.mark.parametrize(("kw", "message"), [
    ({"groups": (X25519,), "post_quantum": "require"}, "needs a hybrid"),
    ({"groups": (X25519MLKEM768,), "post_quantum": "off"}, "needs a classical group"),
    ({"post_quantum": "require", "allow_psk_ke": True}, "excludes allow_psk_ke"),
    ({"post_quantum": "sometimes"}, "must be one of"),
])
def test_contradictory_configurations_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_config(**kw)


# ---- a ClientHello of 1.5 KB, cut anywhere in its key share ------------------------------------------------


def _big_hello() -> tuple[bytes, range]:
    """A Chrome-like hello record (hybrid and x25519 shares) and where its key_share extension lies in it."""
    c = Client(groups=(X25519MLKEM768, X25519), share_groups=(X25519MLKEM768, X25519))
    c.hello.random = os.urandom(32)
    rec = c.client_hello_record()
    key_share = u16(51) + vector(2, dict(c.hello.extensions)[51])
    start = rec.index(key_share)
    return rec, range(start, start + len(key_share) + 1)


def test_client_hello_split_at_every_byte_of_the_key_share_across_reads() -> None:
    """TCP may cut the 1.5 KB hello anywhere: each cut in the key share (its header included) gives the
    same ServerHello group, the whole record consumed."""
    rec, cuts = _big_hello()
    assert len(rec) > 1300  # this minimal hello; browsers pad theirs to 1.5-2 KB
    for cut in cuts:
        hs = _server()
        hs.receive_data(rec[:cut])
        assert hs.data_to_send() == b"", cut
        hs.receive_data(rec[cut:])
        assert negotiated_group(hs.data_to_send()) == X25519MLKEM768, cut
        assert hs.info.group == X25519MLKEM768 and hs.bytes_consumed == len(rec)


def test_client_hello_fragmented_into_two_records_at_every_byte_of_the_key_share() -> None:
    """The hello message split across two handshake records (RFC 8446 §5.1 allows it) at each byte of the
    key share, both records in one read or in two: reassembled, the same choice."""
    rec, cuts = _big_hello()
    msg = rec[5:]
    for cut in cuts:
        at = cut - 5
        two = record(22, msg[:at], 0x0301) + record(22, msg[at:], 0x0303)
        for reads in ((two,), (two[: at + 5], two[at + 5 :])):
            hs = _server()
            for data in reads:
                hs.receive_data(data)
            assert negotiated_group(hs.data_to_send()) == X25519MLKEM768, cut


# ---- what appd reads of the ServerHello ----------------------------------------------------------------------


@pytest.mark.parametrize("group", [*HYBRIDS, X25519, P256])
def test_negotiated_group_from_our_server_hello(group: int) -> None:
    c = Client(groups=(group,), share_groups=(group,))
    hs = _server()
    hs.receive_data(c.client_hello_record())
    assert negotiated_group(hs.data_to_send()) == group


def test_negotiated_group_is_none_for_anything_else() -> None:
    rl = RecordLayer()
    assert negotiated_group(rl.send_handshake(m.hello_retry_request(b"", 0x1301, X25519MLKEM768, None))) is None
    assert negotiated_group(rl.send_handshake(m.server_hello(bytes(32), b"", 0x1301, key_share=None, selected_psk=0))) is None
    assert negotiated_group(b"\x15\x03\x03\x00\x02\x02\x28") is None
    assert negotiated_group(b"") is None


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_negotiated_group_never_raises(data: bytes) -> None:
    negotiated_group(data)
    negotiated_group(b"\x16\x03\x03" + u16(len(data)) + data)
    negotiated_group(b"\x16\x03\x03" + u16(len(data) + 4) + b"\x02" + len(data).to_bytes(3, "big") + data)


# What secured does, in its order: the preload, the late-import watch, then the first hybrid exchange. The client
# shares come in on stdin, made in the test's own process, so that nothing here warms up ML-KEM, X25519 or P-256
# before the watch (which would hide a lazy import the daemon would hit).
PRELOAD_PROBE = """
import json, sys
from tls_privsep.shared import preload
preload.preload("secured", ("tls_privsep.shared", "tls_privsep.secured"))
late = []
preload.watch_late_imports(late.append, "nobody")
shares = {k: bytes.fromhex(v) for k, v in json.loads(sys.stdin.read()).items()}
from tls_privsep.secured import groups
from tls_privsep.shared.errors import IllegalParameter
assert groups.hybrids_available()
groups.respond(0x11EC, shares["x25519mlkem768"])
groups.respond(0x11EB, shares["secp256r1mlkem768"])
refused = []
for name in ("bad_encapsulation_key", "bad_ecdh"):
    try:
        groups.respond(0x11EC, shares[name])
    except IllegalParameter:
        refused.append(name)
print(json.dumps({"late": late, "refused": refused}))
"""


def test_a_hybrid_exchange_imports_nothing_after_the_preload() -> None:
    """secured's preload (shared/preload.py) covers what ML-KEM loads: after it, a hybrid exchange, the check
    of a bad key and the availability probe import no module (tests/integration/test_first_contact.py runs
    the daemons from an install they cannot read, where such an import would fail)."""
    import json
    import subprocess
    import sys

    shares = {
        "x25519mlkem768": _hybrid_share(X25519MLKEM768),
        "secp256r1mlkem768": _hybrid_share(P256MLKEM768),
        "bad_encapsulation_key": _hybrid_share(X25519MLKEM768, _with_coefficient(_ek(), 5, Q)),
        "bad_ecdh": _hybrid_share(X25519MLKEM768, ecdh=ORDER_TWO),
    }
    run = subprocess.run([sys.executable, "-E", "-P", "-c", PRELOAD_PROBE], capture_output=True, text=True,
                         input=json.dumps({k: v.hex() for k, v in shares.items()}),
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"late": [], "refused": ["bad_encapsulation_key", "bad_ecdh"]}, run.stdout


# ---- a cryptography without ML-KEM ---------------------------------------------------------------------------


class _Log:
    """A stand-in for secured's structlog logger that keeps its warnings."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.warnings.append((event, kw))


def _settings(**kw: object) -> SecuredSettings:
    return replace(SecuredSettings(), **kw)  # type: ignore[arg-type]


def _creds() -> CredentialStore:
    return CredentialStore([pki().creds["ecdsa"]])


@pytest.fixture
def no_mlkem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groups, "hybrids_available", lambda: False)


@pytest.mark.usefixtures("no_mlkem")
def test_prefer_without_mlkem_drops_the_hybrids_and_start_and_reload_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server still starts, classical only, and says which configured groups it left out, at start and on
    every reload (a reload re-reads the settings, so it says it again)."""
    sec = _settings(certificates=(), groups=("X25519MLKEM768", "x25519", "SecP256r1MLKEM768", "secp256r1"))
    assert setup.unavailable_groups(sec) == ["X25519MLKEM768", "SecP256r1MLKEM768"]
    monkeypatch.setattr(setup, "load_credentials", lambda _: _creds())
    log = _Log()
    config = secured_main.load_config(sec, log)  # type: ignore[arg-type]
    assert tuple(config.groups) == (X25519, P256)
    assert log.warnings == [("groups unavailable", {"groups": ["X25519MLKEM768", "SecP256r1MLKEM768"],
                                                    "reason": "this cryptography has no ML-KEM (it needs OpenSSL 3.5 or later)"})]
    monkeypatch.setattr(secured_main, "secured_settings", lambda _: (None, sec))
    secured_main.reload_config(None, config, log)  # type: ignore[arg-type]
    assert len(log.warnings) == 2 and log.warnings[1] == log.warnings[0]


@pytest.mark.usefixtures("no_mlkem")
def test_without_mlkem_no_warning_when_no_hybrid_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup, "load_credentials", lambda _: _creds())
    log = _Log()
    secured_main.load_config(_settings(groups=("x25519",)), log)  # type: ignore[arg-type]
    assert log.warnings == []


@pytest.mark.usefixtures("no_mlkem")
def test_only_hybrids_without_mlkem_is_its_own_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        setup.server_config(_settings(groups=("X25519MLKEM768", "SecP256r1MLKEM768")), credentials=_creds())
    assert "lists only hybrids" in str(exc.value) and "unsupported or empty" not in str(exc.value)
    assert "\n" not in str(exc.value)


def test_require_serves_tls13_only_whatever_versions_lists() -> None:
    from tests.tls12client import Client12

    config = setup.server_config(_settings(post_quantum="require"), credentials=_creds())
    assert config.versions == frozenset({0x0304})
    hs = ServerHandshake(config)
    with pytest.raises(LocalAlert) as exc:  # a TLS 1.2 client: no version in common, as with versions = ["1.3"]
        hs.receive_data(Client12().client_hello_record())
    assert exc.value.description == AD.protocol_version
    assert setup.server_config(_settings(), credentials=_creds()).versions == frozenset({0x0303, 0x0304})


@pytest.mark.usefixtures("no_mlkem")
def test_require_without_mlkem_is_refused() -> None:
    with pytest.raises(ConfigError, match="no ML-KEM"):
        setup.server_config(_settings(post_quantum="require"), credentials=_creds())


@pytest.mark.usefixtures("no_mlkem")
def test_server_config_refuses_hybrids_without_mlkem() -> None:
    """A ServerConfig built without setup.py cannot list a hybrid it could only answer with internal_error;
    by default it lists the groups that can run."""
    with pytest.raises(ValueError, match="need ML-KEM"):
        server_config(groups=(X25519MLKEM768, X25519))
    assert tuple(server_config().groups) == groups.CLASSICAL_GROUPS

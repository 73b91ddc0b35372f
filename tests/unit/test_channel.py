"""shared.channel: message codec, hello key agreement, and the order checker."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tls_privsep.shared import channel as C
from tls_privsep.shared.blob import MAX_BLOB
from tls_privsep.shared.errors import ChannelError
from tls_privsep.shared.state import TrafficState

SETTINGS = settings(max_examples=200, deadline=None)
PK = bytes(range(32))

EXAMPLES: list[C.Message] = [
    C.Hello(versions=[1], public_key=PK, role="appd"),
    C.Hello(versions=[1, 2, 7], public_key=PK, role="secured"),
    C.Open(conn=1, peer="[2001:db8::1]:443", data=b"\x16\x03\x01\x00\x05hello"),
    C.Open(conn=2, peer="", data=b"x"),
    C.Hs(conn=1, data=b"\x16\x03\x01\x00\x05hello", consumed=0),
    C.Hs(conn=2**64 - 1, data=b"", consumed=10),
    C.Done(conn=3, data=b"tickets", consumed=5, blob=b"\xa4sealed"),
    C.Fail(conn=4, data=b"\x15\x03\x03\x00\x02\x02\x28", reason="handshake_failure"),
    C.Abort(conn=5),
    C.Error(reason="no_common_version"),
]


def wire(d: object) -> bytes:
    return cbor2.dumps(d, canonical=True)


def decode_reason(datagram: bytes) -> str:
    with pytest.raises(ChannelError) as ei:
        C.decode(datagram)
    return ei.value.reason


# ------------------------------------------------------------------ codec


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(msg: C.Message) -> None:
    data = msg.encode()
    assert C.decode(data) == msg
    assert C.decode(data).encode() == data


def test_golden_encoding() -> None:
    assert C.Abort(conn=5).encode() == b"\xa2\x61c\x05\x61t\x65abort"
    assert C.Hs(conn=1, data=b"x", consumed=0).encode() == b"\xa4\x61c\x01\x61d\x41x\x61t\x62hs\x61u\x00"


def test_reprs_hide_payloads() -> None:
    assert "sealed" not in repr(C.Done(conn=1, data=b"", consumed=0, blob=b"sealed"))
    assert PK.hex() not in repr(EXAMPLES[0])


def test_oversize_refused_before_parsing() -> None:
    assert decode_reason(b"\xff" * (C.MAX_MESSAGE + 1)) == "oversize"
    with pytest.raises(ChannelError) as ei:
        C.Hs(conn=1, data=b"x" * C.MAX_MESSAGE).encode()
    assert ei.value.reason == "oversize"


def test_a_flight_and_a_full_blob_fit() -> None:
    # The largest `done`: tickets (capped at 48 KiB by the engine) plus a full blob and the alert.
    C.Done(conn=1, data=b"x" * (48 * 1024), consumed=0, blob=b"b" * MAX_BLOB, alert=b"a" * 22).encode()


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (C.Abort(conn=5).encode() + b"\x00", "trailing_bytes"),
        (b"\xa3\x61c\x05\x61c\x05\x61t\x65abort", "duplicate_key"),
        (b"\xbf\x61c\x05\x61t\x65abort\xff", "indefinite_length"),
        (b"\xa2\x61c\x05\x61t\x7f\x65abort\xff", "indefinite_length"),
        (b"\xa2\x61c\xc2\x41\x05\x61t\x65abort", "tag"),
        (b"\xd9\xd9\xf7" + C.Abort(conn=5).encode(), "tag"),
        (b"\xa2\x61c\x18\x05\x61t\x65abort", "non_canonical"),
        (b"\xa2\x61t\x65abort\x61c\x05", "non_canonical"),
        (b"\xa2\x61c\xfa\x40\xa0\x00\x00\x61t\x65abort", "malformed"),
        (b"", "malformed"),
        (wire([1, 2]), "not_a_map"),
        (wire({"c": 5}), "missing_field"),
        (wire({"t": 1, "c": 5}), "wrong_type"),
        (wire({"t": "nope", "c": 5}), "unknown_type"),
        (wire({"t": "abort"}), "missing_field"),
        (wire({"t": "abort", "c": 5, "x": 1}), "extra_field"),
        (wire({"t": "abort", "c": "5"}), "wrong_type"),
        (wire({"t": "abort", "c": True}), "wrong_type"),
        (wire({"t": "abort", "c": 0}), "bad_value"),
        (wire({"t": "abort", "c": -1}), "bad_value"),
        (wire({"t": "hs", "c": 1, "d": "text", "u": 0}), "wrong_type"),
        (wire({"t": "hs", "c": 1, "d": b"", "u": C.MAX_MESSAGE + 1}), "bad_value"),
        (wire({"t": "hello", "vs": [1], "pk": b"k" * 31, "role": "appd"}), "bad_value"),
        (wire({"t": "hello", "vs": [], "pk": PK, "role": "appd"}), "bad_value"),
        (wire({"t": "hello", "vs": [1, 1], "pk": PK, "role": "appd"}), "bad_value"),
        (wire({"t": "hello", "vs": [0], "pk": PK, "role": "appd"}), "bad_value"),
        (wire({"t": "hello", "vs": ["1"], "pk": PK, "role": "appd"}), "wrong_type"),
        (wire({"t": "hello", "vs": 1, "pk": PK, "role": "appd"}), "wrong_type"),
        (wire({"t": "hello", "vs": [1], "pk": PK, "role": "root"}), "bad_value"),
        (wire({"t": "fail", "c": 1, "d": b"", "why": "Has Spaces"}), "bad_value"),
        (wire({"t": "fail", "c": 1, "d": b"", "why": ""}), "bad_value"),
        (wire({"t": "error", "why": "x" * 65}), "bad_value"),
        (wire({"t": "open", "c": 1, "peer": "a\nb", "d": b"x"}), "bad_value"),
        (wire({"t": "open", "c": 1, "peer": "", "d": b""}), "bad_value"),  # open carries the first records
        (wire({"t": "open", "c": 1, "peer": ""}), "missing_field"),
        (wire({"t": "done", "c": 1, "d": b"", "u": 0, "b": b"", "a": b""}), "bad_value"),
    ],
)
def test_decode_strictness(datagram: bytes, reason: str) -> None:
    assert decode_reason(datagram) == reason


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(ChannelError):
        C.decode("text")  # type: ignore[arg-type]


def test_encode_validates_like_decode() -> None:
    for bad in (C.Abort(conn=0), C.Error(reason="Upper"), C.Hello(versions=[], public_key=PK, role="appd")):
        with pytest.raises(ChannelError):
            bad.encode()


@SETTINGS
@given(st.binary(max_size=1024))
def test_random_bytes_only_channel_error(data: bytes) -> None:
    try:
        msg = C.decode(data)
    except ChannelError:
        return
    assert msg.encode() == data  # the rare valid one must be canonical


@SETTINGS
@given(
    conn=st.integers(1, 2**64 - 1),
    data=st.binary(max_size=300),
    consumed=st.integers(0, C.MAX_MESSAGE),
    reason=st.from_regex(r"[a-z0-9_.\-]{1,64}", fullmatch=True),
)
def test_round_trip_property(conn: int, data: bytes, consumed: int, reason: str) -> None:
    for msg in (
        C.Hs(conn=conn, data=data, consumed=consumed),
        C.Done(conn=conn, data=data, consumed=consumed, blob=data or b"x"),
        C.Fail(conn=conn, data=data, reason=reason),
    ):
        assert C.decode(msg.encode()) == msg


# ------------------------------------------------------------------ key agreement


def hellos() -> tuple[X25519PrivateKey, bytes, X25519PrivateKey, bytes]:
    a_priv, s_priv = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    return (
        a_priv,
        C.make_hello(a_priv, "appd").encode(),
        s_priv,
        C.make_hello(s_priv, "secured").encode(),
    )


def test_both_sides_derive_the_same_keys() -> None:
    a_priv, a_hello, s_priv, s_hello = hellos()
    at_appd = C.ChannelKeys.derive(a_priv, a_hello, s_hello)
    at_secured = C.ChannelKeys.derive(s_priv, s_hello, a_hello)
    assert at_appd.blob_key == at_secured.blob_key and len(at_appd.blob_key) == 32
    assert at_appd.channel_id == at_secured.channel_id and len(at_appd.channel_id) == 16
    assert at_appd.version == C.CHANNEL_VERSION == 3
    assert at_appd.blob_key.hex() not in repr(at_appd)
    state = TrafficState(0x1301, bytearray(b"r" * 32), bytearray(b"w" * 32))
    got = at_appd.opener().open(at_secured.sealer().seal(state, 9), 9)
    assert got.read_secret == state.read_secret


def test_different_hellos_give_different_keys() -> None:
    a_priv, a_hello, _s_priv, s_hello = hellos()
    first = C.ChannelKeys.derive(a_priv, a_hello, s_hello)
    # same keys, different hello contents (extra version offered): transcript binding
    a_hello2 = C.make_hello(a_priv, "appd", versions=(2, 3)).encode()
    second = C.ChannelKeys.derive(a_priv, a_hello2, s_hello)
    assert first.blob_key != second.blob_key and first.channel_id != second.channel_id
    # a fresh ephemeral key on one side
    _, _, _s_priv3, s_hello3 = hellos()
    third = C.ChannelKeys.derive(a_priv, a_hello, s_hello3)
    assert third.blob_key not in (first.blob_key, second.blob_key)


def test_version_negotiation() -> None:
    a_priv, _, s_priv, _ = hellos()
    a_hello = C.make_hello(a_priv, "appd", versions=(1, 2, 3)).encode()
    s_hello = C.make_hello(s_priv, "secured", versions=(2, 3, 4)).encode()
    assert C.ChannelKeys.derive(a_priv, a_hello, s_hello, supported=(1, 2)).version == 2
    with pytest.raises(ChannelError) as ei:
        C.ChannelKeys.derive(a_priv, a_hello, s_hello, supported=(1,))
    assert ei.value.reason == "no_common_version"


@pytest.mark.parametrize("old", [1, 2])
def test_older_peer_is_refused(old: int) -> None:
    """Version 1 sent ``open`` without data; version 2's ``done`` carried blob version 1, which cannot hold a
    TLS 1.2 state: a daemon of either release and one of this must not pair, whichever side is older."""
    a_priv, a_hello, s_priv, s_hello = hellos()
    old_appd = C.make_hello(a_priv, "appd", versions=(old,)).encode()
    with pytest.raises(ChannelError) as ei:
        C.ChannelKeys.derive(s_priv, s_hello, old_appd)
    assert ei.value.reason == "no_common_version"
    old_secured = C.make_hello(s_priv, "secured", versions=(old,)).encode()
    with pytest.raises(ChannelError) as ei:
        C.ChannelKeys.derive(a_priv, a_hello, old_secured)
    assert ei.value.reason == "no_common_version"


def test_derive_refusals() -> None:
    a_priv, a_hello, _s_priv, s_hello = hellos()
    cases = [
        (a_priv, a_hello, a_hello, "role_mismatch"),
        (a_priv, s_hello, a_hello, "hello_mismatch"),  # own hello carries the other key
        (a_priv, a_hello, C.Abort(conn=1).encode(), "hello_expected"),
        (a_priv, a_hello, b"\x00", "not_a_map"),
    ]
    for priv, own, peer, reason in cases:
        with pytest.raises(ChannelError) as ei:
            C.ChannelKeys.derive(priv, own, peer)
        assert ei.value.reason == reason


@pytest.mark.parametrize(
    "public_key",
    [
        bytes(32),  # the zero point
        (1).to_bytes(32, "little"),  # order 1
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # order 8
    ],
)
def test_low_order_public_key_refused(public_key: bytes) -> None:
    a_priv = X25519PrivateKey.generate()
    a_hello = C.make_hello(a_priv, "appd").encode()
    evil = C.Hello(versions=[C.CHANNEL_VERSION], public_key=public_key, role="secured").encode()
    with pytest.raises(ChannelError) as ei:
        C.ChannelKeys.derive(a_priv, a_hello, evil)
    assert ei.value.reason == "bad_public_key"


class _ZeroExchange:
    """Stands in for a private key whose exchange yields all zeros (a backend that does not refuse)."""

    def __init__(self, real: X25519PrivateKey) -> None:
        self._real = real

    def public_key(self) -> object:
        return self._real.public_key()

    def exchange(self, peer: object) -> bytes:
        return bytes(32)


def test_all_zero_shared_secret_refused() -> None:
    a_priv, a_hello, _, s_hello = hellos()
    with pytest.raises(ChannelError) as ei:
        C.ChannelKeys.derive(_ZeroExchange(a_priv), a_hello, s_hello)  # type: ignore[arg-type]
    assert ei.value.reason == "bad_public_key"


# ------------------------------------------------------------------ order checker


def ready_pair() -> tuple[C.ChannelState, C.ChannelState]:
    appd, secured = C.ChannelState("appd"), C.ChannelState("secured")
    deliver(appd, secured, C.Hello(versions=[1], public_key=PK, role="appd"))
    deliver(secured, appd, C.Hello(versions=[1], public_key=PK, role="secured"))
    assert appd.ready and secured.ready
    return appd, secured


def deliver(sender: C.ChannelState, receiver: C.ChannelState, msg: C.Message) -> bool:
    """Send through the sender's checker, the wire codec, and the receiver's checker."""
    sender.send(msg)
    return receiver.receive(C.decode(msg.encode()))


def violation(state: C.ChannelState, msg: C.Message, incoming: bool = True) -> str:
    with pytest.raises(ChannelError) as ei:
        state.receive(msg) if incoming else state.send(msg)
    return ei.value.reason


def test_full_handshake_flow() -> None:
    appd, secured = ready_pair()
    c = appd.next_conn_id()
    assert c == 1
    assert deliver(appd, secured, C.Open(conn=c, peer="192.0.2.1:5000", data=b"x" * 100))
    assert deliver(secured, appd, C.Hs(conn=c, data=b"sh", consumed=100))
    assert deliver(appd, secured, C.Hs(conn=c, data=b"y" * 80))
    assert deliver(secured, appd, C.Done(conn=c, data=b"t", consumed=60, blob=b"b"))
    assert appd.open_conns == secured.open_conns == 0
    assert appd.next_conn_id() == 2


def test_multiplexed_connections() -> None:
    appd, secured = ready_pair()
    for c in (1, 2, 3):
        deliver(appd, secured, C.Open(conn=c, peer="", data=b"ch"))
    deliver(secured, appd, C.Fail(conn=2, data=b"alert", reason="bad_certificate"))
    deliver(secured, appd, C.Hs(conn=3, data=b"", consumed=2))
    deliver(appd, secured, C.Abort(conn=3))
    assert secured.is_open(1) and not secured.is_open(2) and not secured.is_open(3)
    assert appd.open_conns == secured.open_conns == 1


def test_hello_rules() -> None:
    appd = C.ChannelState("appd")
    assert violation(appd, C.Open(conn=1, peer="", data=b"x"), incoming=False) == "hello_expected"
    assert violation(appd, C.Hello(versions=[1], public_key=PK, role="appd")) == "role_mismatch"
    assert violation(appd, C.Hello(versions=[1], public_key=PK, role="secured"), incoming=False) == "role_mismatch"
    appd.send(C.Hello(versions=[1], public_key=PK, role="appd"))
    assert violation(appd, C.Hello(versions=[1], public_key=PK, role="appd"), incoming=False) == "duplicate_hello"
    assert violation(appd, C.Open(conn=1, peer="", data=b"x"), incoming=False) == "hello_expected"  # not received yet
    appd.receive(C.Hello(versions=[1], public_key=PK, role="secured"))
    assert violation(appd, C.Hello(versions=[1], public_key=PK, role="secured")) == "duplicate_hello"
    secured = C.ChannelState("secured")
    secured.receive(C.Hello(versions=[1], public_key=PK, role="appd"))
    assert violation(secured, C.Hs(conn=1, data=b"")) == "hello_expected"


def test_conn_ids_are_consecutive() -> None:
    appd, secured = ready_pair()
    assert violation(secured, C.Open(conn=2, peer="", data=b"x")) == "bad_conn_id"
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"x"))
    assert violation(secured, C.Open(conn=1, peer="", data=b"x")) == "bad_conn_id"  # reuse
    deliver(appd, secured, C.Abort(conn=1))
    assert violation(secured, C.Open(conn=1, peer="", data=b"x")) == "bad_conn_id"  # reuse after retirement


def test_direction_rules() -> None:
    appd, secured = ready_pair()
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"x"))
    assert violation(secured, C.Done(conn=1, data=b"", consumed=0, blob=b"b")) == "wrong_direction"
    assert violation(secured, C.Fail(conn=1, data=b"", reason="x")) == "wrong_direction"
    assert violation(appd, C.Open(conn=2, peer="", data=b"x")) == "wrong_direction"
    assert violation(appd, C.Abort(conn=1)) == "wrong_direction"
    assert violation(secured, C.Abort(conn=1), incoming=False) == "wrong_direction"


def test_turn_rules() -> None:
    appd, secured = ready_pair()
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"x"))  # open is appd's first hs: secured answers
    assert violation(secured, C.Hs(conn=1, data=b"x")) == "wrong_turn"  # appd twice in a row
    assert violation(appd, C.Hs(conn=1, data=b"x"), incoming=False) == "wrong_turn"
    deliver(secured, appd, C.Hs(conn=1, data=b"sh", consumed=1))
    assert violation(appd, C.Hs(conn=1, data=b"", consumed=0)) == "wrong_turn"  # secured twice in a row
    assert violation(appd, C.Done(conn=1, data=b"", consumed=0, blob=b"b")) == "wrong_turn"
    assert violation(secured, C.Hs(conn=1, data=b"x"), incoming=False) == "wrong_turn"


def test_consumed_rules() -> None:
    appd, secured = ready_pair()
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"abc"))
    assert violation(appd, C.Hs(conn=1, data=b"", consumed=4)) == "bad_consumed"
    assert violation(appd, C.Done(conn=1, data=b"", consumed=4, blob=b"b")) == "bad_consumed"
    deliver(secured, appd, C.Hs(conn=1, data=b"sh", consumed=3))
    assert violation(secured, C.Hs(conn=1, data=b"x", consumed=1)) == "bad_consumed"  # appd's carry 0
    deliver(appd, secured, C.Hs(conn=1, data=b"de"))
    assert violation(appd, C.Done(conn=1, data=b"", consumed=3, blob=b"b")) == "bad_consumed"  # of the last 2
    assert deliver(secured, appd, C.Done(conn=1, data=b"", consumed=2, blob=b"b"))


def test_unknown_and_retired_conns() -> None:
    appd, secured = ready_pair()
    assert violation(secured, C.Hs(conn=1, data=b"")) == "unknown_conn"  # never opened
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"x"))
    deliver(secured, appd, C.Fail(conn=1, data=b"", reason="timeout"))
    # the sender's own checker is strict about retired ids ...
    assert violation(secured, C.Hs(conn=1, data=b""), incoming=False) == "unknown_conn"
    assert violation(appd, C.Hs(conn=1, data=b""), incoming=False) == "unknown_conn"
    # ... the receiver drops late messages for them (they cross on the wire)
    assert appd.receive(C.Done(conn=1, data=b"", consumed=0, blob=b"b")) is False
    assert violation(appd, C.Hs(conn=2, data=b"")) == "unknown_conn"


def test_crossing_abort_and_reply() -> None:
    appd, secured = ready_pair()
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"x"))
    # appd aborts while secured's done is already on its way
    appd.send(C.Abort(conn=1))
    done = C.Done(conn=1, data=b"", consumed=1, blob=b"b")
    secured.send(done)
    assert appd.receive(done) is False
    assert secured.receive(C.Abort(conn=1)) is False


def test_crossing_hs_and_unsolicited_fail() -> None:
    appd, secured = ready_pair()
    deliver(appd, secured, C.Open(conn=1, peer="", data=b"x"))
    deliver(secured, appd, C.Hs(conn=1, data=b"", consumed=1))
    hs = C.Hs(conn=1, data=b"more")
    appd.send(hs)
    fail = C.Fail(conn=1, data=b"", reason="timeout")  # secured gives up on appd's turn
    secured.send(fail)
    assert secured.receive(hs) is False
    assert appd.receive(fail) is True


def test_error_closes_the_channel() -> None:
    appd, secured = ready_pair()
    deliver(secured, appd, C.Error(reason="shutting_down"))
    assert appd.closed and secured.closed and not appd.ready
    assert violation(appd, C.Open(conn=1, peer="", data=b"x"), incoming=False) == "closed"
    assert violation(secured, C.Open(conn=1, peer="", data=b"x")) == "closed"
    fresh = C.ChannelState("secured")
    assert fresh.receive(C.Error(reason="bad_peer")) is True  # allowed before hello too


def test_transition_table_is_complete_for_conn_messages() -> None:
    """Every (sender, conn message) pair has at least one legal turn, and only legal senders."""
    for (sender, t, _turn), _nxt in C.TRANSITIONS.items():
        assert sender in C.SENDERS[t]
    pairs = {(s, t) for (s, t, _) in C.TRANSITIONS}
    assert pairs == {
        ("appd", "hs"),
        ("appd", "abort"),
        ("secured", "hs"),
        ("secured", "done"),
        ("secured", "fail"),
    }


_MSGS = st.one_of(
    st.builds(C.Hello, versions=st.just([1]), public_key=st.just(PK), role=st.sampled_from(["appd", "secured"])),
    st.builds(C.Open, conn=st.integers(1, 4), peer=st.just("")),
    st.builds(C.Hs, conn=st.integers(1, 4), data=st.binary(max_size=4), consumed=st.integers(0, 4)),
    st.builds(C.Done, conn=st.integers(1, 4), data=st.just(b""), consumed=st.integers(0, 4), blob=st.just(b"b")),
    st.builds(C.Fail, conn=st.integers(1, 4), data=st.just(b""), reason=st.just("x")),
    st.builds(C.Abort, conn=st.integers(1, 4)),
    st.builds(C.Error, reason=st.just("x")),
)


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), _MSGS), max_size=30), st.sampled_from(["appd", "secured"]))
def test_random_sequences_only_channel_error(steps: list[tuple[bool, C.Message]], role: C.Role) -> None:
    state = C.ChannelState(role)
    for incoming, msg in steps:
        try:
            if incoming:
                assert state.receive(msg) in (True, False)
            else:
                state.send(msg)
        except ChannelError:
            continue
        assert state.open_conns <= state.next_conn_id() - 1

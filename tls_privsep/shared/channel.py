"""The secured<->appd channel: message codec, hello key agreement, order checker (DESIGN.md §3).

Pure: a trio transport sends ``msg.encode()`` as one SOCK_SEQPACKET datagram and feeds every datagram
it receives to :func:`decode`. Both directions pass through a :class:`ChannelState` so that a peer
breaking the protocol is caught at the boundary. Every violation is a :class:`ChannelError` whose
``reason`` is stable (docs/channel.md lists them); the channel is then closed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tls_privsep.shared.blob import CHANNEL_ID_LEN, KEY_LEN, UINT64_MAX, BlobOpener, BlobSealer
from tls_privsep.shared.cbor import CBORFault
from tls_privsep.shared.cbor import decode as cbor_decode
from tls_privsep.shared.cbor import encode as cbor_encode
from tls_privsep.shared.errors import ChannelError

MAX_MESSAGE = 192 * 1024  # below Linux's default SEQPACKET limit (wmem_default, ~208 KiB)
"""Hard cap on one datagram, checked before parsing. A TLS flight plus a blob fits with room to spare."""
# 2: ``open`` carries the client's first records (one datagram less per handshake). 3: ``done`` carries blob
# version 2, which may hold a TLS 1.2 state; an appd of version 2 would refuse every such blob, so the pair
# fails at the hello instead (no_common_version), before any client is let in.
CHANNEL_VERSION = 3
SUPPORTED_VERSIONS: tuple[int, ...] = (CHANNEL_VERSION,)
PUBLIC_KEY_LEN = 32
MAX_VERSIONS = 16
MAX_REASON = 64
MAX_PEER = 256
KDF_LABEL = b"tls-privsep channel v1"

Role: TypeAlias = Literal["appd", "secured"]
ROLES: tuple[Role, Role] = ("appd", "secured")

_REASON_RE = re.compile(rf"[a-z0-9_.\-]{{1,{MAX_REASON}}}")


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """First message each way: offered channel versions, ephemeral X25519 key, sender's role."""

    versions: list[int]
    public_key: bytes = field(repr=False)
    role: Role
    TYPE: ClassVar[str] = "hello"

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True)
class Open:
    """appd -> secured: a new connection ``conn`` (ids 1, 2, 3, ... per channel) from ``peer``, with the
    client's first whole records: it is the connection's first ``hs`` too, so secured answers it."""

    conn: int
    peer: str
    data: bytes = field(repr=False)
    TYPE: ClassVar[str] = "open"

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True)
class Hs:
    """Handshake bytes. appd -> secured: client bytes, consumed = 0. secured -> appd: bytes to write,
    and how many of appd's last input bytes the engine used."""

    conn: int
    data: bytes = field(repr=False)
    consumed: int = 0
    TYPE: ClassVar[str] = "hs"

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True)
class Done:
    """secured -> appd: handshake finished. Write ``data``, feed input[consumed:] to the record layer."""

    conn: int
    data: bytes = field(repr=False)
    consumed: int
    blob: bytes = field(repr=False)
    # An internal_error alert record sealed at the write sequence number that follows ``data``:
    # if the blob is refused, appd still closes the connection with a proper alert (it has no key).
    alert: bytes = field(repr=False, default=b"")
    TYPE: ClassVar[str] = "done"

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True)
class Fail:
    """secured -> appd: handshake failed. Write ``data`` (the alert record), then close."""

    conn: int
    data: bytes = field(repr=False)
    reason: str
    TYPE: ClassVar[str] = "fail"

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True)
class Abort:
    """appd -> secured: the client went away; forget the connection."""

    conn: int
    TYPE: ClassVar[str] = "abort"

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True)
class Error:
    """Either way: channel-level failure; the sender closes the channel after it."""

    reason: str
    TYPE: ClassVar[str] = "error"

    def encode(self) -> bytes:
        return _encode(self)


Message: TypeAlias = Hello | Open | Hs | Done | Fail | Abort | Error


# --------------------------------------------------------------------------------------------------
# Codec: one schema table drives encode and decode
# --------------------------------------------------------------------------------------------------


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_conn(v: int) -> bool:
    return 1 <= v <= UINT64_MAX


def _check_versions(v: list[int]) -> bool:
    return 1 <= len(v) <= MAX_VERSIONS and len(set(v)) == len(v) and all(1 <= x <= 0xFFFF for x in v)


@dataclass(frozen=True)
class _Field:
    attr: str
    key: str
    type_ok: Callable[[object], bool]
    value_ok: Callable[[Any], bool]


_CONN = _Field("conn", "c", _is_int, _check_conn)
_DATA = _Field("data", "d", lambda v: isinstance(v, bytes), lambda v: True)
_CONSUMED = _Field("consumed", "u", _is_int, lambda v: 0 <= v <= MAX_MESSAGE)
_REASON = _Field("reason", "why", lambda v: isinstance(v, str), lambda v: _REASON_RE.fullmatch(v) is not None)

_SCHEMA: dict[str, tuple[type[Message], tuple[_Field, ...]]] = {
    "hello": (
        Hello,
        (
            _Field(
                "versions",
                "vs",
                lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
                _check_versions,
            ),
            _Field("public_key", "pk", lambda v: isinstance(v, bytes), lambda v: len(v) == PUBLIC_KEY_LEN),
            _Field("role", "role", lambda v: isinstance(v, str), lambda v: v in ROLES),
        ),
    ),
    "open": (
        Open,
        (
            _CONN,
            _Field(
                "peer",
                "peer",
                lambda v: isinstance(v, str),
                lambda v: len(v) <= MAX_PEER and v.isprintable(),
            ),
            _Field("data", "d", lambda v: isinstance(v, bytes), lambda v: len(v) > 0),
        ),
    ),
    "hs": (Hs, (_CONN, _DATA, _CONSUMED)),
    "done": (
        Done,
        (
            _CONN,
            _DATA,
            _CONSUMED,
            # Only the datagram cap here: the blob's own 64 KiB rule is BlobOpener's, so an oversize blob
            # is one refused connection (internal_error to its client), not a lost channel.
            _Field("blob", "b", lambda v: isinstance(v, bytes), lambda v: 1 <= len(v) <= MAX_MESSAGE),
            _Field("alert", "a", lambda v: isinstance(v, bytes), lambda v: len(v) <= 64),
        ),
    ),
    "fail": (Fail, (_CONN, _DATA, _REASON)),
    "abort": (Abort, (_CONN,)),
    "error": (Error, (_REASON,)),
}


def _check_field(f: _Field, value: object, t: str) -> None:
    if not f.type_ok(value):
        raise ChannelError("wrong_type", f"{t}.{f.key} is {type(value).__name__}")
    if not f.value_ok(value):
        raise ChannelError("bad_value", f"{t}.{f.key} out of range")


def _encode(msg: Message) -> bytes:
    """Validate with the same table the receiver uses, then encode; never emit what a peer refuses."""
    _, fields = _SCHEMA[msg.TYPE]
    wire: dict[str, object] = {"t": msg.TYPE}
    for f in fields:
        value = getattr(msg, f.attr)
        _check_field(f, value, msg.TYPE)
        wire[f.key] = value
    out = cbor_encode(wire)
    if len(out) > MAX_MESSAGE:
        raise ChannelError("oversize", f"{msg.TYPE} would be {len(out)} > {MAX_MESSAGE} bytes")
    return out


def decode(datagram: bytes) -> Message:
    """Parse one datagram strictly: size cap first, then canonical CBOR, then the message schema."""
    if not isinstance(datagram, (bytes, bytearray)):
        raise ChannelError("malformed", "datagram must be bytes")
    try:
        wire = cbor_decode(datagram, MAX_MESSAGE)
    except CBORFault as exc:
        raise ChannelError(exc.reason, str(exc)) from None
    if not isinstance(wire, dict):
        raise ChannelError("not_a_map")
    if "t" not in wire:
        raise ChannelError("missing_field", "t")
    t = wire["t"]
    if not isinstance(t, str):
        raise ChannelError("wrong_type", "t is not text")
    if t not in _SCHEMA:
        raise ChannelError("unknown_type", repr(t)[:40])
    cls, fields = _SCHEMA[t]
    expected = {"t"} | {f.key for f in fields}
    for f in fields:
        if f.key not in wire:
            raise ChannelError("missing_field", f"{t}.{f.key}")
    extra = set(wire) - expected
    if extra:
        raise ChannelError("extra_field", f"{t}: {repr(sorted(map(str, extra)))[:60]}")
    kwargs: dict[str, Any] = {}
    for f in fields:
        _check_field(f, wire[f.key], t)
        kwargs[f.attr] = wire[f.key]
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------------
# Key agreement
# --------------------------------------------------------------------------------------------------


def make_hello(private_key: X25519PrivateKey, role: Role, versions: tuple[int, ...] = SUPPORTED_VERSIONS) -> Hello:
    """Our Hello for a fresh ephemeral key (generate one per channel)."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Hello(versions=list(versions), public_key=raw, role=role)


def _as_hello(datagram: bytes, what: str) -> Hello:
    msg = decode(datagram)
    if not isinstance(msg, Hello):
        raise ChannelError("hello_expected", f"{what} is a {msg.TYPE}")
    return msg


@dataclass(frozen=True, eq=False)
class ChannelKeys:
    """What the hello exchange yields: the blob-sealing key, the channel id, the agreed version."""

    blob_key: bytes = field(repr=False)
    channel_id: bytes
    version: int

    @classmethod
    def derive(
        cls,
        own_private: X25519PrivateKey,
        own_hello: bytes,
        peer_hello: bytes,
        supported: tuple[int, ...] = SUPPORTED_VERSIONS,
    ) -> ChannelKeys:
        """X25519 + HKDF-SHA256 over both encoded hellos, appd's first, whichever side computes it.

        ``own_hello`` and ``peer_hello`` are the exact datagrams sent and received (deterministic
        encoding makes "exact" well defined). The roles must differ and the own hello must carry
        ``own_private``'s public key.
        """
        own = _as_hello(own_hello, "own hello")
        peer = _as_hello(peer_hello, "peer hello")
        if own.role == peer.role:
            raise ChannelError("role_mismatch", f"both hellos say {own.role}")
        mine = make_hello(own_private, own.role).public_key
        if mine != own.public_key:
            raise ChannelError("hello_mismatch", "own hello does not carry own public key")
        common = set(supported) & set(own.versions) & set(peer.versions)
        if not common:
            raise ChannelError("no_common_version")
        try:
            shared = own_private.exchange(X25519PublicKey.from_public_bytes(peer.public_key))
        except ValueError:  # cryptography refuses low-order points (all-zero result)
            raise ChannelError("bad_public_key", "X25519 exchange failed") from None
        if shared == bytes(len(shared)):
            raise ChannelError("bad_public_key", "all-zero shared secret")
        appd_hello, secured_hello = (own_hello, peer_hello) if own.role == "appd" else (peer_hello, own_hello)
        info = (
            KDF_LABEL
            + len(appd_hello).to_bytes(4, "big")
            + bytes(appd_hello)
            + len(secured_hello).to_bytes(4, "big")
            + bytes(secured_hello)
        )
        okm = HKDF(hashes.SHA256(), KEY_LEN + CHANNEL_ID_LEN, salt=None, info=info).derive(shared)
        return cls(blob_key=okm[:KEY_LEN], channel_id=okm[KEY_LEN:], version=max(common))

    def sealer(self) -> BlobSealer:
        return BlobSealer(self.blob_key, self.channel_id)

    def opener(self) -> BlobOpener:
        return BlobOpener(self.blob_key, self.channel_id)


# --------------------------------------------------------------------------------------------------
# Order checker (h11 _state.py style: one transition table)
# --------------------------------------------------------------------------------------------------


class HelloExchange:
    """A channel's first step, as both sides take it: our hello out, the peer's in, the keys.

    Pure: the caller sends :attr:`datagram` and hands the peer's first datagram to :meth:`finish`;
    the returned :class:`ChannelState` has checked both hellos and orders everything after them.
    """

    def __init__(self, role: Role) -> None:
        self._private = X25519PrivateKey.generate()
        self.state = ChannelState(role)
        hello = make_hello(self._private, role)
        self.state.send(hello)
        self.datagram = hello.encode()

    def finish(self, peer_datagram: bytes) -> ChannelKeys:
        if not peer_datagram:
            raise ChannelError("closed", "peer closed before hello")
        self.state.receive(decode(peer_datagram))
        return ChannelKeys.derive(self._private, self.datagram, peer_datagram)


class Turn(enum.Enum):
    """Whose move it is on an open connection. The handshake strictly alternates."""

    APPD = "appd"  # after each secured hs: appd sends the next client bytes
    SECURED = "secured"  # after open and after each appd hs: secured answers with hs, done or fail


# Which role may send each message type.
SENDERS: dict[str, frozenset[Role]] = {
    "hello": frozenset(ROLES),
    "error": frozenset(ROLES),
    "open": frozenset({"appd"}),
    "hs": frozenset(ROLES),
    "abort": frozenset({"appd"}),
    "done": frozenset({"secured"}),
    "fail": frozenset({"secured"}),
}

# (sender, type, turn) -> next turn, or None: the connection id is retired.
TRANSITIONS: dict[tuple[Role, str, Turn], Turn | None] = {
    ("appd", "hs", Turn.APPD): Turn.SECURED,
    ("appd", "abort", Turn.APPD): None,
    ("appd", "abort", Turn.SECURED): None,
    ("secured", "hs", Turn.SECURED): Turn.APPD,
    ("secured", "done", Turn.SECURED): None,
    ("secured", "fail", Turn.SECURED): None,
    ("secured", "fail", Turn.APPD): None,  # secured may give up at any time (limits, age)
}


@dataclass
class _Conn:
    turn: Turn
    pending: int = 0  # length of appd's last hs data, the most secured may report consumed


class ChannelState:
    """Validates the order of messages on one channel, as seen by ``role``.

    Call :meth:`send` before sending and :meth:`receive` after decoding; both raise ChannelError on a
    violation. :meth:`receive` returns False for a message about a connection that this side has
    already retired: such messages cross on the wire (abort vs. done, hs vs. fail) and are dropped,
    not errors. Messages must be sent in the order they pass :meth:`send`.
    """

    def __init__(self, role: Role) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.role: Role = role
        self.peer_role: Role = "secured" if role == "appd" else "appd"
        self.hello_sent = False
        self.hello_received = False
        self.closed = False
        self._conns: dict[int, _Conn] = {}
        self._max_conn = 0

    @property
    def ready(self) -> bool:
        """Both hellos have passed: connection messages are allowed."""
        return self.hello_sent and self.hello_received and not self.closed

    @property
    def open_conns(self) -> int:
        return len(self._conns)

    def is_open(self, conn: int) -> bool:
        return conn in self._conns

    def next_conn_id(self) -> int:
        """The id the next Open must carry (appd allocates ids consecutively from 1)."""
        return self._max_conn + 1

    def send(self, msg: Message) -> None:
        self._process(self.role, msg, incoming=False)

    def receive(self, msg: Message) -> bool:
        return self._process(self.peer_role, msg, incoming=True)

    def _process(self, sender: Role, msg: Message, incoming: bool) -> bool:
        t = msg.TYPE
        if self.closed:
            raise ChannelError("closed", f"{t} after error")
        if sender not in SENDERS[t]:
            raise ChannelError("wrong_direction", f"{sender} may not send {t}")
        if isinstance(msg, Error):
            self.closed = True
            return True
        if isinstance(msg, Hello):
            if msg.role != sender:
                raise ChannelError("role_mismatch", f"hello from {sender} says {msg.role}")
            if self.hello_received if incoming else self.hello_sent:
                raise ChannelError("duplicate_hello")
            if incoming:
                self.hello_received = True
            else:
                self.hello_sent = True
            return True
        if not (self.hello_sent and self.hello_received):
            raise ChannelError("hello_expected", f"{t} before both hellos")
        if isinstance(msg, Open):
            if msg.conn != self._max_conn + 1:
                raise ChannelError("bad_conn_id", f"open {msg.conn}, expected {self._max_conn + 1}")
            self._max_conn = msg.conn
            self._conns[msg.conn] = _Conn(Turn.SECURED, pending=len(msg.data))
            return True
        conn = self._conns.get(msg.conn)
        if conn is None:
            if incoming and 1 <= msg.conn <= self._max_conn:
                return False  # retired here, still in flight there: drop
            raise ChannelError("unknown_conn", f"{t} for connection {msg.conn}")
        key = (sender, t, conn.turn)
        if key not in TRANSITIONS:
            raise ChannelError("wrong_turn", f"{sender} {t} while {conn.turn.value} should speak")
        nxt = TRANSITIONS[key]
        if isinstance(msg, Hs) and sender == "appd":
            if msg.consumed != 0:
                raise ChannelError("bad_consumed", "appd hs carries consumed = 0")
            conn.pending = len(msg.data)
        elif isinstance(msg, (Hs, Done)) and msg.consumed > conn.pending:
            raise ChannelError("bad_consumed", f"consumed {msg.consumed} of {conn.pending} bytes")
        if nxt is None:
            del self._conns[msg.conn]
        else:
            conn.turn = nxt
        return True

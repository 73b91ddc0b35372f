"""The server handshake as a sans-IO state machine: TLS 1.3 here (RFC 8446 §2, §4), TLS 1.2 in handshake12.py.

``ServerHandshake`` takes the client's raw bytes (``receive_data``) and produces the bytes to write
(``data_to_send``). When the client's Finished has been verified it is ``complete``: the caller takes
the bytes that followed the Finished (``trailing``) and the session's traffic state (``export``, or
``export_with_fallback`` with an alert record sealed under it), after which the engine holds no
secret of the connection.

The whole flow is one table, ``TRANSITIONS`` at the end of this module: (state, client message) ->
(handler, the states it may move to), with RFC 8446 section references. The first ClientHello decides
the version (versions.py); for TLS 1.2 the connection moves to handshake12.py's engine and table, which
shares this engine's record layer and output (state ``TLS12``).

Errors follow h2's rule "queue the alert, then raise": on any failure the alert record is already in
``data_to_send()`` when the ``LocalAlert`` propagates, and the engine is closed for good.

Randomness, clock, ephemeral keys and the ticket sealer are injected, and each credential brings its
own signer (``credentials.Signer``), so RFC 8448's traces can be replayed byte for byte.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cryptography import x509

from tls_privsep.secured import groups, versions
from tls_privsep.secured import messages as m
from tls_privsep.secured.alpn import select as alpn_select
from tls_privsep.secured.credentials import Credential, CredentialStore
from tls_privsep.secured.groupchoice import PQ_POLICIES, PqPolicy, choose, ranking
from tls_privsep.secured.handshake12 import GROUPS12, Tls12Handshake
from tls_privsep.secured.peerauth import CLIENT_SIG_SCHEMES, ClientCertVerifier, verify_signature
from tls_privsep.secured.tickets import TicketState
from tls_privsep.shared import keyschedule as ks
from tls_privsep.shared.errors import (
    Alert,
    AlertDescription,
    AlertLevel,
    CertificateRequired,
    DecodeError,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    InternalError,
    LocalAlert,
    MissingExtension,
    PeerAlert,
    ProtocolVersion,
    UnexpectedMessage,
)
from tls_privsep.shared.record import (
    MAX_CLIENT_HELLO,
    ChangeCipherSpec,
    CloseNotify,
    ContentType,
    HandshakeMessage,
    HandshakeType,
    Phase,
    RecordLayer,
)
from tls_privsep.shared.state import TLS12, TLS13, TrafficState
from tls_privsep.shared.tls12 import DEFAULT_SUITES12, SUITES12

ClientAuth = Literal["none", "optional", "required"]
EphemeralFactory = groups.EphemeralFactory

DEFAULT_SUITES = (
    ks.CipherSuite.TLS_AES_128_GCM_SHA256,
    ks.CipherSuite.TLS_AES_256_GCM_SHA384,
    ks.CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)
MAX_TICKET_LIFETIME = 7 * 24 * 3600  # §4.6.1
# Tickets carry the client's chain; past this total they would crowd the channel's `done` message
# (which also carries the blob) and the 16-bit ticket field, so none are issued.
MAX_TICKET_BYTES = 48 * 1024


class TicketSealer(Protocol):
    def seal(self, state: TicketState) -> bytes | None: ...  # None: no ticket can be issued now
    def open(self, ticket: bytes) -> TicketState | None: ...


@dataclass
class ServerConfig:
    """Everything a handshake needs that does not change per connection."""

    credentials: CredentialStore
    cipher_suites: Sequence[int] = DEFAULT_SUITES  # TLS 1.3's, server preference order
    versions: frozenset[int] = frozenset({TLS12, TLS13})
    cipher_suites12: Sequence[int] = DEFAULT_SUITES12  # TLS 1.2's, server preference order (shared/tls12.py)
    require_ems: bool = True  # TLS 1.2: refuse a client without the extended master secret (RFC 7627)
    # Preference order within each kind (groupchoice.py); by default every group this cryptography can run.
    groups: Sequence[int] = field(default_factory=groups.available_groups)
    post_quantum: PqPolicy = "prefer"  # where the hybrids stand: prefer, require, off (groupchoice.py)
    alpn: Sequence[str] = ()  # server preference order; empty = ALPN not negotiated
    tickets: int = 2  # NewSessionTickets per full handshake
    ticket_keys: TicketSealer | None = None  # None: no tickets, no resumption
    ticket_lifetime: int = 7200
    allow_psk_ke: bool = False  # resumption without (EC)DHE, no forward secrecy
    client_auth: ClientAuth = "none"
    client_verifier: ClientCertVerifier | None = None
    hrr_cookie: bool = False
    early_data_skip_limit: int = 16384  # §4.2.10: how much rejected 0-RTT we skip
    # Body bytes of one client handshake message. The default is the largest ClientHello there can
    # be, which no setting raises (_check_header); a larger value only admits a larger client
    # Certificate.
    max_handshake_message: int = MAX_CLIENT_HELLO
    max_handshake_records: int = 64  # records a client may send before its Finished (see docs/configuration.md)

    def __post_init__(self) -> None:
        unknown = [s for s in self.cipher_suites if s not in ks.SUITES]
        if unknown or not self.cipher_suites:
            raise ValueError(f"unsupported cipher suites {unknown}")
        if not groups.hybrids_available() and any(groups.is_hybrid(g) for g in self.groups):
            # Refused here, not at the first hybrid share: without ML-KEM, groups.respond() would raise
            # UnsupportedAlgorithm mid-handshake, which the engine can only answer with internal_error.
            raise ValueError("hybrid groups need ML-KEM, which this cryptography lacks (OpenSSL 3.5 or later)")
        if self.post_quantum not in PQ_POLICIES:
            raise ValueError(f"post_quantum must be one of {', '.join(PQ_POLICIES)}")
        if not ranking(self.groups, self.post_quantum):
            kind = "a hybrid" if self.post_quantum == "require" else "a classical group"
            raise ValueError(f"post_quantum = {self.post_quantum!r} needs {kind} in groups")
        if self.post_quantum == "require" and self.allow_psk_ke:
            # psk_ke resumes with no key exchange at all, so no hybrid either: the two contradict each other.
            raise ValueError("post_quantum = 'require' excludes allow_psk_ke (a psk_ke resumption has no key exchange)")
        if not self.versions or not self.versions <= {TLS12, TLS13}:
            raise ValueError("versions must be TLS 1.2 and/or TLS 1.3")
        if TLS12 in self.versions:
            unknown = [s for s in self.cipher_suites12 if s not in SUITES12]
            if unknown or not self.cipher_suites12:
                raise ValueError(f"unsupported TLS 1.2 cipher suites {unknown}")
            if not any(g in GROUPS12 for g in self.groups):
                raise ValueError("TLS 1.2 needs x25519 or secp256r1 in groups (the hybrids are TLS 1.3 only)")
            if not any(SUITES12[s].auth == c.kind for s in self.cipher_suites12 for c in self.credentials.credentials):
                kinds = "/".join(sorted({c.kind for c in self.credentials.credentials}))
                raise ValueError(f"no TLS 1.2 cipher suite listed fits the certificates ({kinds}): ECDHE-ECDSA suites "
                                 "need a P-256 or Ed25519 key, ECDHE-RSA suites an RSA key")
            if self.post_quantum == "require":
                raise ValueError("post_quantum = 'require' excludes TLS 1.2, which has no hybrid key exchange")
        if not self.groups or any(g not in groups.SUPPORTED_GROUPS for g in self.groups):
            raise ValueError("unsupported or empty group list")
        if self.client_auth != "none" and self.client_verifier is None:
            raise ValueError("client authentication needs a CA bundle")
        if not 0 < self.ticket_lifetime <= MAX_TICKET_LIFETIME:
            raise ValueError("ticket lifetime must be 1 s to 7 days")


class State(enum.Enum):
    """Where the server is: the client message it waits for. How states follow each other is
    ``TRANSITIONS`` (end of this module); CLOSED, after any failure, is outside it (``_close``), and
    TLS12 hands every later message to handshake12.py's table."""

    EXPECT_CLIENT_HELLO = "expect ClientHello"
    EXPECT_CLIENT_HELLO_2 = "expect second ClientHello"
    EXPECT_CERTIFICATE = "expect client Certificate"
    EXPECT_CERTIFICATE_VERIFY = "expect client CertificateVerify"
    EXPECT_FINISHED = "expect client Finished"
    COMPLETE = "complete"
    CLOSED = "closed"
    # The ClientHello chose TLS 1.2: handshake12.py's engine and table take every later message, and
    # this engine is ``complete`` when that one is. A terminal state of this table, like COMPLETE.
    TLS12 = "TLS 1.2 (handshake12.py)"


@dataclass
class HandshakeInfo:
    """What was negotiated, for logs (no secrets)."""

    version: int = TLS13
    suite: int | None = None
    group: int | None = None
    sig_scheme: int | None = None
    resumed: bool = False
    hrr: bool = False
    sni: str | None = None
    alpn: str | None = None
    cert_fingerprint: str | None = None
    client_cert: bool = False


@dataclass
class _Psk:
    index: int
    ticket: TicketState
    dhe: bool


@dataclass(repr=False)
class _Secrets:
    """Per-connection secrets held between messages; dropped at export or failure."""

    schedule: ks.KeySchedule
    client_hs: bytes = b""
    client_ap: bytes = b""
    server_ap: bytes = b""


class ServerHandshake:
    def __init__(
        self,
        config: ServerConfig,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
        ephemeral: EphemeralFactory = groups.generate,
    ) -> None:
        self._config = config
        self._rng = rng
        self._clock = clock
        self._ephemeral = ephemeral
        self._rl = RecordLayer(max_handshake_message=config.max_handshake_message + 4,  # + the 4-byte header
                               max_handshake_records=config.max_handshake_records,
                               check_handshake_header=self._check_header)
        self._out = bytearray()
        self.state = State.EXPECT_CLIENT_HELLO
        self.info = HandshakeInfo()
        self.trailing = b""
        self.bytes_received = 0
        self._ch1: m.ClientHello | None = None
        self._cookie: bytes | None = None
        self._hrr_group: int | None = None
        self._ticket_usable = False
        self._suite: ks.SuiteParams | None = None
        self._transcript: hashlib._Hash | None = None
        self._secrets: _Secrets | None = None
        self._psk: _Psk | None = None
        self._sni: str | None = None
        self._peer_chain: list[bytes] = []
        self._peer_leaf: x509.Certificate | None = None
        self._cr_context = b""
        self._compat = False
        self._sent_ccs = False
        self._export: TrafficState | None = None
        self._v12: Tls12Handshake | None = None

    # ---- public sans-IO interface -------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.state is State.COMPLETE or (self._v12 is not None and self._v12.complete)

    @property
    def bytes_consumed(self) -> int:
        """Input bytes the handshake used; the rest (``trailing``) belongs to the record layer."""
        return self.bytes_received - len(self.trailing)

    def receive_data(self, data: bytes) -> None:
        """Feed client bytes. Raises the alert (already queued for sending) on failure."""
        if self.state is State.CLOSED:
            raise InternalError("handshake already failed")
        done = self.complete  # a local: narrowing the property here would hide the check after the loop from mypy
        if done:
            self.trailing += data
            self.bytes_received += len(data)
            return
        self.bytes_received += len(data)
        self._rl.receive_data(data)
        try:
            while not self.complete:
                event = self._rl.next_event()
                if event is None:
                    break
                if isinstance(event, CloseNotify):
                    raise PeerAlert(AlertDescription.close_notify, AlertLevel.warning)  # gone: close quietly
                if self._v12 is not None:
                    self._receive_tls12(self._v12, event)
                elif isinstance(event, HandshakeMessage):
                    self._dispatch(event)
                else:
                    raise UnexpectedMessage(f"{type(event).__name__} during the handshake")
            if self.complete:
                self.trailing = self._rl.take_unprocessed()
        except LocalAlert as exc:
            self._fail(exc)
            raise
        except Alert:
            self._close()
            raise
        except Exception as exc:  # a bug must not leave the peer hanging: internal_error, raised as that alert
            alert = InternalError(f"unexpected {type(exc).__name__}")
            self._fail(alert)
            raise alert from exc

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def export(self) -> TrafficState:
        """The record-layer state, once; the engine forgets every secret of this connection."""
        state = self._take_export()
        self._wipe()
        return state

    def export_with_fallback(self) -> tuple[TrafficState, bytes]:
        """:meth:`export`, plus a fatal internal_error alert record sealed as the next write under it.

        That record is what the client gets if the state is refused where it is imported. The
        engine's write protection is the exported one at the exported sequence number, so it seals
        the record before it is wiped: no second key setup. The exported ``write_seq`` stays as it
        was, since the record is only written if the state is never used.
        """
        state = self._take_export()
        try:
            write = self._rl.write
            assert write is not None and write.seq == state.write_seq
            fallback = write.seal(ContentType.alert, bytes((AlertLevel.fatal, AlertDescription.internal_error)))
        except BaseException:
            state.wipe()
            raise
        finally:
            self._wipe()
        return state, fallback

    def _take_export(self) -> TrafficState:
        if self._v12 is not None:
            return self._v12.take_export()
        if self._export is None:
            raise InternalError("handshake not complete or already exported")
        state, self._export = self._export, None
        return state

    def abort(self) -> None:
        """The connection is gone: drop every secret without sending anything."""
        self._close()

    # ---- internals ----------------------------------------------------------------------------

    def _receive_tls12(self, engine: Tls12Handshake, event: object) -> None:
        """Every event after a ClientHello that chose TLS 1.2 goes to its engine (handshake12.py)."""
        if isinstance(event, ChangeCipherSpec):
            engine.on_message(None)
        elif isinstance(event, HandshakeMessage):
            engine.on_message(event)
        else:
            raise UnexpectedMessage(f"{type(event).__name__} during the handshake")

    def _check_header(self, msg_type: int, length: int) -> None:
        """Judge a client handshake message on its 4-byte header, before its body is buffered.

        The type first, as OpenSSL's state machine does: a message with no row in ``TRANSITIONS`` for
        this state is unexpected_message (§6.2), whatever length it announces (a KeyUpdate before the
        Finished must be, §4.6.3; so is an EndOfEarlyData, as we never accept 0-RTT, §4.5). Then the
        length of a message whose size is fixed: a Finished is exactly the hash length, so any
        other announced length is decode_error ("the length of the message was incorrect", §6.2),
        not the size limit's illegal_parameter. A ClientHello longer than any ClientHello can be
        is refused here too, whatever ``max_handshake_message`` allows.
        """
        if self._v12 is not None:
            self._v12.check_header(msg_type, length)
            return
        if (self.state, msg_type) not in TRANSITIONS:
            raise UnexpectedMessage(f"handshake type {msg_type} while in state '{self.state.value}'")
        if msg_type == HandshakeType.finished:
            assert self._suite is not None
            if length != self._suite.hash_len:
                raise DecodeError(f"Finished of {length} bytes, not {self._suite.hash_len}")
        elif msg_type == HandshakeType.client_hello and length > MAX_CLIENT_HELLO:
            raise IllegalParameter(f"ClientHello of {length} bytes exceeds the {MAX_CLIENT_HELLO} any can have")

    def _dispatch(self, msg: HandshakeMessage) -> None:
        """Run the message's row of ``TRANSITIONS``; the only place a handshake moves to its next state.

        The handler returns the state it leads to, and that state must be one its row lists: a
        handler that strays is a bug, which ends the handshake with internal_error rather than
        carrying on in a state nobody reviewed.
        """
        row = TRANSITIONS.get((self.state, msg.msg_type))
        if row is None:
            raise UnexpectedMessage(f"handshake type {msg.msg_type} while in state '{self.state.value}'")
        after = row.handler(self, msg)
        if after not in row.next_states:
            raise InternalError(
                f"{row.handler.__name__} led from '{self.state.value}' to {after}, which its row does not allow"
            )
        self.state = after

    def _send_handshake(self, data: bytes) -> None:
        self._out += self._rl.send_handshake(data)

    def _fail(self, alert: LocalAlert) -> None:
        if self.state is not State.CLOSED:
            try:
                self._out += self._rl.send_alert(alert.description)
            finally:
                self._close()

    def _close(self) -> None:
        self.state = State.CLOSED
        self._wipe()
        if self._export is not None:
            self._export.wipe()
            self._export = None

    def _wipe(self) -> None:
        for prot in (self._rl.read, self._rl.write):
            if prot is not None:
                prot.wipe()
        self._secrets = None
        self._psk = None
        if self._v12 is not None:
            self._v12.wipe()

    def _digest(self, extra: bytes = b"") -> bytes:
        assert self._transcript is not None
        h = self._transcript.copy()
        if extra:
            h.update(extra)
        return h.digest()

    def _add(self, msg: bytes) -> None:
        assert self._transcript is not None
        self._transcript.update(msg)

    # ---- ClientHello --------------------------------------------------------------------------

    def _on_client_hello(self, msg: HandshakeMessage) -> State:
        ch = m.parse_client_hello(msg.raw)
        second = self.state is State.EXPECT_CLIENT_HELLO_2
        if not second and versions.choose(ch, self._config.versions) == TLS12:
            self._start_tls12(ch)
            return State.TLS12
        self._rl.enter(Phase.HANDSHAKE_CCS)  # §5: a dummy CCS may now arrive, until the client Finished
        self._check_version(ch)
        if second:
            self._check_second_hello(ch)
        self._check_mandatory_extensions(ch)
        suite = self._suite if second else self._select_suite(ch)
        assert suite is not None
        self._check_key_shares(ch)
        psk = self._select_psk(ch, suite, may_switch_hash=not second)
        if psk is not None and ks.SUITES[psk.ticket.suite].hash_name != suite.hash_name:
            suite = ks.SUITES[psk.ticket.suite]  # §4.2.11: the PSK fixes the hash
        need_dhe = psk is None or psk.dhe
        group, share = self._select_group(ch) if need_dhe else (None, None)
        if need_dhe and share is None:
            if second:
                raise IllegalParameter("second ClientHello has no share for the requested group")
            if group is None:
                why = " (post_quantum = 'require': no hybrid offered)" if self._config.post_quantum == "require" else ""
                raise HandshakeFailure(f"no key exchange group in common{why}")
            self._hello_retry(ch, suite, group)
            return State.EXPECT_CLIENT_HELLO_2
        self._suite = suite
        if self._transcript is None:
            self._transcript = hashlib.new(suite.hash_name)
        if psk is not None:
            self._verify_binder(ch, psk, suite)
        self._sni = ch.server_name
        alpn = alpn_select(self._config.alpn, ch.alpn)
        if psk is None and ch.signature_algorithms is None:
            raise MissingExtension("no signature_algorithms, and certificate authentication is needed")  # §9.2
        modes = set(ch.psk_modes or ())
        self._ticket_usable = m.PskMode.psk_dhe_ke in modes or (
            self._config.allow_psk_ke and m.PskMode.psk_ke in modes
        )
        credential, scheme = (None, None) if psk else self._config.credentials.select(
            ch.server_name, ch.signature_algorithms or [], ch.signature_algorithms_cert
        )
        # §4.3.2: only a server that authenticates with a certificate may ask for the client's.
        request_cert = credential is not None and self._config.client_auth != "none"
        if self._rl.has_pending_handshake():
            raise UnexpectedMessage("ClientHello does not end its record (§5.1: no message spans a key change)")
        # The key exchange last, as it is the costliest check (a bad share is illegal_parameter, groups.py).
        ecdhe = None
        key_share = None
        if group is not None and share is not None:
            server_share, ecdhe = groups.respond(group, share, self._ephemeral)
            key_share = (group, server_share)
        # Every decision is made; from here on only our own code can fail.
        self._compat = bool(ch.session_id)
        self._add(ch.raw)
        schedule = ks.KeySchedule(suite.hash_name, psk.ticket.psk if psk else None)
        self._secrets = _Secrets(schedule)
        sh = m.server_hello(
            self._rng(32),
            ch.session_id,
            suite.suite,
            key_share=key_share,
            selected_psk=psk.index if psk else None,
        )
        self._send_handshake(sh)
        self._send_compat_ccs()
        self._add(sh)
        schedule.derive_handshake(ecdhe)
        c_hs, s_hs = schedule.handshake_traffic_secrets(self._digest())
        self._secrets.client_hs = c_hs
        self._rl.set_write_key(suite.suite, s_hs)
        self._rl.set_read_key(suite.suite, c_hs)
        if ch.early_data:
            self._rl.skip_early_data(self._config.early_data_skip_limit)
        self._psk = psk
        self.info.suite = suite.suite
        self.info.group = group
        self.info.resumed = psk is not None
        self.info.client_cert = bool(psk and psk.ticket.peer_certs)  # authenticated in the original handshake
        self.info.sni = ch.server_name
        self.info.alpn = alpn
        self._send_server_flight(ch, suite, s_hs, credential, scheme, alpn, request_cert=request_cert)
        return State.EXPECT_CERTIFICATE if request_cert else State.EXPECT_FINISHED

    def _start_tls12(self, ch: m.ClientHello) -> None:
        """Hand the connection to the TLS 1.2 engine, which answers this ClientHello and takes every
        message after it; the record layer reads TLS 1.2 records from now on."""
        self._rl.use_tls12()
        engine = Tls12Handshake(self._config, self._rl, self._out, self.info, rng=self._rng, clock=self._clock,
                                ephemeral=self._ephemeral)
        self._v12 = engine
        engine.start(ch)

    def _check_version(self, ch: m.ClientHello) -> None:
        if not ch.has_extensions_block or ch.supported_versions is None:
            raise ProtocolVersion("client does not offer TLS 1.3 (no supported_versions)")
        if ch.legacy_version <= 0x0300:
            raise ProtocolVersion(f"legacy_version {ch.legacy_version:#06x}")  # Appendix D.5
        if m.TLS13 not in ch.supported_versions:
            raise ProtocolVersion("client does not offer TLS 1.3")
        if ch.compression_methods != b"\x00":
            raise IllegalParameter("compression methods other than null")

    def _check_mandatory_extensions(self, ch: m.ClientHello) -> None:
        """§9.2: what a TLS 1.3 ClientHello must carry (missing_extension otherwise)."""
        if ch.pre_shared_key is not None and ch.psk_modes is None:
            raise MissingExtension("pre_shared_key without psk_key_exchange_modes")
        if (ch.supported_groups is None) != (ch.key_shares is None):
            raise MissingExtension("supported_groups and key_share must come together")
        if ch.pre_shared_key is None:
            if ch.signature_algorithms is None:
                raise MissingExtension("no signature_algorithms")
            if ch.supported_groups is None:
                raise MissingExtension("no supported_groups")

    def _check_key_shares(self, ch: m.ClientHello) -> None:
        offered = set(ch.supported_groups or ())
        for group, share in ch.key_shares or ():
            if group not in offered:
                raise IllegalParameter(f"key share for group {group:#06x} not in supported_groups")
            groups.check_share_length(group, share)

    def _select_suite(self, ch: m.ClientHello) -> ks.SuiteParams:
        offered = set(ch.cipher_suites)
        for suite in self._config.cipher_suites:
            if suite in offered:
                return ks.SUITES[suite]
        raise HandshakeFailure("no cipher suite in common")

    def _select_group(self, ch: m.ClientHello) -> tuple[int | None, bytes | None]:
        """(group, client share) — a share we can use, else the group to ask for in an HRR (groupchoice.py)."""
        choice = choose(self._config.groups, self._config.post_quantum, ch.supported_groups, ch.key_shares)
        return choice.group, choice.share

    def _select_psk(self, ch: m.ClientHello, suite: ks.SuiteParams, *, may_switch_hash: bool) -> _Psk | None:
        """The first offered ticket we can resume (§4.2.11); None means a full handshake."""
        offer, sealer = ch.pre_shared_key, self._config.ticket_keys
        if offer is None or sealer is None or ch.psk_modes is None:
            return None
        dhe = m.PskMode.psk_dhe_ke in ch.psk_modes and ch.key_shares is not None
        if not dhe and not (self._config.allow_psk_ke and m.PskMode.psk_ke in ch.psk_modes):
            return None
        now_ms = int(self._clock() * 1000)
        for index, (identity, obfuscated_age) in enumerate(offer.identities):
            ticket = sealer.open(identity)
            if ticket is None or ticket.suite not in ks.SUITES:
                continue
            age_ms = now_ms - ticket.created_ms
            client_age_ms = (obfuscated_age - ticket.age_add) % 2**32  # §4.2.11.1
            if age_ms < -1000 or age_ms > ticket.lifetime * 1000 or client_age_ms > ticket.lifetime * 1000:
                continue  # expired, by our clock or the client's: fall back to a full handshake
            if ks.SUITES[ticket.suite].hash_name != suite.hash_name and not (
                may_switch_hash
                and ticket.suite in ch.cipher_suites
                and ticket.suite in self._config.cipher_suites
            ):
                continue
            if ticket.sni != ch.server_name:
                continue  # §4.6.1/RFC 6066: resume only for the same server name
            if self._config.client_auth == "required" and not ticket.peer_certs:
                continue
            return _Psk(index, ticket, dhe)
        return None

    def _verify_binder(self, ch: m.ClientHello, psk: _Psk, suite: ks.SuiteParams) -> None:
        assert ch.pre_shared_key is not None
        schedule = ks.KeySchedule(suite.hash_name, psk.ticket.psk)
        expected = schedule.binder(self._digest(ch.truncated_for_binders()))
        if not hmac.compare_digest(expected, ch.pre_shared_key.binders[psk.index]):
            raise DecryptError("PSK binder does not verify")

    def _hello_retry(self, ch: m.ClientHello, suite: ks.SuiteParams, group: int) -> None:
        self._suite = suite
        self._ch1 = ch
        self._compat = bool(ch.session_id)
        if self._config.hrr_cookie:
            self._cookie = self._make_cookie()
        hrr = m.hello_retry_request(ch.session_id, suite.suite, group, self._cookie)
        self._transcript = hashlib.new(suite.hash_name)
        self._add(m.message_hash(ks.transcript_hash(suite.hash_name, ch.raw)))
        self._add(hrr)
        self._send_handshake(hrr)
        self._send_compat_ccs()
        if ch.early_data:
            self._rl.skip_plaintext_app_data(self._config.early_data_skip_limit)
        self.info.hrr = True
        self._hrr_group = group

    def _make_cookie(self) -> bytes:
        # We keep HRR state ourselves, so the cookie only proves the client saw our HRR.
        return self._rng(32)

    def _check_second_hello(self, ch: m.ClientHello) -> None:
        """§4.1.2: the second ClientHello repeats the first but for the listed changes."""
        first = self._ch1
        assert first is not None
        if (ch.legacy_version, ch.random, ch.session_id, ch.cipher_suites, ch.compression_methods) != (
            first.legacy_version,
            first.random,
            first.session_id,
            first.cipher_suites,
            first.compression_methods,
        ):
            raise IllegalParameter("second ClientHello changed fixed fields")
        may_change = {
            m.ExtensionType.key_share,
            m.ExtensionType.cookie,
            m.ExtensionType.early_data,
            m.ExtensionType.pre_shared_key,
            m.ExtensionType.padding,
        }
        rest1 = {k: v for k, v in first.extensions.items() if k not in may_change}
        rest2 = {k: v for k, v in ch.extensions.items() if k not in may_change}
        if rest1 != rest2:
            raise IllegalParameter("second ClientHello changed its extensions")
        if ch.early_data:
            raise IllegalParameter("early_data after a HelloRetryRequest")
        if ch.cookie != self._cookie:
            raise IllegalParameter("cookie not echoed")
        shares = ch.key_shares or []
        if len(shares) != 1 or shares[0][0] != self._hrr_group:
            raise IllegalParameter("second ClientHello must carry one share, for the requested group")

    def _send_compat_ccs(self) -> None:
        """Appendix D.4: one dummy CCS after our first flight, when the client asked for compatibility."""
        if self._compat and not self._sent_ccs:
            self._out += self._rl.send_ccs()
            self._sent_ccs = True

    # ---- our flight ---------------------------------------------------------------------------

    def _encrypted_extensions(self, ch: m.ClientHello, alpn: str | None, credential: Credential | None) -> bytes:
        exts = b""
        if credential is not None and ch.server_name is not None and credential.matches_name(ch.server_name):
            exts += m.extension(m.ExtensionType.server_name, b"")  # RFC 6066 §3: we used the name
        return exts + m.alpn_ext(alpn)

    def _certificate_request_extensions(self) -> bytes:
        return m.signature_algorithms_ext(list(CLIENT_SIG_SCHEMES))

    def _send_server_flight(
        self,
        ch: m.ClientHello,
        suite: ks.SuiteParams,
        server_hs: bytes,
        credential: Credential | None,
        scheme: int | None,
        alpn: str | None,
        *,
        request_cert: bool,
    ) -> None:
        assert self._secrets is not None
        flight = m.encrypted_extensions(self._encrypted_extensions(ch, alpn, credential))
        self._add(flight)
        if request_cert:
            cr = m.certificate_request(self._cr_context, self._certificate_request_extensions())
            self._add(cr)
            flight += cr
        if credential is not None and scheme is not None:
            cert = m.certificate(credential.chain)
            self._add(cert)
            content = m.certificate_verify_content(self._digest(), server=True)
            signature = credential.sign(scheme, content)
            cv = m.certificate_verify(scheme, signature)
            self._add(cv)
            flight += cert + cv
            self.info.sig_scheme = scheme
            self.info.cert_fingerprint = credential.fingerprint
        fin = m.finished(ks.finished_verify_data(suite.hash_name, server_hs, self._digest()))
        self._add(fin)
        flight += fin
        self._send_handshake(flight)
        schedule = self._secrets.schedule
        schedule.derive_master()
        c_ap, s_ap = schedule.application_traffic_secrets(self._digest())
        self._secrets.client_ap, self._secrets.server_ap = c_ap, s_ap
        # After our Finished we write under the application key (alerts included).
        self._rl.set_write_key(suite.suite, s_ap)

    # ---- the client's second flight -----------------------------------------------------------

    def _on_certificate(self, msg: HandshakeMessage) -> State:
        context, chain = m.parse_certificate(msg.body)
        if context != self._cr_context:
            # Ours is always empty during the handshake, so this is a length that cannot be: as in
            # OpenSSL and BoringSSL, decode_error (docs/alerts.md).
            raise DecodeError("certificate_request_context mismatch")
        self._add(msg.raw)
        if not chain:
            if self._config.client_auth == "required":
                raise CertificateRequired("client sent no certificate")
            return State.EXPECT_FINISHED  # §4.4.2: an empty Certificate has no CertificateVerify
        verifier = self._config.client_verifier
        assert verifier is not None
        self._peer_leaf = verifier.verify(chain)
        self._peer_chain = chain
        self.info.client_cert = True
        return State.EXPECT_CERTIFICATE_VERIFY

    def _on_certificate_verify(self, msg: HandshakeMessage) -> State:
        scheme, signature = m.parse_certificate_verify(msg.body)
        if scheme not in CLIENT_SIG_SCHEMES:
            raise IllegalParameter(f"client signed with scheme {scheme:#06x}, which we did not offer")
        assert self._peer_leaf is not None
        content = m.certificate_verify_content(self._digest(), server=False)
        verify_signature(self._peer_leaf, scheme, content, signature)
        self._add(msg.raw)
        return State.EXPECT_FINISHED

    def _on_finished(self, msg: HandshakeMessage) -> State:
        suite, secrets = self._suite, self._secrets
        assert suite is not None and secrets is not None
        if len(msg.body) != suite.hash_len:
            raise DecodeError("Finished has the wrong length")
        expected = ks.finished_verify_data(suite.hash_name, secrets.client_hs, self._digest())
        if not hmac.compare_digest(expected, msg.body):
            raise DecryptError("client Finished does not verify")
        self._add(msg.raw)
        # §5.1: the Finished must end its record, as at every key change. No read key is installed
        # for what follows: those records are appd's (``trailing``), read under the exported secret.
        if self._rl.has_pending_handshake():
            raise UnexpectedMessage("handshake data spans a key change")
        self._rl.enter(Phase.HANDSHAKE)
        self._send_tickets(suite, secrets)
        write = self._rl.write
        assert write is not None
        psk = self._psk
        self._export = TrafficState(
            suite=suite.suite,
            read_secret=bytearray(secrets.client_ap),
            write_secret=bytearray(secrets.server_ap),
            read_seq=0,
            write_seq=write.seq,
            records_protected=write.seq,
            alpn=self.info.alpn,
            sni=self._sni,
            peer_certs=list(psk.ticket.peer_certs) if psk else list(self._peer_chain),
            psk_resumed=psk is not None,
            created=int(self._clock()),
        )
        return State.COMPLETE

    def _nst_extensions(self) -> bytes:
        return b""  # we never accept 0-RTT, so we never advertise early_data

    def _send_tickets(self, suite: ks.SuiteParams, secrets: _Secrets) -> None:
        sealer = self._config.ticket_keys
        if sealer is None or self._config.tickets <= 0:
            return
        rms = secrets.schedule.resumption_master_secret(self._digest())
        psk = self._psk
        peer_certs = list(psk.ticket.peer_certs) if psk else list(self._peer_chain)
        now_ms = int(self._clock() * 1000)
        if not self._ticket_usable:
            return  # §4.2.9: the client offered no PSK mode we accept, so a ticket is useless to it
        tickets = b""
        for i in range(self._config.tickets):
            nonce = i.to_bytes(2, "big")
            age_add = int.from_bytes(self._rng(4), "big")
            state = TicketState(
                psk=ks.resumption_psk(suite.hash_name, rms, nonce),
                suite=suite.suite,
                created_ms=now_ms,
                age_add=age_add,
                lifetime=self._config.ticket_lifetime,
                alpn=self.info.alpn,
                sni=self._sni,
                peer_certs=peer_certs,
            )
            ticket = sealer.seal(state)
            if ticket is None:
                break
            if len(tickets) + len(ticket) > MAX_TICKET_BYTES:
                return  # a huge client chain in every ticket: resumption is not worth that, issue none
            lifetime = self._config.ticket_lifetime
            tickets += m.new_session_ticket(lifetime, age_add, nonce, ticket, self._nst_extensions())
        if tickets:
            self._send_handshake(tickets)


# ---- the transition table ---------------------------------------------------------------------

Handler = Callable[[ServerHandshake, HandshakeMessage], State]


@dataclass(frozen=True, slots=True)
class Transition:
    """One row: who handles the message, and every state that handler may lead to."""

    handler: Handler
    next_states: frozenset[State]
    rfc: str  # RFC 8446 sections for the message and the server's answer


def _row(handler: Handler, rfc: str, *next_states: State) -> Transition:
    return Transition(handler, frozenset(next_states), rfc)


# The TLS 1.3 server handshake, RFC 8446 §2 (Figures 1-3) from our side. {} is under the handshake key,
# [] under the application key, * is optional:
#
#     Client                                   Server
#     ClientHello            -------->                                    EXPECT_CLIENT_HELLO
#                            <--------  HelloRetryRequest                 no usable key share (§4.1.4)
#     ClientHello            -------->                                    EXPECT_CLIENT_HELLO_2
#                                       ServerHello
#                                       {EncryptedExtensions}
#                                       {CertificateRequest*}             client_auth, not resuming
#                                       {Certificate*}                    not when resuming (§4.2.11)
#                                       {CertificateVerify*}
#                            <--------  {Finished}
#     {Certificate*}         -------->                                    EXPECT_CERTIFICATE
#     {CertificateVerify*}   -------->                                    EXPECT_CERTIFICATE_VERIFY (not if empty)
#     {Finished}             -------->                                    EXPECT_FINISHED
#                            <--------  [NewSessionTicket*]               COMPLETE: export; the rest is appd's
#
# One row per (state, client message) we accept. Any other pair is unexpected_message (§6.2), judged
# on the message header before its body is read (ServerHandshake._check_header): a third ClientHello,
# a KeyUpdate before the Finished (§4.6.3), and EndOfEarlyData, as we never accept 0-RTT (§4.2.10:
# rejected early data is skipped record by record, so there is no state that waits for it). The
# handler returns the next state, which must be in its row (ServerHandshake._dispatch); a failure
# anywhere is CLOSED (ServerHandshake._close).
_S, _H, _E = State, HandshakeType, ServerHandshake
TRANSITIONS: dict[tuple[State, int], Transition] = {
    (_S.EXPECT_CLIENT_HELLO, _H.client_hello): _row(
        _E._on_client_hello, "§4.1.2; HRR §4.1.4, or ServerHello §4.1.3 and our flight §4.3-§4.4",
        _S.TLS12,  # versions.choose() gave TLS 1.2: handshake12.py's table from here on
        _S.EXPECT_CLIENT_HELLO_2,  # we sent a HelloRetryRequest
        _S.EXPECT_CERTIFICATE,  # our flight had a CertificateRequest (client_auth, not resuming)
        _S.EXPECT_FINISHED,
    ),
    (_S.EXPECT_CLIENT_HELLO_2, _H.client_hello): _row(
        _E._on_client_hello, "§4.1.2 (the retried hello); ServerHello §4.1.3 and our flight §4.3-§4.4",
        _S.EXPECT_CERTIFICATE,
        _S.EXPECT_FINISHED,
    ),
    (_S.EXPECT_CERTIFICATE, _H.certificate): _row(
        _E._on_certificate, "§4.4.2, §4.4.2.4",
        _S.EXPECT_CERTIFICATE_VERIFY,  # a chain, verified
        _S.EXPECT_FINISHED,  # empty, and client_auth is optional
    ),
    (_S.EXPECT_CERTIFICATE_VERIFY, _H.certificate_verify): _row(
        _E._on_certificate_verify, "§4.4.3",
        _S.EXPECT_FINISHED,
    ),
    (_S.EXPECT_FINISHED, _H.finished): _row(
        _E._on_finished, "§4.4.4; NewSessionTicket §4.6.1",
        _S.COMPLETE,
    ),
}
del _S, _H, _E

"""The TLS 1.2 server handshake (RFC 5246 §7.3-7.4) as a sans-IO state machine, ECDHE and AEAD only.

:class:`handshake.ServerHandshake` reads the ClientHello and, when :mod:`versions` chooses TLS 1.2,
hands the connection to a :class:`Tls12Handshake` that shares its record layer and output buffer.
From then on every handshake message and ChangeCipherSpec goes through ``TRANSITIONS`` at the end of
this module. When the client's Finished verifies, the engine holds the record-layer state to export
(write keys and implicit IVs from the key block, RFC 5246 §6.3) and nothing else of the connection.

Mozilla's intermediate profile, tightened: the extended master secret (RFC 7627) is required unless
configured off; secure renegotiation is answered (RFC 5746) and renegotiation itself refused (appd's
record layer does that after the handshake); TLS_FALLBACK_SCSV is honoured (versions.py); the TLS 1.3
downgrade sentinel is in every ServerHello.random while TLS 1.3 is enabled (RFC 8446 §4.1.3); tickets
(RFC 5077) are sealed under the same rotating keys as TLS 1.3's, and there is no session cache.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from tls_privsep.secured import groups
from tls_privsep.secured import messages as m
from tls_privsep.secured import messages12 as m12
from tls_privsep.secured.alpn import select as alpn_select
from tls_privsep.secured.credentials import Credential
from tls_privsep.secured.peerauth import CLIENT_SIG_SCHEMES12, verify_signature
from tls_privsep.secured.tickets import TicketState
from tls_privsep.secured.versions import TLS13, TLS_EMPTY_RENEGOTIATION_INFO_SCSV
from tls_privsep.shared import tls12
from tls_privsep.shared.errors import (
    DecodeError,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    InternalError,
    UnexpectedMessage,
)
from tls_privsep.shared.record import HandshakeMessage, HandshakeType, RecordLayer, Tls12Protection
from tls_privsep.shared.state import TLS12, TrafficState

if TYPE_CHECKING:
    from tls_privsep.secured.handshake import HandshakeInfo, ServerConfig

# The groups a TLS 1.2 ECDHE exchange may use (RFC 8422; the hybrids are TLS 1.3's alone), and the one
# taken when a client names none (RFC 8422 §4 leaves it to us: P-256 is the one every ECC client has).
GROUPS12 = (m.NamedGroup.x25519, m.NamedGroup.secp256r1)
DEFAULT_GROUP12 = m.NamedGroup.secp256r1
# The key of a ChangeCipherSpec record in TRANSITIONS: it is not a handshake message, and no handshake
# type has a value above 255.
CHANGE_CIPHER_SPEC = 0x100


class State12(enum.Enum):
    """The client message the server waits for; the ClientHello is behind us (handshake.py read it)."""

    EXPECT_CERTIFICATE = "expect client Certificate"
    EXPECT_CLIENT_KEY_EXCHANGE = "expect ClientKeyExchange"
    EXPECT_CERTIFICATE_VERIFY = "expect client CertificateVerify"
    EXPECT_CCS = "expect ChangeCipherSpec"
    EXPECT_FINISHED = "expect client Finished"
    EXPECT_CCS_RESUMED = "expect ChangeCipherSpec (resumed)"
    EXPECT_FINISHED_RESUMED = "expect client Finished (resumed)"
    COMPLETE = "complete"


@dataclass(repr=False)
class _Keys:
    """The session's secrets between messages; dropped at export or failure."""

    master: bytes
    client: bytes  # client write key || implicit IV
    server: bytes


class Tls12Handshake:
    """One TLS 1.2 handshake, from the ClientHello on; driven by handshake.ServerHandshake."""

    def __init__(
        self,
        config: ServerConfig,
        rl: RecordLayer,
        out: bytearray,
        info: HandshakeInfo,
        *,
        rng: Callable[[int], bytes],
        clock: Callable[[], float],
        ephemeral: groups.EphemeralFactory,
    ) -> None:
        self._config = config
        self._rl = rl
        self._out = out
        self.info = info
        self._rng = rng
        self._clock = clock
        self._ephemeral = ephemeral
        self.state: State12 | None = None
        self._suite: tls12.Suite12Params | None = None
        self._messages = bytearray()  # the transcript (RFC 5246 §7.4.9: every handshake message, as sent)
        self._client_random = b""
        self._server_random = b""
        self._group = 0
        self._key: groups.EphemeralKey | None = None
        self._keys: _Keys | None = None
        self._ems = False
        self._ticket_wanted = False  # the client sent session_ticket and we will issue one
        self._resumed: TicketState | None = None
        self._sni: str | None = None
        self._peer_chain: list[bytes] = []
        self._peer_leaf: x509.Certificate | None = None
        self._export: TrafficState | None = None

    # ---- driven by handshake.py ------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.state is State12.COMPLETE

    def check_header(self, msg_type: int, length: int) -> None:
        """As TLS 1.3's: a message with no row for this state is unexpected_message on its header;
        a Finished is exactly 12 bytes (decode_error for any other announced length)."""
        if self.state is None or (self.state, msg_type) not in TRANSITIONS:
            where = self.state.value if self.state else "start"
            raise UnexpectedMessage(f"handshake type {msg_type} while in TLS 1.2 state '{where}'")
        if msg_type == HandshakeType.finished and length != tls12.VERIFY_DATA_LEN:
            raise DecodeError(f"Finished of {length} bytes, not {tls12.VERIFY_DATA_LEN}")

    def on_message(self, msg: HandshakeMessage | None) -> None:
        """A client handshake message, or ``None`` for a ChangeCipherSpec record: the one place the
        state moves (the handler's result must be in its row, as in handshake.py)."""
        key = CHANGE_CIPHER_SPEC if msg is None else msg.msg_type
        where = self.state.value if self.state else "start"
        row = TRANSITIONS.get((self.state, key)) if self.state is not None else None
        if row is None:
            what = "ChangeCipherSpec" if msg is None else f"handshake type {key}"
            raise UnexpectedMessage(f"{what} while in TLS 1.2 state '{where}'")
        after = row.handler(self, msg)
        if after not in row.next_states:
            raise InternalError(f"{row.handler.__name__} led from '{where}' to {after}, which its row does not allow")
        self.state = after

    def take_export(self) -> TrafficState:
        if self._export is None:
            raise InternalError("TLS 1.2 handshake not complete or already exported")
        state, self._export = self._export, None
        return state

    def wipe(self) -> None:
        """Drop every secret of the connection (the record layer's protections are the caller's)."""
        self._keys = None
        self._key = None
        self._resumed = None
        if self._export is not None:
            self._export.wipe()
            self._export = None

    # ---- ClientHello ----------------------------------------------------------------------------

    def start(self, ch: m.ClientHello) -> None:
        """Answer a ClientHello that versions.choose() gave TLS 1.2: our whole first flight."""
        cfg = self._config
        if 0 not in ch.compression_methods:
            raise DecodeError("compression methods without null")  # §7.4.1.2: it MUST be there (OpenSSL's alert)
        secure_renegotiation = self._check_renegotiation_info(ch)
        if ch.ec_point_formats is not None and m12.UNCOMPRESSED not in ch.ec_point_formats:
            raise IllegalParameter("ec_point_formats without uncompressed")  # RFC 8422 §5.1.2
        if ch.extended_master_secret:
            self._ems = True
        elif cfg.require_ems:
            raise HandshakeFailure("client does not offer the extended master secret (RFC 7627)")
        if self._rl.has_pending_handshake():
            raise UnexpectedMessage("ClientHello does not end its record")
        self._client_random = ch.random
        self._sni = ch.server_name
        alpn = alpn_select(self._config.alpn, ch.alpn)
        ticket = self._resumable(ch)
        # A session without the extended master secret is never resumed (RFC 7627 §5.3), so it gets no ticket.
        self._ticket_wanted = (ticket is None and ch.session_ticket is not None and cfg.ticket_keys is not None
                               and cfg.tickets > 0 and self._ems)
        self._server_random = self._rng(32)
        if TLS13 in cfg.versions:  # RFC 8446 §4.1.3: tell a TLS 1.3 client that this is a downgrade
            self._server_random = self._server_random[:24] + m12.DOWNGRADE_TLS12
        exts = m12.renegotiation_info_ext() if secure_renegotiation else b""
        self.info.version = TLS12
        self.info.sni = ch.server_name
        self.info.alpn = alpn
        if ticket is not None:
            self._resume(ch, ticket, exts, alpn)
            return
        suite, credential, scheme = self._select_suite(ch)
        group = self._select_group(ch)
        self._suite = suite
        credential_named = ch.server_name is not None and credential.matches_name(ch.server_name)
        if credential_named:
            exts += m.extension(m.ExtensionType.server_name, b"")  # RFC 6066 §3
        if ch.ec_point_formats is not None:
            exts += m12.ec_point_formats_ext()
        if self._ticket_wanted:
            exts += m.extension(m.ExtensionType.session_ticket, b"")
        exts += m.alpn_ext(alpn)
        if self._ems:
            exts += m.extension(m.ExtensionType.extended_master_secret, b"")
        # Every decision is made; from here on only our own code can fail.
        self._key = self._ephemeral(group)
        params = m12.ecdh_params(group, groups.public_share(self._key))
        signature = credential.sign(scheme, ch.random + self._server_random + params)  # RFC 8422 §5.4
        flight = m12.server_hello(self._server_random, b"", suite.suite, exts)
        flight += m12.certificate(credential.chain)
        flight += m12.server_key_exchange(params, scheme, signature)
        request_cert = self._config.client_auth != "none"
        if request_cert:
            flight += m12.certificate_request(list(CLIENT_SIG_SCHEMES12))
        flight += m12.server_hello_done()
        self._messages += ch.raw + flight
        self._send(flight)
        self._group = group
        self.info.suite = suite.suite
        self.info.group = group
        self.info.sig_scheme = scheme
        self.info.cert_fingerprint = credential.fingerprint
        self.state = State12.EXPECT_CERTIFICATE if request_cert else State12.EXPECT_CLIENT_KEY_EXCHANGE

    def _check_renegotiation_info(self, ch: m.ClientHello) -> bool:
        """RFC 5746 §3.6: whether the client signals secure renegotiation (the SCSV or an empty
        renegotiation_info); a non-empty one on a first handshake is handshake_failure."""
        if ch.renegotiation_info is not None and ch.renegotiation_info:
            raise HandshakeFailure("renegotiation_info is not empty on an initial handshake")
        return ch.renegotiation_info is not None or TLS_EMPTY_RENEGOTIATION_INFO_SCSV in ch.cipher_suites

    def _select_suite(self, ch: m.ClientHello) -> tuple[tls12.Suite12Params, Credential, int]:
        """Our first suite the client offers for which we hold a credential it can verify."""
        if ch.signature_algorithms is None:
            # RFC 5246 §7.4.1.4.1 would mean SHA-1 then; we never sign with SHA-1.
            raise HandshakeFailure("no signature_algorithms (the TLS 1.2 default is SHA-1, which we do not use)")
        offered = set(ch.cipher_suites)
        common = [s for s in self._config.cipher_suites12 if s in offered]
        if not common:
            raise HandshakeFailure("no TLS 1.2 cipher suite in common")
        for code in common:
            params = tls12.SUITES12[code]
            found = self._config.credentials.select12(ch.server_name, params.auth, ch.signature_algorithms,
                                                      ch.supported_groups)
            if found is not None:
                return params, found[0], found[1]
        raise HandshakeFailure("no certificate fits a common suite, the client's signature_algorithms and, for an "
                               "ECDSA key, its supported_groups (RFC 8422 §5.1.1)")

    def _select_group(self, ch: m.ClientHello) -> int:
        ours = [g for g in self._config.groups if g in GROUPS12]
        if ch.supported_groups is None:
            return DEFAULT_GROUP12 if DEFAULT_GROUP12 in ours else ours[0]
        offered = set(ch.supported_groups)
        for group in ours:
            if group in offered:
                return group
        raise HandshakeFailure("no ECDHE group in common (TLS 1.2: x25519, secp256r1)")

    # ---- resumption (RFC 5077 §3.1, RFC 7627 §5.3) -----------------------------------------------

    def _resumable(self, ch: m.ClientHello) -> TicketState | None:
        """The session in the client's ticket, if it may be resumed here; None means a full handshake."""
        sealer = self._config.ticket_keys
        if not ch.session_ticket or sealer is None:
            return None
        ticket = sealer.open(ch.session_ticket)
        if ticket is None or ticket.suite not in tls12.SUITES12:  # a TLS 1.3 ticket never resumes TLS 1.2
            return None
        age_ms = int(self._clock() * 1000) - ticket.created_ms
        if age_ms < -1000 or age_ms > ticket.lifetime * 1000:
            return None
        if ticket.ems and not ch.extended_master_secret:
            raise HandshakeFailure("resuming an extended-master-secret session without the extension")
        if not ticket.ems:
            return None  # RFC 7627 §5.3: never an abbreviated handshake without the extended master secret
        if ticket.suite not in ch.cipher_suites or ticket.suite not in self._config.cipher_suites12:
            return None  # §7.4.1.2: the session's suite must be offered (and still be one of ours)
        if ticket.sni != ch.server_name:
            return None  # RFC 6066 §3: resume only for the same server name
        if self._config.client_auth == "required" and not ticket.peer_certs:
            return None
        return ticket

    def _resume(self, ch: m.ClientHello, ticket: TicketState, exts: bytes, alpn: str | None) -> None:
        """The abbreviated handshake: ServerHello, ChangeCipherSpec, Finished; the client's follow."""
        suite = tls12.SUITES12[ticket.suite]
        self._suite = suite
        self._resumed = ticket
        self._ems = True
        if ch.ec_point_formats is not None:
            exts += m12.ec_point_formats_ext()
        exts += m.alpn_ext(alpn)
        exts += m.extension(m.ExtensionType.extended_master_secret, b"")
        # RFC 5077 §3.4: the client's session id, echoed, tells it the ticket was accepted.
        sh = m12.server_hello(self._server_random, ch.session_id, suite.suite, exts)
        self._messages += ch.raw + sh
        self._send(sh)
        self._derive_keys(ticket.psk)
        self._peer_chain = list(ticket.peer_certs)
        self.info.suite = suite.suite
        self.info.resumed = True
        self.info.client_cert = bool(ticket.peer_certs)
        self._send_ccs_and_finished()
        self.state = State12.EXPECT_CCS_RESUMED

    # ---- the client's flight ------------------------------------------------------------------

    def _on_certificate(self, msg: HandshakeMessage | None) -> State12:
        assert msg is not None
        chain = m12.parse_certificate(msg.body)
        self._messages += msg.raw
        if not chain:
            if self._config.client_auth == "required":
                raise HandshakeFailure("client sent no certificate")  # RFC 5246 §7.4.6 (no certificate_required)
            return State12.EXPECT_CLIENT_KEY_EXCHANGE
        verifier = self._config.client_verifier
        assert verifier is not None
        self._peer_leaf = verifier.verify(chain)
        self._peer_chain = chain
        self.info.client_cert = True
        return State12.EXPECT_CLIENT_KEY_EXCHANGE

    def _on_client_key_exchange(self, msg: HandshakeMessage | None) -> State12:
        assert msg is not None and self._key is not None and self._suite is not None
        public = m12.parse_client_key_exchange(msg.body)
        pre_master = groups.exchange(self._group, self._key, public)
        self._key = None  # the ephemeral key is spent (RFC 8422 §5.10)
        self._messages += msg.raw
        session_hash = self._digest() if self._ems else None  # RFC 7627 §3: through ClientKeyExchange
        master = tls12.master_secret(self._suite.hash_name, pre_master, client_random=self._client_random,
                                     server_random=self._server_random, session_hash=session_hash)
        self._derive_keys(master)
        return State12.EXPECT_CERTIFICATE_VERIFY if self._peer_leaf is not None else State12.EXPECT_CCS

    def _on_certificate_verify(self, msg: HandshakeMessage | None) -> State12:
        assert msg is not None and self._peer_leaf is not None
        scheme, signature = m.parse_certificate_verify(msg.body)
        # §7.4.8: the signature is over every handshake message so far, hashed as the scheme says.
        verify_signature(self._peer_leaf, scheme, bytes(self._messages), signature, tls12=True)
        self._messages += msg.raw
        return State12.EXPECT_CCS

    def _on_ccs(self, msg: HandshakeMessage | None) -> State12:
        assert self._keys is not None and self._suite is not None
        # The layer refuses a CCS in the middle of a handshake message (§7.1: it must not split one).
        self._rl.set_read_protection(Tls12Protection(self._suite.suite, self._keys.client))
        return State12.EXPECT_FINISHED_RESUMED if self._resumed is not None else State12.EXPECT_FINISHED

    def _verify_client_finished(self, msg: HandshakeMessage) -> None:
        assert self._keys is not None and self._suite is not None
        expected = tls12.finished_verify_data(self._suite.hash_name, self._keys.master, self._digest(), client=True)
        if not hmac.compare_digest(expected, msg.body):
            raise DecryptError("client Finished does not verify")
        self._messages += msg.raw
        if self._rl.has_pending_handshake():
            raise UnexpectedMessage("handshake data follows the client Finished")

    def _on_finished(self, msg: HandshakeMessage | None) -> State12:
        assert msg is not None
        self._verify_client_finished(msg)
        self._send_ticket()
        self._send_ccs_and_finished()
        self._set_export()
        return State12.COMPLETE

    def _on_finished_resumed(self, msg: HandshakeMessage | None) -> State12:
        assert msg is not None
        self._verify_client_finished(msg)
        self._set_export()
        return State12.COMPLETE

    # ---- our side -------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._out += self._rl.send_handshake(data)

    def _digest(self) -> bytes:
        assert self._suite is not None
        return hashlib.new(self._suite.hash_name, self._messages).digest()

    def _derive_keys(self, master: bytes) -> None:
        assert self._suite is not None
        client, server = tls12.key_block(self._suite, master, client_random=self._client_random,
                                         server_random=self._server_random)
        self._keys = _Keys(master, client, server)

    def _send_ticket(self) -> None:
        """RFC 5077 §3.3: before our ChangeCipherSpec, in the transcript; the master secret sealed."""
        sealer = self._config.ticket_keys
        if not self._ticket_wanted or sealer is None:
            return
        assert self._keys is not None and self._suite is not None
        state = TicketState(
            psk=self._keys.master,
            suite=self._suite.suite,
            created_ms=int(self._clock() * 1000),
            age_add=0,
            lifetime=self._config.ticket_lifetime,
            alpn=self.info.alpn,
            sni=self._sni,
            peer_certs=list(self._peer_chain),
            ems=self._ems,
        )
        ticket = sealer.seal(state)
        # None (no key this epoch) or too large (a huge client chain): an empty ticket, which RFC 5077
        # §3.3 allows once the extension was answered, tells the client there is nothing to keep.
        if ticket is None or len(ticket) > 0xFFFF:
            ticket = b""
        nst = m12.new_session_ticket(self._config.ticket_lifetime, ticket)
        self._messages += nst
        self._send(nst)

    def _send_ccs_and_finished(self) -> None:
        assert self._keys is not None and self._suite is not None
        verify_data = tls12.finished_verify_data(self._suite.hash_name, self._keys.master, self._digest(),
                                                 client=False)
        self._out += self._rl.send_ccs()
        self._rl.set_write_protection(Tls12Protection(self._suite.suite, self._keys.server))
        fin = m.finished(verify_data)
        self._messages += fin
        self._send(fin)

    def _set_export(self) -> None:
        keys, suite, read, write = self._keys, self._suite, self._rl.read, self._rl.write
        assert keys is not None and suite is not None and read is not None and write is not None
        self._export = TrafficState(
            suite=suite.suite,
            read_secret=bytearray(keys.client),
            write_secret=bytearray(keys.server),
            read_seq=read.seq,
            write_seq=write.seq,
            records_protected=write.seq,
            alpn=self.info.alpn,
            sni=self._sni,
            peer_certs=list(self._peer_chain),
            psk_resumed=self._resumed is not None,
            created=int(self._clock()),
            version=TLS12,
        )
        self._keys = None


# ---- the transition table ---------------------------------------------------------------------

Handler = Callable[[Tls12Handshake, HandshakeMessage | None], State12]


@dataclass(frozen=True, slots=True)
class Transition:
    """One row: who handles the message, and every state that handler may lead to."""

    handler: Handler
    next_states: frozenset[State12]
    rfc: str


def _row(handler: Handler, rfc: str, *next_states: State12) -> Transition:
    return Transition(handler, frozenset(next_states), rfc)


# RFC 5246 §7.3 from our side (* optional; [ChangeCipherSpec] is a record of its own type):
#
#     full handshake                                      abbreviated (a ticket, RFC 5077 §3.1)
#     ClientHello          -->                            ClientHello          -->
#                          <--  ServerHello                                    <--  ServerHello
#                               Certificate                                         NewSessionTicket* (never)
#                               ServerKeyExchange                                   [ChangeCipherSpec]
#                               CertificateRequest*                            <--  Finished
#                          <--  ServerHelloDone           [ChangeCipherSpec]   -->  EXPECT_CCS_RESUMED
#     Certificate*         -->  EXPECT_CERTIFICATE        Finished             -->  EXPECT_FINISHED_RESUMED
#     ClientKeyExchange    -->  EXPECT_CLIENT_KEY_EXCHANGE
#     CertificateVerify*   -->  EXPECT_CERTIFICATE_VERIFY (a non-empty client Certificate only)
#     [ChangeCipherSpec]   -->  EXPECT_CCS
#     Finished             -->  EXPECT_FINISHED
#                          <--  NewSessionTicket*, [ChangeCipherSpec], Finished: COMPLETE
#
# The ClientHello is handshake.py's (it chooses the version); this table starts after our first flight.
# Any other (state, message) pair is unexpected_message, judged on the header (check_header): a Finished
# before the ChangeCipherSpec, a second ClientHello, a CertificateVerify without a certificate.
_S, _H, _E = State12, HandshakeType, Tls12Handshake
TRANSITIONS: dict[tuple[State12, int], Transition] = {
    (_S.EXPECT_CERTIFICATE, _H.certificate): _row(
        _E._on_certificate, "§7.4.6", _S.EXPECT_CLIENT_KEY_EXCHANGE),
    (_S.EXPECT_CLIENT_KEY_EXCHANGE, m12.HandshakeType12.client_key_exchange): _row(
        _E._on_client_key_exchange, "§7.4.7; RFC 8422 §5.7; RFC 7627 §4; §8.1, §6.3",
        _S.EXPECT_CERTIFICATE_VERIFY, _S.EXPECT_CCS),
    (_S.EXPECT_CERTIFICATE_VERIFY, _H.certificate_verify): _row(
        _E._on_certificate_verify, "§7.4.8", _S.EXPECT_CCS),
    (_S.EXPECT_CCS, CHANGE_CIPHER_SPEC): _row(_E._on_ccs, "§7.1", _S.EXPECT_FINISHED),
    (_S.EXPECT_FINISHED, _H.finished): _row(
        _E._on_finished, "§7.4.9; NewSessionTicket RFC 5077 §3.3", _S.COMPLETE),
    (_S.EXPECT_CCS_RESUMED, CHANGE_CIPHER_SPEC): _row(_E._on_ccs, "§7.1", _S.EXPECT_FINISHED_RESUMED),
    (_S.EXPECT_FINISHED_RESUMED, _H.finished): _row(_E._on_finished_resumed, "§7.4.9", _S.COMPLETE),
}
del _S, _H, _E

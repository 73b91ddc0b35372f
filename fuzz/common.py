"""What the harnesses and the seed generator share: input formats, a reproducible server, the allowed errors.

Everything a harness needs to build is deterministic (server randomness, ephemeral keys, clock, ticket
keys), so a seed made by ``fuzz/seeds.py`` in one process reaches the same states in the harness
process, and a finding replays. Only the test PKI (tests/certs.py) is fresh per process; the formats
below avoid depending on it (the second-flight harness computes Finished and CertificateVerify itself).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from fuzz.base import Finding, check_alert_queued, check_local_alert, ops, record_types
from tests import certs
from tests.inmemory import client_verifier, pki, server_config
from tests.tls12client import CCS, Client12
from tests.tlsclient import P256, X25519, Client, record
from tls_privsep.secured import messages as m
from tls_privsep.secured import messages12 as m12
from tls_privsep.secured.credentials import Credential, CredentialStore, Signer
from tls_privsep.secured.handshake import ServerConfig, ServerHandshake, State
from tls_privsep.secured.tickets import TicketKeys
from tls_privsep.shared import keyschedule as ks
from tls_privsep.shared.errors import Alert, LocalAlert
from tls_privsep.shared.record import Protection, RecordLayer
from tls_privsep.shared.wire import vector

FIXED_TIME = 1_700_000_000.0
X25519_GROUP, P256_GROUP = 0x001D, 0x0017


def fixed_clock() -> float:
    return FIXED_TIME


class DetRandom:
    """A reproducible stand-in for os.urandom: SHAKE-256 over a label and a call counter."""

    def __init__(self, label: bytes) -> None:
        self._label = label
        self._calls = 0

    def __call__(self, n: int) -> bytes:
        self._calls += 1
        return hashlib.shake_256(self._label + self._calls.to_bytes(8, "big")).digest(n)


def _scalar(label: bytes) -> int:
    return int.from_bytes(hashlib.sha256(label).digest(), "big") % (2**255) + 1


_SERVER_X25519 = x25519.X25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz server x25519").digest())
_SERVER_P256 = ec.derive_private_key(_scalar(b"fuzz server p256"), ec.SECP256R1())
_CLIENT_X25519 = x25519.X25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz client x25519").digest())
_CLIENT_P256 = ec.derive_private_key(_scalar(b"fuzz client p256"), ec.SECP256R1())


def server_ephemeral(group: int) -> x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey:
    if group == X25519_GROUP:
        return _SERVER_X25519
    if group == P256_GROUP:
        return _SERVER_P256
    raise ValueError(f"unsupported group {group:#06x}")


class MemoSigner:
    """A credential's own signer, each signature computed once per content: ECDSA and PSS are
    randomized, and a fixed flight keeps the transcript (so the client's Finished) the same for every
    run of an input."""

    def __init__(self, real: Signer) -> None:
        self._real = real
        self._signatures: dict[tuple[int, bytes], bytes] = {}

    @property
    def schemes(self) -> tuple[int, ...]:
        return self._real.schemes

    def public_key(self) -> PublicKeyTypes:
        return self._real.public_key()

    def sign(self, scheme: int, content: bytes) -> bytes:
        sig = self._signatures.get((scheme, content))
        if sig is None:
            if len(self._signatures) > 512:
                self._signatures.clear()
            sig = self._signatures[scheme, content] = self._real.sign(scheme, content)
        return sig


_MEMO_CREDENTIALS: dict[str, Credential] = {}


def _memo_signing(cfg: ServerConfig) -> ServerConfig:
    """``cfg`` with each credential signing through a MemoSigner, one per certificate for all configs."""
    creds = []
    for cred in cfg.credentials.credentials:
        if cred.fingerprint not in _MEMO_CREDENTIALS:
            _MEMO_CREDENTIALS[cred.fingerprint] = Credential.from_signer(cred.chain, MemoSigner(cred.signer))
        creds.append(_MEMO_CREDENTIALS[cred.fingerprint])
    return dataclasses.replace(cfg, credentials=CredentialStore(creds))


def ticket_keys() -> TicketKeys:
    return TicketKeys(rng=DetRandom(b"fuzz ticket keys"), clock=fixed_clock)


# Server configurations a handshake input picks from with its first byte.
CONFIG_NAMES = ("default", "hrr", "client_optional", "client_required")
_CONFIGS: dict[str, ServerConfig] = {}


def config(index: int) -> ServerConfig:
    name = CONFIG_NAMES[index % len(CONFIG_NAMES)]
    if name not in _CONFIGS:
        if name == "default":
            cfg = server_config(("ecdsa", "ed25519"), ticket_keys=ticket_keys(), alpn=("h2", "http/1.1"))
        elif name == "hrr":  # no x25519: a client with only an x25519 share gets a HelloRetryRequest
            cfg = server_config(("ecdsa",), ticket_keys=ticket_keys(), groups=(P256_GROUP,), hrr_cookie=True)
        elif name == "client_optional":
            cfg = server_config(("ed25519", "ecdsa"), ticket_keys=ticket_keys(), client_auth="optional",
                                client_verifier=client_verifier(), allow_psk_ke=True)
        else:
            cfg = server_config(("rsa2048", "ecdsa"), ticket_keys=ticket_keys(), client_auth="required",
                                client_verifier=client_verifier(), cipher_suites=(0x1302, 0x1303))
        _CONFIGS[name] = _memo_signing(cfg)
    return _CONFIGS[name]


def new_server(index: int) -> ServerHandshake:
    """A fresh engine whose every choice (random, ephemeral key, signature, time) is reproducible."""
    return ServerHandshake(config(index), rng=DetRandom(b"fuzz server"), clock=fixed_clock,
                           ephemeral=server_ephemeral)


# ---- the second client flight ---------------------------------------------------------------------

# Ops of the `second_flight` input; the high nibble of the op byte is padding, in 16-byte units.
OP_HS = 0  # payload sealed as handshake content under the client handshake key (and hashed)
OP_ALERT = 1  # payload sealed as an alert
OP_APP = 2  # payload sealed as application data
OP_INNER = 3  # payload[0] is the inner content type, the rest sealed as its content
OP_RAW = 4  # payload fed as is (plaintext records, partial records, garbage)
OP_FINISHED = 5  # the client Finished for the transcript so far, then payload, in one record
OP_CERT = 6  # a client Certificate with the harness's client chain (payload: the request context)
OP_CERT_VERIFY = 7  # a CertificateVerify by the harness's client key over the transcript so far
OP_AFTER = 8  # payload[0] inner type, rest sealed under the client *application* key (after Finished)
OP_EMPTY_CERT = 9  # a Certificate with no entries
MAX_SEALED_PAYLOAD = 2**14 - 1024  # room for padding (at most 240) and a message the harness adds


class FixedClient(Client):
    """tests.tlsclient.Client with fixed keys and random, so its ClientHello is the same in every process."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.hello.random = hashlib.sha256(b"fuzz client random").digest()

    def share(self, group: int) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        if group == X25519:
            self.keys[group] = _CLIENT_X25519
            return _CLIENT_X25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.keys[group] = _CLIENT_P256
        return _CLIENT_P256.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


@dataclass
class FirstFlight:
    """A completed first flight against ``new_server(index)``: what the client knows afterwards."""

    index: int
    client_hello: bytes  # the ClientHello record to replay
    server_flight: bytes
    suite: ks.SuiteParams
    transcript: bytes  # ClientHello .. server Finished
    client_hs: bytes
    client_ap: bytes
    cert_requested: bool


_FLIGHTS: dict[int, FirstFlight] = {}
_CLIENT_CHAIN: tuple[list[bytes], object] | None = None


def client_chain() -> tuple[list[bytes], object]:
    """A client certificate (DER chain) from the test client CA, and its P-256 key."""
    global _CLIENT_CHAIN
    if _CLIENT_CHAIN is None:
        p = pki()
        leaf, key = certs.make_leaf(p.client_ca, p.client_ca_key, "ecdsa", names=("client",), client=True)  # type: ignore[arg-type]
        from cryptography.hazmat.primitives.serialization import Encoding

        _CLIENT_CHAIN = ([leaf.public_bytes(Encoding.DER)], key)
    return _CLIENT_CHAIN


def first_flight(index: int) -> FirstFlight:
    """Run ClientHello -> server flight once per configuration (the server is reproducible)."""
    index %= len(CONFIG_NAMES)
    if index not in _FLIGHTS:
        # The hrr configuration takes P-256; offer that share at once so there is no retry.
        client = FixedClient(share_groups=(P256,) if CONFIG_NAMES[index] == "hrr" else (X25519,))
        ch = client.client_hello_record()
        server = new_server(index)
        server.receive_data(ch)
        flight = server.data_to_send()
        client.read_server(flight)
        assert client.suite is not None
        secrets = client._secrets
        requested = any(msg[0] == 13 for msg in client.server_msgs)
        _FLIGHTS[index] = FirstFlight(index, ch, flight, client.suite, b"".join(client.transcript),
                                      secrets["c_hs"], secrets["c_ap"], requested)
    return _FLIGHTS[index]


class SecondFlight:
    """Turns a `second_flight` op stream into the byte chunks a client would send, one chunk per op."""

    def __init__(self, ff: FirstFlight) -> None:
        self.ff = ff
        self.hash_name = ff.suite.hash_name
        self.transcript = hashlib.new(self.hash_name, ff.transcript)
        self.hs = Protection(ff.suite.suite, ff.client_hs)
        self.ap = Protection(ff.suite.suite, ff.client_ap)

    def _hs(self, message: bytes, padding: int, extra: bytes = b"") -> bytes:
        self.transcript.update(message)
        return self.hs.seal(22, message + extra, padding)

    def chunk(self, code: int, payload: bytes) -> bytes:
        kind, padding = code & 0x0F, (code >> 4) * 16
        if kind != OP_RAW:
            payload = payload[:MAX_SEALED_PAYLOAD]  # with padding and our own bytes, within 2^14
        if kind == OP_HS:
            return self._hs(payload, padding)
        if kind in (OP_ALERT, OP_APP):
            return self.hs.seal(21 if kind == OP_ALERT else 23, payload, padding)
        if kind == OP_INNER:
            return self.hs.seal(payload[0] if payload else 0, payload[1:], padding)
        if kind == OP_FINISHED:
            verify = ks.finished_verify_data(self.hash_name, self.ff.client_hs, self.transcript.digest())
            return self._hs(m.finished(verify), padding, payload)
        if kind == OP_CERT:
            chain, _ = client_chain()
            return self._hs(m.certificate(chain, context=payload[:255]), padding)
        if kind == OP_EMPTY_CERT:
            return self._hs(m.certificate([], context=payload[:255]), padding)
        if kind == OP_CERT_VERIFY:
            _, key = client_chain()
            content = m.certificate_verify_content(self.transcript.digest(), server=False)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            signature = key.sign(content, ec.ECDSA(hashes.SHA256()))
            return self._hs(m.certificate_verify(0x0403, signature), padding)
        if kind == OP_AFTER:
            return self.ap.seal(payload[0] if payload else 23, payload[1:], padding)
        return payload  # OP_RAW and unassigned codes: the bytes as they are


def after_handshake(hs: ServerHandshake) -> None:
    """appd's side of a completed handshake: import the exported state and read what followed the Finished."""
    state = hs.export()
    layer = RecordLayer.from_traffic_state(state)
    try:
        layer.receive_data(hs.trailing)
        while layer.next_event() is not None:
            pass
    except LocalAlert as exc:
        check_local_alert(exc)
    except Alert:
        pass
    record_types(layer.data_to_send())


# ---- the TLS 1.2 second client flight --------------------------------------------------------------

# Ops of the `second_flight12` input. A record is plaintext until the harness sent a change_cipher_spec
# with keys to seal under (OP12_CCS after OP12_KEY_EXCHANGE, or at once when resumed), sealed under the
# client write key after it; the op byte's high bit keeps one record plaintext all the same.
OP12_HS = 0  # payload as a handshake record (and hashed into the transcript)
OP12_ALERT = 1  # payload as an alert record
OP12_APP = 2  # payload as an application_data record
OP12_RECORD = 3  # payload[0] is the record's content type, the rest its content
OP12_RAW = 4  # payload fed as is
OP12_FINISHED = 5  # the client Finished for the transcript so far, then payload, in one record
OP12_CERT = 6  # a Certificate with the harness's client chain
OP12_CERT_VERIFY = 7  # a CertificateVerify by the harness's client key over the handshake messages so far
OP12_KEY_EXCHANGE = 8  # the ClientKeyExchange of the fixed client key, payload (if any) as the point sent
OP12_CCS = 9  # a change_cipher_spec record, payload (if any) as its content
OP12_EMPTY_CERT = 10  # a Certificate with no entries
OP12_PLAIN = 0x80  # or-ed into an op: its record goes in plaintext whatever came before
# The suites the client offers in each configuration, so that every kind of record protection and both
# PRF hashes are reached: ECDSA AES-128-GCM, ECDSA ChaCha20-Poly1305 over P-256, Ed25519 with AES-256-GCM
# (SHA-384), RSA with AES-256-GCM (SHA-384).
SUITES12_BY_CONFIG = ([0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8], [0xCCA9], [0xC02C], [0xC030, 0xCCA8])


class FixedClient12(Client12):
    """tests.tls12client.Client12 with a fixed random and fixed keys: its ClientHello is the same in every process."""

    def __init__(self, index: int, **kw: object) -> None:
        super().__init__(suites=SUITES12_BY_CONFIG[index], **kw)  # type: ignore[arg-type]
        self.hello.random = hashlib.sha256(b"fuzz client12 random").digest()

    def ephemeral(self, group: int) -> x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey:
        return _CLIENT_X25519 if group == X25519 else _CLIENT_P256


@dataclass
class FirstFlight12:
    """A TLS 1.2 ClientHello and ``new_server(index)``'s answer: a full first flight, or with ``resumed`` the
    ServerHello, ChangeCipherSpec and Finished of an abbreviated handshake."""

    index: int
    resumed: bool
    client_hello: bytes
    server_flight: bytes
    client: Client12  # what the client knows after that flight (when resumed: the keys, and our Finished)


_FLIGHTS12: dict[tuple[int, bool], FirstFlight12] = {}
_SESSION_ID = hashlib.sha256(b"fuzz client12 session").digest()


def first_flight12(index: int, resumed: bool = False) -> FirstFlight12:
    """Once per configuration and kind: the server is reproducible, so is its answer."""
    index %= len(CONFIG_NAMES)
    if (index, resumed) not in _FLIGHTS12:
        client = FixedClient12(index)
        master = b""
        if resumed:
            ticket, master = _session12(index)
            client.hello.set(35, ticket)  # session_ticket
            client.hello.session_id = _SESSION_ID
        ch = client.client_hello_record()
        server = new_server(index)
        server.receive_data(ch)
        flight = server.data_to_send()
        client.read_server(flight)
        if resumed:
            assert server.info.resumed, "the harness's own ticket was not taken"
            client.master = master
            client.derive_keys()
            assert client.rest[:6] == CCS
            _, fin = client.server_reader().open(client.rest[6:11], client.rest[11:])
            client.messages += fin
        _FLIGHTS12[index, resumed] = FirstFlight12(index, resumed, ch, flight, client)
    return _FLIGHTS12[index, resumed]


def _session12(index: int) -> tuple[bytes, bytes]:
    """A full handshake in ``config(index)`` by the harness itself: the ticket it ends with, and the master secret."""
    ff = first_flight12(index)
    flight = SecondFlight12(ff)
    auth = 13 in ff.client.server_msgs  # a CertificateRequest
    codes = [OP12_CERT] * auth + [OP12_KEY_EXCHANGE] + [OP12_CERT_VERIFY] * auth + [OP12_CCS, OP12_FINISHED]
    server = new_server(index)
    server.receive_data(ff.client_hello)
    server.data_to_send()
    for code in codes:
        server.receive_data(flight.chunk(code, b""))
    out = server.data_to_send()
    assert server.complete and out[5] == 4, "no NewSessionTicket"
    nst = out[5 : 5 + int.from_bytes(out[3:5], "big")]
    return nst[10:], flight.client.master


class SecondFlight12:
    """Turns a `second_flight12` op stream into the byte chunks a TLS 1.2 client would send, one chunk per op."""

    def __init__(self, ff: FirstFlight12) -> None:
        self.client = copy.copy(ff.client)  # every field it changes is rebound, never changed in place
        self.sealed = False

    def _record(self, content_type: int, content: bytes, plain: bool) -> bytes:
        if self.sealed and not plain:
            return self.client.protect(content, content_type)
        return record(content_type, content)

    def _hs(self, message: bytes, plain: bool) -> bytes:
        self.client.messages += message
        return self._record(22, message, plain)

    def chunk(self, code: int, payload: bytes) -> bytes:
        kind, plain, c = code & 0x7F, bool(code & OP12_PLAIN), self.client
        if kind != OP12_RAW:
            payload = payload[:MAX_SEALED_PAYLOAD]  # with a message the harness adds, within 2^14
        if kind == OP12_HS:
            return self._hs(payload, plain)
        if kind in (OP12_ALERT, OP12_APP):
            return self._record(21 if kind == OP12_ALERT else 23, payload, plain)
        if kind == OP12_RECORD:
            return self._record(payload[0] if payload else 0, payload[1:], plain)
        if kind == OP12_FINISHED:
            return self._record(22, c.finished() + payload, plain)
        if kind == OP12_CERT:
            return self._hs(m12.certificate(client_chain()[0]), plain)
        if kind == OP12_EMPTY_CERT:
            return self._hs(m12.certificate([]), plain)
        if kind == OP12_CERT_VERIFY:
            key = client_chain()[1]
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            signature = key.sign(c.messages, ec.ECDSA(hashes.SHA256()))  # RFC 5246 §7.4.8: the messages so far
            return self._hs(m.certificate_verify(0x0403, signature), plain)
        if kind == OP12_KEY_EXCHANGE:
            point = payload[:255] or None
            if not c.server_share:  # resumed: there was no ServerKeyExchange to answer, nor keys to derive
                return self._hs(m.handshake(16, vector(1, point or bytes(32))), plain)
            return self._record(22, c.client_key_exchange(point), plain)
        if kind == OP12_CCS:
            self.sealed = c.keys is not None
            return record(20, payload or b"\x01")
        return payload  # OP12_RAW and unassigned codes: the bytes as they are


class Chunks(Protocol):
    def chunk(self, code: int, payload: bytes) -> bytes: ...


def run_second_flight(index: int, client_hello: bytes, server_flight: bytes, flight: Chunks, data: bytes) -> None:
    """Both second-flight targets: a fresh server of config ``index`` answers ``client_hello`` with exactly
    ``server_flight``, then takes the records ``flight`` makes of the op stream ``data``. Raises Finding
    for an alert not queued, an engine left open after the peer's alert, or anything else."""
    hs = new_server(index)
    hs.receive_data(client_hello)
    if hs.data_to_send() != server_flight:
        raise Finding("the server's first flight is not reproducible")
    try:
        for code, payload in ops(data):
            hs.receive_data(flight.chunk(code, payload))
            record_types(hs.data_to_send())
    except LocalAlert as exc:
        check_alert_queued(exc, hs.data_to_send())
        return
    except Alert:
        if hs.state is not State.CLOSED:
            raise Finding("engine still open after the peer's alert") from None
        return
    if hs.complete:
        after_handshake(hs)

"""Drive the server engine against a real OpenSSL client (Python's ``ssl`` over MemoryBIO), no sockets.

After the handshake the engine's exported state is imported into a fresh :class:`RecordLayer`, as
appd does, so every test here also crosses the export/import boundary.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import certs
from tls_privsep.secured.credentials import Credential, CredentialStore
from tls_privsep.secured.handshake import ServerConfig, ServerHandshake
from tls_privsep.secured.peerauth import ClientCertVerifier
from tls_privsep.secured.tickets import TicketKeys
from tls_privsep.shared.record import ApplicationData, CloseNotify, Event, RecordLayer
from tls_privsep.shared.state import TLS13, TrafficState


@dataclass
class Pki:
    ca: x509.Certificate
    ca_pem: str
    creds: dict[str, Credential]
    client_ca: x509.Certificate
    client_ca_key: object
    tmp: Path


@functools.cache
def pki() -> Pki:
    ca, ca_key = certs.make_ca("tls-privsep test CA")
    creds = {}
    for kind in ("rsa2048", "ecdsa", "ed25519"):
        leaf, key = certs.make_leaf(ca, ca_key, kind, names=("localhost", "*.example.test"))  # type: ignore[arg-type]
        creds[kind] = Credential.from_objects([leaf], key)
    client_ca, client_ca_key = certs.make_ca("tls-privsep client CA")
    tmp = Path(tempfile.mkdtemp(prefix="tls-privsep-test-"))
    return Pki(ca, ca.public_bytes(serialization.Encoding.PEM).decode(), creds, client_ca, client_ca_key, tmp)


def client_context(*, client_cert: str | None = None, tls12: bool = False) -> ssl.SSLContext:
    """An OpenSSL client that speaks TLS 1.3 only, or with ``tls12`` TLS 1.2 only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls12:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=pki().ca_pem)
    if client_cert is not None:
        p = pki()
        leaf, key = certs.make_leaf(p.client_ca, p.client_ca_key, client_cert, names=("client",), client=True)  # type: ignore[arg-type]
        cert_path, key_path = certs.write_pair(p.tmp, [leaf], key)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def server_config(kinds: tuple[str, ...] = ("ecdsa",), **kw: object) -> ServerConfig:
    creds = CredentialStore([pki().creds[k] for k in kinds])
    kw.setdefault("ticket_keys", TicketKeys())
    if kw.get("post_quantum") == "require":
        kw.setdefault("versions", frozenset({TLS13}))  # require excludes TLS 1.2 (no hybrid there)
    return ServerConfig(credentials=creds, **kw)  # type: ignore[arg-type]


def completed_engine(suite: int, tickets: int) -> tuple[ServerHandshake, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """An engine whose handshake with a real OpenSSL client is complete and not yet exported, the client,
    and the client's incoming BIO (holding the tickets, if any, not yet read) and outgoing one."""
    engine = ServerHandshake(server_config(cipher_suites=(suite,), tickets=tickets))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    engine.receive_data(outgoing.read())
    incoming.write(engine.data_to_send())
    client.do_handshake()
    engine.receive_data(outgoing.read())
    assert engine.complete
    incoming.write(engine.data_to_send())  # the tickets (if any)
    return engine, client, incoming, outgoing


def client_verifier() -> ClientCertVerifier:
    return ClientCertVerifier(ca_certs=[pki().client_ca])


def imported(engine: ServerHandshake) -> RecordLayer:
    """A completed engine's traffic state imported into a fresh record layer, as appd does it, fed
    the bytes that followed the client Finished."""
    rl = RecordLayer.from_traffic_state(engine.export())
    rl.receive_data(engine.trailing)
    return rl


class Pair:
    """One client/server pair wired through memory."""

    def __init__(self, server: ServerHandshake, ctx: ssl.SSLContext, *, sni: str = "localhost",
                 session: ssl.SSLSession | None = None) -> None:
        self.server = server
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.client = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=sni, session=session)
        self.rl: RecordLayer | None = None
        self.state: TrafficState | None = None

    def handshake(self) -> None:
        client_done = False
        for _ in range(20):
            if not client_done:
                try:
                    self.client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            data = self.outgoing.read()
            if data:
                self.server.receive_data(data)
            reply = self.server.data_to_send()
            if reply:
                self.incoming.write(reply)
            if client_done and self.server.complete:
                self._import()
                return
            if not data and not reply:
                raise AssertionError("handshake stalled")
        raise AssertionError("handshake did not finish")

    def _import(self) -> None:
        state = self.server.export()
        self.state = state
        rl = RecordLayer.from_traffic_state(state)
        rl.receive_data(self.server.trailing)
        self.rl = rl

    def pump_to_server(self) -> list[Event]:
        assert self.rl is not None
        self.rl.receive_data(self.outgoing.read())
        events = []
        while (ev := self.rl.next_event()) is not None:
            events.append(ev)
        answer = self.rl.data_to_send()
        if answer:
            self.incoming.write(answer)
        return events

    def client_send(self, data: bytes) -> bytes:
        """Client writes ``data``; returns what the server's record layer delivered."""
        self.client.write(data)
        got = b""
        for ev in self.pump_to_server():
            if isinstance(ev, ApplicationData):
                got += ev.data
        return got

    def server_send(self, data: bytes) -> bytes:
        """Server writes ``data``; returns what the client read."""
        assert self.rl is not None
        self.incoming.write(self.rl.send_application_data(data))
        out = b""
        while len(out) < len(data):
            try:
                out += self.client.read(65536)
            except ssl.SSLWantReadError:
                break
        return out

    def close(self) -> None:
        """close_notify both ways."""
        assert self.rl is not None
        with contextlib.suppress(ssl.SSLWantReadError):
            self.client.unwrap()
        events = self.pump_to_server()
        assert any(isinstance(e, CloseNotify) for e in events)
        self.incoming.write(self.rl.send_alert(0, level=1))
        self.client.unwrap()

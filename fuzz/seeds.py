"""Write seed corpora for every fuzz target from real handshakes run in memory.

A real TLS 1.3 client (Python's ``ssl``, i.e. OpenSSL, over MemoryBIO) talks to the reproducible
server of fuzz/common.py in each configuration: a full handshake, ALPN, resumption with a ticket, a
HelloRetryRequest with a cookie, client certificates. Every byte the client sends is recorded; so are
the channel messages appd and secured would exchange for it and the blob its exported state seals
to. Because the server is reproducible, the recorded client bytes replay in the harness process.

Usage: ``python -m fuzz.seeds [OUT_DIR]`` from the repository root (default fuzz/seeds). Each
target's directory is emptied first. Needs no atheris.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import ssl
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cbor2

from fuzz import common
from fuzz.base import BLOB_CHANNEL_ID, BLOB_CONN, BLOB_KEY, key_material12, op
from tests.inmemory import Pair, client_context
from tests.tls12client import Client12
from tests.tlsclient import P256, P256MLKEM768, X25519, X25519MLKEM768, Client, Hello, record
from tls_privsep.secured import messages as m
from tls_privsep.secured import messages12 as m12
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared import blob as B
from tls_privsep.shared import channel as C
from tls_privsep.shared import config
from tls_privsep.shared.record import Tls12Protection, whole_records
from tls_privsep.shared.state import TLS12, TrafficState
from tls_privsep.shared.tls12 import SUITES12
from tls_privsep.shared.wire import u16, vector

TARGETS = ("record", "client_hello", "handshake", "second_flight", "second_flight12", "channel", "blob",
           "config")
SUITE_IDS = (0x1301, 0x1302, 0x1303)  # fuzz_record's order (sorted)
SUITE12_IDS = tuple(sorted(SUITES12))
RECORD_MODES = ("plaintext", "handshake", "application", "skip_early", "skip_plain", "sealed_app", "sealed_hs",
                "tls12_handshake", "tls12_application", "sealed12_app", "sealed12_hs")  # fuzz_record's MODES


def record_mode(mode: str, suite_index: int = 0) -> bytes:
    """fuzz_record's mode byte: the mode, and the suite among its version's (sorted)."""
    return bytes([RECORD_MODES.index(mode) + len(RECORD_MODES) * suite_index])


class Recorder:
    """Stands in for the ServerHandshake a Pair drives and keeps every byte the client sent."""

    def __init__(self, server: ServerHandshake) -> None:
        self._server = server
        self.flights: list[bytes] = []
        self.replies: list[bytes] = []

    def receive_data(self, data: bytes) -> None:
        self.flights.append(bytes(data))
        self._server.receive_data(data)

    def data_to_send(self) -> bytes:
        out = self._server.data_to_send()
        self.replies.append(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class Session:
    """One recorded client connection against ``common.new_server(index)``."""

    def __init__(self, index: int, ctx: ssl.SSLContext, *, sni: str = "localhost",
                 session: ssl.SSLSession | None = None) -> None:
        self.index = index
        self.recorder = Recorder(common.new_server(index))
        self.pair = Pair(self.recorder, ctx, sni=sni, session=session)  # type: ignore[arg-type]
        self.ok = True
        self.app: list[bytes] = []  # client records after the handshake
        try:
            self.pair.handshake()
        except Exception:
            self.ok = False  # a refused client is a seed too

    @property
    def stream(self) -> bytes:
        return b"".join(self.recorder.flights)

    @property
    def state(self) -> TrafficState | None:
        return self.pair.state

    def send(self, data: bytes) -> None:
        """The client writes ``data`` (and reads whatever the server sent, tickets included)."""
        self.pair.client.write(data)
        out = self.pair.outgoing.read()
        self.app.append(out)
        assert self.pair.rl is not None
        self.pair.rl.receive_data(out)
        while self.pair.rl.next_event() is not None:
            pass
        self.pair.incoming.write(self.pair.rl.send_application_data(b"ok"))
        with contextlib.suppress(ssl.SSLWantReadError):
            self.pair.client.read(100)

    def close(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self.pair.client.unwrap()
        self.app.append(self.pair.outgoing.read())


def sessions() -> list[Session]:
    out = []
    ctx = client_context()
    first = Session(0, ctx)
    first.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first.send(b"x" * 3000)
    first.close()
    out.append(first)
    resumed = Session(0, ctx, session=first.pair.client.session)
    resumed.send(b"again")
    out.append(resumed)
    alpn = client_context()
    alpn.set_alpn_protocols(["http/1.1", "h2"])
    out.append(Session(0, alpn, sni="www.example.test"))
    bad_alpn = client_context()
    bad_alpn.set_alpn_protocols(["spdy/3"])
    out.append(Session(0, bad_alpn))
    hrr = Session(1, ctx)  # P-256 only: OpenSSL's x25519 share gets a HelloRetryRequest with a cookie
    hrr.send(b"after a retry")
    out.append(hrr)
    out.append(Session(1, ctx, session=hrr.pair.client.session))
    for index, kind in ((2, "ecdsa"), (2, None), (3, "rsa2048"), (3, "ed25519"), (3, None)):
        s = Session(index, client_context(client_cert=kind))
        if s.ok:
            s.send(b"authenticated")
        out.append(s)
    psk_ke = client_context(client_cert="ecdsa")
    first_auth = Session(2, psk_ke)
    if first_auth.ok:
        first_auth.send(b"x")
        out.append(Session(2, psk_ke, session=first_auth.pair.client.session))
    return out


def split_records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = whole_records(data[pos:])
        if n == 0:
            break
        first = 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
        out.append(data[pos : pos + first])
        pos += first
    return out


def client_hellos(recorded: Iterable[Session]) -> list[bytes]:
    """Every ClientHello message (no record header): the real ones, then edited ones."""
    hellos = []
    for s in recorded:
        for rec in split_records(s.stream):
            if rec[0] == 22 and len(rec) > 9 and rec[5] == 1:
                hellos.append(rec[5:])
    edited = Client(alpn=[b"h2", b"http/1.1"])
    h = edited.hello
    h.set(42, b"")  # early_data
    h.set(44, vector(2, b"cookie"))
    h.set(21, bytes(40))  # padding
    h.set(50, vector(2, u16(0x0403) + u16(0x0804)))  # signature_algorithms_cert
    h.set(5, b"\x01\x00\x00\x00\x00")  # status_request (ignored)
    h.set(45, vector(1, b"\x00\x01"))
    identity = vector(2, b"\x01" * 40) + b"\x00\x00\x00\x10"
    h.set(41, vector(2, identity) + vector(2, vector(1, b"\x02" * 32)))  # pre_shared_key, last
    hellos.append(h.encode())
    legacy = Hello(omit_extensions_block=True)
    hellos.append(legacy.encode())
    hellos += [c.hello.encode() for c in hybrid_clients()]
    hellos += tls12_hellos()
    return hellos


def tls12_hellos() -> list[bytes]:
    """TLS 1.2 ClientHellos, with the extensions only TLS 1.2 reads: as tests/tls12client.py sends it, one
    offering a ticket, and one with the SCSVs and every point format instead."""
    offer = Client12(ticket=bytes(range(200)))
    offer.hello.session_id = bytes(32)
    legacy = Client12(ems=False, ticket=None)
    legacy.hello.drop(0xFF01)  # renegotiation_info, signalled by the SCSV instead
    legacy.hello.cipher_suites += [0x00FF, 0x5600]
    legacy.hello.set(11, bytes([3, 0, 1, 2]))  # ec_point_formats: uncompressed and both compressed forms
    return [Client12().hello.encode(), offer.hello.encode(), legacy.hello.encode()]


def hybrid_clients() -> list[Client]:
    """Hellos with the post-quantum hybrid shares (draft-ietf-tls-ecdhe-mlkem), as Chrome and OpenSSL 3.5 send
    them: Python's ssl (OpenSSL 3.0) knows no hybrid, so these are built by hand. The server's encapsulation is
    random, so a recorded exchange would not replay past the ServerHello; the first flight is what they seed."""
    return [
        Client(groups=(X25519MLKEM768, X25519, P256), share_groups=(X25519MLKEM768, X25519)),
        Client(groups=(P256MLKEM768, P256), share_groups=(P256MLKEM768,)),
        Client(groups=(X25519MLKEM768, X25519), share_groups=(X25519,)),  # listed, not shared
    ]


def record_seeds(recorded: list[Session]) -> list[bytes]:
    seeds = []
    for s in recorded[:4]:
        stream = s.stream
        first = split_records(stream)[0] if stream else b""
        seeds.append(record_mode("plaintext") + u16(len(first)) + stream)  # ClientHello, CCS, encrypted flight
        rest = stream[len(first) :]
        seeds.append(record_mode("handshake") + u16(7) + rest)  # handshake keys: the encrypted records
        seeds.append(record_mode("application") + u16(0) + b"".join(s.app))  # application keys: data, close_notify
        seeds.append(record_mode("skip_early") + u16(0) + rest)  # skipping early data
        seeds.append(record_mode("skip_plain") + u16(0) + b"\x17\x03\x03\x00\x05hello" + first)  # skip after HRR
    # Sealed op streams: op = inner type | padding << 5.
    app = (op(23, b"hello") + op(23) + op(23 | 0x40, b"padded") + op(22, b"\x18\x00\x00\x01\x01")
           + op(23, b"after update") + op(21, b"\x01\x5a") + op(21, b"\x01\x00"))
    fragments = op(22, b"\x14\x00\x00\x20" + bytes(10)) + op(22, bytes(22)) + op(20, b"\x01") + op(0, b"")
    hs = op(22, b"\x14\x00\x00\x20" + bytes(32)) + op(21, b"\x02\x28") + op(23, b"early")
    for suite in range(3):
        seeds.append(record_mode("sealed_app", suite) + u16(9) + app)
        seeds.append(record_mode("sealed_hs", suite) + u16(5) + fragments)
        seeds.append(record_mode("sealed_hs", suite) + u16(0) + hs)
    seeds.append(record_mode("sealed_app") + u16(0) + op(22, b"\x18\x00\x00\x01\x00") * 3 + op(22, b"\x0b\x00\x00\x00"))
    return seeds + record12_seeds()


def record12_seeds() -> list[bytes]:
    """TLS 1.2: a client's second flight around its change_cipher_spec, and what follows the handshake."""
    client_hello = b"\x01\x00\x00\x06" + b"\x03\x03" + bytes(4)
    cke, fin = b"\x10\x00\x00\x21\x20" + bytes(32), b"\x14\x00\x00\x0c" + bytes(12)
    seeds = []
    for index, suite in enumerate(SUITE12_IDS):
        km = key_material12(SUITES12[suite].key_material_len, 1)
        hs_prot, app_prot = Tls12Protection(suite, km), Tls12Protection(suite, km, 1)
        flight = (b"\x16\x03\x03" + u16(len(cke)) + cke + b"\x14\x03\x03\x00\x01\x01" + hs_prot.seal(22, fin)
                  + hs_prot.seal(23, b"GET / HTTP/1.1\r\n\r\n"))
        seeds.append(record_mode("tls12_handshake", index) + u16(len(cke) + 5) + flight)
        after = b"".join(app_prot.seal(ctype, body) for ctype, body in (
            (23, b"hello"), (23, b""), (21, b"\x01\x5a"), (22, client_hello), (23, b"x" * 300), (22, client_hello),
            (21, b"\x01\x00")))
        seeds.append(record_mode("tls12_application", index) + u16(40) + after)
        ops12 = (op(23, b"hello") + op(23) + op(21, b"\x01\x64") + op(22, client_hello[:5]) + op(22, client_hello[5:])
                 + op(23, b"after") + op(20, b"\x01") + op(21, b"\x02\x28"))
        seeds.append(record_mode("sealed12_app", index) + u16(30) + ops12)
        ops12_hs = (op(22, cke) + op(21, b"\x01\x5a") + op(0x80) + op(22, fin) + op(22, fin[:6]) + op(20, b"\x01")
                    + op(21, b"\x01\x00"))
        seeds.append(record_mode("sealed12_hs", index) + u16(12) + ops12_hs)
    return seeds


def tls12_states() -> list[TrafficState]:
    """TLS 1.2 states as secured exports them (after both Finished messages), one per suite: seeds for
    the blob target, whose real handshakes are TLS 1.3."""
    return [TrafficState(suite, bytearray(key_material12(SUITES12[suite].key_material_len, 1)),
                         bytearray(key_material12(SUITES12[suite].key_material_len, 2)), read_seq=1, write_seq=1,
                         records_protected=1, alpn="h2" if suite % 2 else None, sni="localhost", version=TLS12)
            for suite in SUITE12_IDS]


def handshake_seeds(recorded: list[Session]) -> list[bytes]:
    seeds = []
    for s in recorded:
        stream = s.stream
        first = len(s.recorder.flights[0]) if s.recorder.flights else 0
        seeds.append(bytes([s.index]) + u16(first) + stream)
        seeds.append(bytes([s.index]) + u16(3) + stream)  # cut inside the first record header
    # Hand-made first flights: an edited hello in every configuration, and a pre-1.3 hello.
    for index in range(len(common.CONFIG_NAMES)):
        c = Client(alpn=[b"h2"])
        c.hello.set(42, b"")
        seeds.append(bytes([index]) + u16(0) + c.client_hello_record() + record(23, b"early data"))
    seeds.append(bytes([0]) + u16(0) + record(22, Hello(omit_extensions_block=True).encode(), 0x0301))
    for index in range(len(common.CONFIG_NAMES)):
        for c in hybrid_clients():
            hello = c.client_hello_record()
            seeds.append(bytes([index]) + u16(len(hello)) + hello)
            share = u16(51) + u16(len(dict(c.hello.extensions)[51]))
            seeds.append(bytes([index]) + u16(hello.index(share) + 40) + hello)  # cut inside the key share
    for index in range(len(common.CONFIG_NAMES)):  # TLS 1.2: the hello, then a whole second flight
        c = Client12()
        server = common.new_server(index)
        hello = c.client_hello_record()
        server.receive_data(hello)
        c.read_server(server.data_to_send())
        cert = b""
        if 13 in c.server_msgs:  # a CertificateRequest: an empty Certificate
            cert = record(22, m12.certificate([]))
            c.messages += cert[5:]
        seeds.append(bytes([index]) + u16(len(hello)) + hello + cert + c.full_flight())
    return seeds


def second_flight_seeds() -> list[bytes]:
    ccs = op(common.OP_RAW, b"\x14\x03\x03\x00\x01\x01")
    fin = op(common.OP_FINISHED)
    after = op(common.OP_AFTER, b"\x17GET / HTTP/1.1\r\n\r\n") + op(
        common.OP_AFTER, b"\x16\x18\x00\x00\x01\x01"
    ) + op(common.OP_AFTER, b"\x15\x01\x00")
    cert = op(common.OP_CERT) + op(common.OP_CERT_VERIFY)
    empty = op(common.OP_EMPTY_CERT)
    return [
        bytes([0]) + fin,
        bytes([0]) + ccs + fin + after,
        bytes([0]) + op(common.OP_HS, m.finished(bytes(32))),
        bytes([0]) + op(common.OP_ALERT, b"\x02\x28"),
        bytes([1]) + ccs + fin,
        bytes([1]) + op(common.OP_FINISHED | 0x30, b"\x00\x00\x00\x00"),
        bytes([2]) + empty + fin + after,
        bytes([2]) + ccs + cert + fin + after,
        bytes([2]) + op(common.OP_CERT, b"ctx") + op(common.OP_CERT_VERIFY) + fin,
        bytes([3]) + cert + fin + after,
        bytes([3]) + empty + fin,
        bytes([3]) + op(common.OP_INNER, b"\x14\x01") + fin,
    ]


def second_flight12_seeds() -> list[bytes]:
    """Op streams for the TLS 1.2 second flight: the full flight of each configuration (client certificates
    where asked for), the abbreviated one, data after the Finished, and the usual ways to get them wrong."""
    cke, ccs, fin = op(common.OP12_KEY_EXCHANGE), op(common.OP12_CCS), op(common.OP12_FINISHED)
    cert, cv, empty = op(common.OP12_CERT), op(common.OP12_CERT_VERIFY), op(common.OP12_EMPTY_CERT)
    after = (op(common.OP12_APP, b"GET / HTTP/1.1\r\n\r\n") + op(common.OP12_HS, Client().hello.encode())
             + op(common.OP12_ALERT, b"\x01\x00"))
    resumed = 0x04
    return [
        bytes([0]) + cke + ccs + fin + after,
        bytes([1]) + cke + ccs + fin + after,  # P-256, ChaCha20-Poly1305
        bytes([2]) + empty + cke + ccs + fin + after,
        bytes([2]) + cert + cke + cv + ccs + fin,
        bytes([3]) + cert + cke + cv + ccs + fin + after,
        bytes([3]) + empty + cke + ccs + fin,
        bytes([3]) + cert + cke + ccs + fin,  # no CertificateVerify
        bytes([0]) + op(common.OP12_KEY_EXCHANGE, bytes(32)) + ccs + fin,  # an all-zero X25519 point
        bytes([1]) + op(common.OP12_KEY_EXCHANGE, b"\x02" + bytes(32)) + ccs + fin,  # a compressed P-256 point
        bytes([0]) + op(common.OP12_HS, m.handshake(16, b"")) + ccs + fin,
        bytes([0]) + cke + op(common.OP12_CCS, b"\x02") + fin,
        bytes([0]) + cke + fin + ccs,  # Finished before the change_cipher_spec
        bytes([0]) + ccs + cke + fin,
        bytes([0]) + cke + ccs + op(common.OP12_FINISHED | common.OP12_PLAIN),
        bytes([0]) + cke + ccs + op(common.OP12_HS, m.finished(bytes(12))),
        bytes([0]) + cke + ccs + op(common.OP12_FINISHED, b"\x00\x00\x00\x00"),
        bytes([0]) + cke + ccs + op(common.OP12_APP, b"early") + fin,
        bytes([0]) + cke + op(common.OP12_RAW, b"\x16\x03\x03\x00\x02\x14\x00") + ccs + fin,  # CCS mid-message
        bytes([0]) + op(common.OP12_ALERT, b"\x02\x28"),
        bytes([0]) + op(common.OP12_RECORD, b"\x17" + b"GET /") + cke + ccs + fin,
        bytes([resumed]) + ccs + fin + after,
        bytes([resumed | 1]) + ccs + fin,
        bytes([resumed | 2]) + ccs + fin + after,
        bytes([resumed | 3]) + ccs + fin,
        bytes([resumed]) + fin + ccs,
        bytes([resumed]) + ccs + op(common.OP12_HS, m.finished(bytes(12))),
        bytes([resumed]) + cke + ccs + fin,
    ]

def sealed(state: TrafficState, conn: int = BLOB_CONN) -> bytes:
    copy = TrafficState(**{**state.__dict__, "read_secret": bytearray(state.read_secret),
                           "write_secret": bytearray(state.write_secret), "peer_certs": list(state.peer_certs)})
    return B.BlobSealer(BLOB_KEY, BLOB_CHANNEL_ID).seal(copy, conn)


def blob_seeds(states: list[TrafficState]) -> list[bytes]:
    seeds = []
    for state in states:
        blob = sealed(state)
        inner = cbor2.dumps(B._inner_from_state(state), canonical=True)
        seeds += [bytes([0]) + blob, bytes([1]) + blob, bytes([1]) + inner, bytes([2]) + inner]
    seeds.append(bytes([1]) + cbor2.dumps({"a": [1, -2, b"x", "y", None, True, False], 7: {}}, canonical=True))
    return seeds


def channel_seeds(recorded: list[Session], states: list[TrafficState]) -> list[bytes]:
    appd_hello = C.HelloExchange("appd").datagram
    secured_hello = C.HelloExchange("secured").datagram
    s = recorded[0]
    flights, replies = s.recorder.flights, [r for r in s.recorder.replies if r]
    ch, fin = flights[0], flights[-1] if len(flights) > 1 else b""
    msgs = [
        C.Open(conn=1, peer="127.0.0.1:50000", data=ch),
        C.Open(conn=2, peer="[2001:db8::1]:443", data=ch),
        C.Hs(conn=1, data=ch),
        C.Hs(conn=1, data=replies[0] if replies else b"", consumed=len(ch)),
        C.Done(conn=1, data=replies[-1] if replies else b"", consumed=len(fin), blob=sealed(states[0]),
               alert=b"\x17\x03\x03\x00\x13" + bytes(19)),
        C.Fail(conn=1, data=b"\x15\x03\x03\x00\x02\x02\x28", reason="handshake_failure"),
        C.Abort(conn=2),
        C.Error(reason="no_common_version"),
    ]
    encoded = [m.encode() for m in msgs]

    def seq(parts: list[bytes]) -> bytes:
        return b"".join(u16(len(p)) + p for p in parts)

    seeds = [bytes([0]) + d for d in [appd_hello, secured_hello, *encoded]]
    # appd receives (after its open 1): secured's hs, done / fail.
    seeds.append(bytes([1]) + seq([encoded[3], encoded[4]]))
    seeds.append(bytes([1]) + seq([encoded[5], encoded[7]]))
    # secured receives (after open 1, answered, and open 2): hs, abort, a third open.
    seeds.append(bytes([2]) + seq([encoded[2], encoded[6], C.Open(conn=3, peer="x", data=ch).encode()]))
    seeds.append(bytes([3]) + secured_hello)
    seeds.append(bytes([3]) + appd_hello)
    return seeds


CONFIGS = [
    b"",
    b'log_level = "debug"\nlog_format = "console"\nruntime_dir = "/tmp/x"\n',
    b"""[secured]
certificates = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }]
cipher_suites = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
groups = ["x25519", "P-256"]
alpn = ["h2", "http/1.1"]
tickets = 4
ticket_lifetime = 3600
allow_psk_ke = true
client_ca = "/etc/ca.pem"
client_auth = "optional"
hrr_cookie = true
socket = "/run/s.sock"
socket_mode = 0o600
allowed_uids = [0, 1000]
user = "nobody"
max_handshakes_per_channel = 10
handshake_timeout = 2.5

[appd]
listen = ["127.0.0.1:8443", "[::1]:443"]
backend = "tcp://127.0.0.1:8080"
secured_socket = "/run/s.sock"
user = "nobody"
idle_timeout = 60
handshake_timeout = 1e1
drain_timeout = 0
max_connections = 1
proxy_protocol = true
""",
    b'[appd]\nidle_timeout = nan\nlisten = "0.0.0.0:0"\n',
    b"[[secured.certificates]]\ncert = 'c'\nkey = 'k'\n\n[appd.extra]\nx = 1979-05-27T07:32:00Z\n",
    b'[secured]\ntickets = 17\nsocket_mode = 0o1777\nhandshake_timeout = inf\n',
    b'[secured]\n"quoted key" = 1\nallowed_uids = [1, 2]\n',
    b"[appd]\nidle_timeout = 123456789012345678901234567890\n",
    b"x = [[[[1]]], {a = {b = {c = [2]}}}]\n",
]
ADDRESSES = [b"127.0.0.1:8443", b"[::1]:443", b"localhost:0", b"[2001:db8::1]:65535", b"host:-1", b":80", b"x"]


def config_seeds() -> list[bytes]:
    root = Path(__file__).resolve().parents[1]
    files = list(CONFIGS)
    example = root / "systemd" / "config.toml"
    if example.exists():
        files.append(example.read_bytes())
    composed = [  # mode 2 of fuzz_config: [table][setting index][value] lines, settings in sorted order
        [("secured", "allowed_uids", b"[1, 2]"), ("appd", "idle_timeout", b"123456789012345678901234567890"),
         ("secured", None, b'"quoted key" = [[[1]]]'), ("", "log_level", b'"debug"')],
        [("appd", "listen", b'["127.0.0.1:1", "[::1]:2"]'), ("appd", "drain_timeout", b"nan"),
         ("secured", "certificates", b'[{cert = "c", key = "k"}]'), ("secured", "tickets", b"-1")],
    ]
    return ([bytes([0]) + f for f in files] + [bytes([1]) + a for a in ADDRESSES]
            + [bytes([2]) + b"\n".join(composed_line(*line) for line in lines) for lines in composed])


def composed_line(table: str, name: str | None, value: bytes) -> bytes:
    cls = {"": config.Settings, "secured": config.SecuredSettings, "appd": config.AppdSettings}[table]
    names = sorted(f.name for f in dataclasses.fields(cls) if table or f.name not in ("secured", "appd"))
    return bytes([("", "secured", "appd").index(table), names.index(name) if name else 255]) + value


def config_dictionary() -> list[bytes]:
    """libFuzzer dictionary for the config target: every setting name, the tables, TOML punctuation."""
    words = {"[secured]", "[appd]", "[[secured.certificates]]", " = ", "\n", "[", "]", "{", "}", ",", '"', "'",
             '"""', "true", "false", "nan", "inf", "-inf", "0x", "0o", "1e400", "1979-05-27T07:32:00Z", "#"}
    for cls in (config.Settings, config.SecuredSettings, config.AppdSettings):
        words.update(f.name for f in dataclasses.fields(cls))
    words.update(config.SUITE_NAMES)
    words.update(config.GROUP_NAMES)
    return [w.encode() for w in sorted(words)]


def write_dictionary(path: Path, words: list[bytes]) -> None:
    lines = ['"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in w) + '"'
             for w in words]
    path.write_text("\n".join(lines) + "\n")


def write(out: Path, target: str, seeds: list[bytes]) -> int:
    d = out / target
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for data in seeds:
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)  # named like libFuzzer names its inputs
    return len(set(seeds))


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "seeds"
    recorded = sessions()
    states = [s.state for s in recorded if s.state is not None]
    counts = {
        "record": write(out, "record", record_seeds(recorded)),
        "client_hello": write(out, "client_hello", [bytes([0]) + h[4:] for h in client_hellos(recorded)]
                              + [bytes([1]) + h for h in client_hellos(recorded)[:2]]),
        "handshake": write(out, "handshake", handshake_seeds(recorded)),
        "second_flight": write(out, "second_flight", second_flight_seeds()),
        "second_flight12": write(out, "second_flight12", second_flight12_seeds()),
        "channel": write(out, "channel", channel_seeds(recorded, states)),
        "blob": write(out, "blob", blob_seeds(states + tls12_states())),
        "config": write(out, "config", config_seeds()),
    }
    write_dictionary(out / "config.dict", config_dictionary())
    completed = sum(s.ok for s in recorded)
    print(f"seeds: {completed}/{len(recorded)} real handshakes completed; written to {out}")
    for target, n in counts.items():
        print(f"  {target:15} {n:3} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""A scriptable TLS 1.2 client for hostile-input tests, built from the project's own primitives.

Real clients never send the broken messages these tests need, so this one builds a ClientHello from
an editable list of extensions (tlsclient.Hello), reads the server's plaintext first flight, and
then hands out each message of its own second flight separately, so a test can drop, reorder,
corrupt or misplace any of them. Its key derivation is shared/tls12.py's, which the known-answer
tests and the interop suites (Python's ssl, openssl, gnutls, tlslite-ng) hold to the RFCs.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.tlsclient import Hello, ext, record, records, u16s
from tls_privsep.secured import messages as m
from tls_privsep.shared import tls12
from tls_privsep.shared.record import Tls12Protection
from tls_privsep.shared.wire import u8, vector

X25519, P256 = 0x001D, 0x0017
SIG_ALGS = (0x0403, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0807)
SUITES = [0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
EMS, RENEGOTIATION_INFO, EC_POINT_FORMATS, SESSION_TICKET = 23, 0xFF01, 11, 35
CCS = record(20, b"\x01")


class Client12:
    def __init__(self, *, sni: str | None = "localhost", groups: tuple[int, ...] = (X25519, P256),
                 sig_algs: tuple[int, ...] | None = SIG_ALGS, suites: list[int] | None = None,
                 ems: bool = True, ticket: bytes | None = b"", alpn: list[bytes] | None = None) -> None:
        h = self.hello = Hello(cipher_suites=list(SUITES if suites is None else suites))
        if sni is not None:
            h.extensions.append(ext(0, vector(2, u8(0) + vector(2, sni.encode()))))
        h.extensions.append(ext(10, u16s(groups)))
        h.extensions.append(ext(EC_POINT_FORMATS, vector(1, b"\x00")))
        if sig_algs is not None:
            h.extensions.append(ext(13, u16s(sig_algs)))
        if alpn is not None:
            h.extensions.append(ext(16, vector(2, b"".join(vector(1, p) for p in alpn))))
        if ems:
            h.extensions.append(ext(EMS, b""))
        if ticket is not None:
            h.extensions.append(ext(SESSION_TICKET, ticket))
        h.extensions.append(ext(RENEGOTIATION_INFO, vector(1, b"")))
        self.messages = b""  # the transcript
        self.server_msgs: dict[int, bytes] = {}  # handshake type -> message, as received in plaintext
        self.suite: tls12.Suite12Params | None = None
        self.server_random = b""
        self.session_id = b""
        self.group = 0
        self.server_share = b""
        self.master = b""
        self.keys: tuple[bytes, bytes] | None = None
        self._write: Tls12Protection | None = None

    def client_hello_record(self) -> bytes:
        msg = self.hello.encode()
        self.messages += msg
        return records(22, msg, 0x0301)

    def read_server(self, data: bytes) -> None:
        """The plaintext first flight: ServerHello ... ServerHelloDone (or, resumed, up to the CCS)."""
        buf = b""
        pos = 0
        while pos < len(data):
            ctype, length = data[pos], int.from_bytes(data[pos + 3 : pos + 5], "big")
            if ctype != 22:
                break  # a CCS: the rest is under the server's key
            buf += data[pos + 5 : pos + 5 + length]
            pos += 5 + length
        self.rest = data[pos:]
        while buf:
            n = int.from_bytes(buf[1:4], "big")
            msg, buf = buf[: 4 + n], buf[4 + n :]
            self.server_msgs[msg[0]] = msg
            self.messages += msg
            if msg[0] == 2:
                self._on_server_hello(msg)
            elif msg[0] == 12:
                self._on_server_key_exchange(msg)

    def _on_server_hello(self, sh: bytes) -> None:
        self.server_random = sh[6:38]
        sid_len = sh[38]
        self.session_id = sh[39 : 39 + sid_len]
        suite = int.from_bytes(sh[39 + sid_len : 41 + sid_len], "big")
        self.suite = tls12.SUITES12[suite]

    def _on_server_key_exchange(self, ske: bytes) -> None:
        body = ske[4:]
        assert body[0] == 3
        self.group = int.from_bytes(body[1:3], "big")
        self.server_share = body[4 : 4 + body[3]]

    # ---- the client's second flight, a message at a time ------------------------------------

    def ephemeral(self, group: int) -> x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey:
        """The private key of our ClientKeyExchange: a fresh one (a subclass may fix it)."""
        if group == X25519:
            return x25519.X25519PrivateKey.generate()
        return ec.generate_private_key(ec.SECP256R1())

    def client_key_exchange(self, public: bytes | None = None) -> bytes:
        """The ClientKeyExchange message; derives the master secret and keys from our real share
        (``public`` replaces what goes on the wire, for the tests of bad points)."""
        assert self.suite is not None
        key = self.ephemeral(self.group)
        if isinstance(key, x25519.X25519PrivateKey):
            ours = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            pre_master = key.exchange(x25519.X25519PublicKey.from_public_bytes(self.server_share))
        else:
            ours = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.server_share)
            pre_master = key.exchange(ec.ECDH(), peer)
        msg = m.handshake(16, vector(1, ours if public is None else public))
        self.messages += msg
        ems = any(t == EMS for t, _ in self.hello.extensions)
        session_hash = hashlib.new(self.suite.hash_name, self.messages).digest() if ems else None
        self.master = tls12.master_secret(self.suite.hash_name, pre_master, client_random=self.hello.random,
                                          server_random=self.server_random, session_hash=session_hash)
        self.derive_keys()
        return msg

    def derive_keys(self) -> None:
        assert self.suite is not None
        self.keys = tls12.key_block(self.suite, self.master, client_random=self.hello.random,
                                    server_random=self.server_random)

    def finished(self, *, corrupt: bool = False) -> bytes:
        assert self.suite is not None
        digest = hashlib.new(self.suite.hash_name, self.messages).digest()
        vd = bytearray(tls12.finished_verify_data(self.suite.hash_name, self.master, digest, client=True))
        if corrupt:
            vd[0] ^= 1
        msg = m.finished(bytes(vd))
        self.messages += msg
        return msg

    def protect(self, payload: bytes, content_type: int = 22) -> bytes:
        """Seal ``payload`` as one record under the client write key (sequence numbers from 0)."""
        assert self.suite is not None and self.keys is not None
        if self._write is None:
            self._write = Tls12Protection(self.suite.suite, self.keys[0])
        return self._write.seal(content_type, payload)

    def server_reader(self) -> Tls12Protection:
        assert self.suite is not None and self.keys is not None
        return Tls12Protection(self.suite.suite, self.keys[1])

    def full_flight(self) -> bytes:
        """A correct second flight: ClientKeyExchange, ChangeCipherSpec, Finished."""
        cke = record(22, self.client_key_exchange())
        return cke + CCS + self.protect(self.finished())


"""A scriptable TLS 1.3 client for hostile-input tests, built from the project's own primitives.

Real clients never send the broken messages these tests need, so this one builds a ClientHello
from an editable list of extensions, then (when asked) completes the handshake far enough to send
a tampered Finished, CCS or client certificate.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tls_privsep.secured import messages as m
from tls_privsep.shared import keyschedule as ks
from tls_privsep.shared.record import Protection
from tls_privsep.shared.wire import u8, u16, vector

X25519, P256 = 0x001D, 0x0017
X25519MLKEM768, P256MLKEM768 = 0x11EC, 0x11EB  # draft-ietf-tls-ecdhe-mlkem
HYBRID_ECDH = {X25519MLKEM768: X25519, P256MLKEM768: P256}  # the ECDH part of each hybrid
DEFAULT_SIG_ALGS = (0x0403, 0x0804, 0x0805, 0x0806, 0x0807)
PADDING = 21  # the padding extension (RFC 7685): any size, ignored by the server
LARGEST_TLS13_HELLO = 2 + 32 + 1 + 32 + 2 + (2**16 - 2) + 1 + 1 + 2 + (2**16 - 1)  # body bytes: 131,142


def ext(ext_type: int, data: bytes) -> tuple[int, bytes]:
    return (ext_type, data)


def u16s(values: list[int] | tuple[int, ...], length_size: int = 2) -> bytes:
    return vector(length_size, b"".join(u16(v) for v in values))


def record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    return u8(content_type) + u16(version) + vector(2, payload)


def records(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    """``payload`` cut into plaintext records of at most 2^14 bytes (one record if it fits)."""
    return b"".join(record(content_type, payload[i : i + 2**14], version) for i in range(0, len(payload), 2**14))


@dataclass
class Hello:
    """An editable ClientHello. ``extensions`` is the wire order; edit it freely."""

    legacy_version: int = 0x0303
    random: bytes = field(default_factory=lambda: os.urandom(32))
    session_id: bytes = b""
    cipher_suites: list[int] = field(default_factory=lambda: [0x1301, 0x1302, 0x1303])
    compression: bytes = b"\x00"
    extensions: list[tuple[int, bytes]] = field(default_factory=list)
    omit_extensions_block: bool = False

    def encode(self) -> bytes:
        body = u16(self.legacy_version) + self.random + vector(1, self.session_id)
        body += u16s(self.cipher_suites) + vector(1, self.compression)
        if not self.omit_extensions_block:
            body += vector(2, b"".join(u16(t) + vector(2, d) for t, d in self.extensions))
        return m.handshake(1, body)

    def set(self, ext_type: int, data: bytes) -> None:
        self.extensions = [(t, data if t == ext_type else d) for t, d in self.extensions]
        if ext_type not in [t for t, _ in self.extensions]:
            self.extensions.append((ext_type, data))

    def drop(self, ext_type: int) -> None:
        self.extensions = [(t, d) for t, d in self.extensions if t != ext_type]


class Client:
    def __init__(self, *, sni: str | None = "localhost", groups: tuple[int, ...] = (X25519, P256),
                 share_groups: tuple[int, ...] = (X25519,), sig_algs: tuple[int, ...] = DEFAULT_SIG_ALGS,
                 alpn: list[bytes] | None = None) -> None:
        self.keys: dict[int, x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey] = {}
        self.kem_keys: dict[int, mlkem.MLKEM768PrivateKey] = {}  # the ML-KEM part of each hybrid share
        self.hello = Hello()
        exts = self.hello.extensions
        if sni is not None:
            exts.append(ext(0, vector(2, u8(0) + vector(2, sni.encode()))))
        exts.append(ext(10, u16s(groups)))
        exts.append(ext(13, u16s(sig_algs)))
        if alpn is not None:
            exts.append(ext(16, vector(2, b"".join(vector(1, p) for p in alpn))))
        exts.append(ext(51, self.key_share(share_groups)))
        exts.append(ext(43, vector(1, u16(0x0304))))
        exts.append(ext(45, vector(1, b"\x01")))
        self.transcript: list[bytes] = []
        self.suite: ks.SuiteParams | None = None
        self.server_msgs: list[bytes] = []
        self.group: int | None = None  # the server's choice, from its ServerHello
        self._secrets: dict[str, bytes] = {}

    def share(self, group: int) -> bytes:
        if group in HYBRID_ECDH:
            ecdh = self.share(HYBRID_ECDH[group])
            self.keys[group] = self.keys.pop(HYBRID_ECDH[group])
            kem = self.kem_keys[group] = mlkem.MLKEM768PrivateKey.generate()
            ek = kem.public_key().public_bytes_raw()
            return ek + ecdh if group == X25519MLKEM768 else ecdh + ek
        if group == X25519:
            k = x25519.X25519PrivateKey.generate()
            self.keys[group] = k
            return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = ec.generate_private_key(ec.SECP256R1())
        self.keys[group] = key
        return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def key_share(self, share_groups: tuple[int, ...]) -> bytes:
        return vector(2, b"".join(u16(g) + vector(2, self.share(g)) for g in share_groups))

    def client_hello_record(self) -> bytes:
        """The hello as plaintext records: one, or as many 2^14-byte ones as a large hello needs."""
        msg = self.hello.encode()
        self.transcript.append(msg)
        return records(22, msg, 0x0301)

    def make_largest_hello(self) -> None:
        """Grow the hello to the largest ClientHello a TLS 1.3 client may send: 131,142 body bytes.

        Every vector at its maximum: a 32-byte session id, 32,767 cipher suites (2^16-2 bytes) and an
        extensions block of 2^16-1 bytes, most of it a signature_algorithms list of 32,721 schemes.
        That list cannot reach its own 2^16-2 maximum inside a ClientHello: the extension that carries
        it, and the extensions block around it, hold at most 2^16-1 bytes. Only the compression
        methods stay at their TLS 1.3 size (one null byte, §4.1.2): 254 more bytes would make the
        131,396 of MAX_CLIENT_HELLO, but no TLS 1.3 client may send them. The suites, groups and
        schemes we know come first; the rest are values nobody assigned, which a server ignores.
        """
        h = self.hello
        h.session_id = os.urandom(32)
        known = [0x1301, 0x1302, 0x1303]
        h.cipher_suites = known + [0x2000 + i for i in range((2**16 - 2) // 2 - len(known))]
        h.drop(PADDING)
        h.drop(13)
        others = sum(4 + len(d) for _, d in h.extensions)
        room = 2**16 - 1 - others - 4 - 4 - 2  # the block, less the others, two extension headers, a list length
        n = room // 2
        h.set(13, u16s(list(DEFAULT_SIG_ALGS) + [0xFE00 ^ i for i in range(len(DEFAULT_SIG_ALGS), n)]))
        h.set(PADDING, bytes(room - 2 * n))  # RFC 7685: zeros; 0 or 1 byte here
        assert len(h.encode()) - 4 == LARGEST_TLS13_HELLO

    # ---- after the server's first flight ---------------------------------------------------

    def read_server(self, data: bytes) -> None:
        """Process ServerHello (+CCS) + encrypted flight; derive every key the tests need."""
        pos = 0
        read: Protection | None = None
        buf = b""
        while pos < len(data):
            ctype, length = data[pos], int.from_bytes(data[pos + 3 : pos + 5], "big")
            header, payload = data[pos : pos + 5], data[pos + 5 : pos + 5 + length]
            pos += 5 + length
            if ctype == 20:
                continue
            if ctype == 22 and read is None:
                sh = payload
                self._on_server_hello(sh)
                assert self.suite is not None
                read = Protection(self.suite.suite, self._secrets["s_hs"])
                continue
            assert read is not None
            inner, plain = read.open(header, payload)
            assert inner == 22, f"server sent inner type {inner}"
            buf += plain
        while buf:
            n = int.from_bytes(buf[1:4], "big")
            msg, buf = buf[: 4 + n], buf[4 + n :]
            self.server_msgs.append(msg)
            self.transcript.append(msg)
            if msg[0] == 20:
                self._derive_application()

    def _digest(self) -> bytes:
        assert self.suite is not None
        return hashlib.new(self.suite.hash_name, b"".join(self.transcript)).digest()

    def _on_server_hello(self, sh: bytes) -> None:
        self.transcript.append(sh)
        at = 4 + 2 + 32 + 1 + sh[4 + 34]  # header, legacy_version, random, session id
        suite = int.from_bytes(sh[at : at + 2], "big")
        self.suite = ks.SUITES[suite]
        group, share = self._server_share(sh)
        self.group = group
        key = self.keys[group]
        kem = self.kem_keys.get(group)
        if kem is not None:  # the server share: ciphertext (1088) and ECDH share, in the group's order
            kem_first = group == X25519MLKEM768
            ct, share = (share[:1088], share[1088:]) if kem_first else (share[-1088:], share[:-1088])
        if isinstance(key, x25519.X25519PrivateKey):
            ecdhe = key.exchange(x25519.X25519PublicKey.from_public_bytes(share))
        else:
            ecdhe = key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), share))
        if kem is not None:
            ecdhe = kem.decapsulate(ct) + ecdhe if kem_first else ecdhe + kem.decapsulate(ct)
        self.schedule = ks.KeySchedule(self.suite.hash_name)
        self.schedule.derive_handshake(ecdhe)
        c, s = self.schedule.handshake_traffic_secrets(self._digest())
        self._secrets.update(c_hs=c, s_hs=s)

    @staticmethod
    def _server_share(sh: bytes) -> tuple[int, bytes]:
        sid_len = sh[4 + 34]
        exts_at = 4 + 35 + sid_len + 3
        exts = sh[exts_at + 2 :]
        while exts:
            t, n = int.from_bytes(exts[:2], "big"), int.from_bytes(exts[2:4], "big")
            if t == 51:
                d = exts[4 : 4 + n]
                return int.from_bytes(d[:2], "big"), d[4:]
            exts = exts[4 + n :]
        raise AssertionError("no key_share in ServerHello")

    def _derive_application(self) -> None:
        self.schedule.derive_master()
        c, s = self.schedule.application_traffic_secrets(self._digest())
        self._secrets.update(c_ap=c, s_ap=s)

    # ---- the client's second flight ---------------------------------------------------------

    def finished_message(self, *, corrupt: bool = False) -> bytes:
        assert self.suite is not None
        vd = bytearray(ks.finished_verify_data(self.suite.hash_name, self._secrets["c_hs"], self._digest()))
        if corrupt:
            vd[0] ^= 1
        return m.finished(bytes(vd))

    def protect(self, payload: bytes, content_type: int = 22) -> bytes:
        """Seal ``payload`` under the client handshake key (fresh sequence numbers per call chain)."""
        assert self.suite is not None
        if not hasattr(self, "_write"):
            self._write = Protection(self.suite.suite, self._secrets["c_hs"])
        return self._write.seal(content_type, payload)

    def add_transcript(self, msg: bytes) -> None:
        self.transcript.append(msg)

"""Record protection, one direction at a time: the scheme seam and the two AEAD schemes.

The record layer only talks to a :class:`RecordProtection`. :class:`Protection` is TLS 1.3's (RFC
8446 §5.2-5.3: nonce = IV XOR sequence number, the real content type and any padding inside the
ciphertext, the outer header as associated data). :class:`Tls12Protection` is TLS 1.2's AEAD
scheme (RFC 5246 §6.2.3.3 with RFC 5288 or RFC 7905): the real type in the outer header, no padding,
the sequence number and the plaintext's header in the associated data, an explicit 8-byte nonce for
AES-GCM, so its ``expansion`` and ``record_overhead`` differ.
"""

from __future__ import annotations

import struct
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tls_privsep.shared.errors import BadRecordMac, InternalError, ProtocolVersion, RecordOverflow, UnexpectedMessage
from tls_privsep.shared.keyschedule import SUITES, CipherSuite, next_traffic_secret, traffic_key_iv
from tls_privsep.shared.record.framing import HEADER_LEN, MAX_PLAINTEXT, BytesLike, ContentType, header
from tls_privsep.shared.state import TLS12, wipe_bytes
from tls_privsep.shared.tls12 import SUITES12

_TAG_LEN = 16  # all three suites use a 16-byte tag
_MAX_INNER = MAX_PLAINTEXT + 1  # content plus the inner content-type byte (§5.4)
_SEQ_LIMIT = 2**64  # §5.3: a sequence number must never wrap
_OUTER_TYPE = ContentType.application_data  # the outer type of every protected record (§5.2)


class RecordProtection(Protocol):
    """What the record layer asks of a protection scheme: one direction's key and sequence number.

    ``seq`` is the next record's sequence number; every method that protects or deprotects a record
    advances it (a failed open does not). ``expansion`` is how much longer a protected record's
    body is than the inner plaintext :meth:`open_into` writes; ``record_overhead`` is what a
    sealed record adds to its content on the wire, header included (no padding).
    """

    seq: int

    @property
    def expansion(self) -> int: ...

    @property
    def record_overhead(self) -> int: ...

    def seal(self, content_type: int, data: BytesLike, padding: int = 0) -> bytes: ...

    def seal_run_into(self, out: memoryview, content_type: int, data: BytesLike) -> int: ...

    def open(self, header: BytesLike, ciphertext: BytesLike) -> tuple[int, bytes]: ...

    def open_into(self, header: BytesLike, ciphertext: BytesLike, out: memoryview) -> tuple[int, int]: ...

    def next_generation(self) -> RecordProtection: ...

    def wipe(self) -> None: ...


def _content_end(inner: bytes | memoryview) -> int:
    """Where a deprotected record's content ends, its type byte included (§5.4: padding stripped)."""
    n = len(inner)
    if n > _MAX_INNER:
        raise RecordOverflow("inner plaintext longer than 2^14+1 bytes")
    if n and not inner[n - 1]:  # padding: rare, so a copy to strip it is fine
        n = len(bytes(inner).rstrip(b"\x00"))
    if not n:
        raise UnexpectedMessage("protected record without a content type")
    return n


class Protection:
    """TLS 1.3 record protection for one direction: the traffic secret, the AEAD object, the sequence number.

    The AEAD object is built once per key because building it is the expensive part of a small
    record. The secret is kept (as a bytearray, so :meth:`wipe` can overwrite it) because KeyUpdate
    and the secured->appd export need it; key and IV are not, they are derived from it.
    """

    __slots__ = ("_aead", "_hash_name", "_iv", "secret", "seq", "suite")

    expansion = _TAG_LEN
    record_overhead = HEADER_LEN + 1 + _TAG_LEN  # header, inner content type, tag

    def __init__(self, suite: int, secret: bytes | bytearray, seq: int = 0) -> None:
        params = SUITES.get(suite)
        if params is None:
            raise ValueError(f"unsupported cipher suite 0x{suite:04x}")
        if len(secret) != params.hash_len:
            raise ValueError("traffic secret length does not match the suite's hash")
        if not 0 <= seq < _SEQ_LIMIT:
            raise ValueError("sequence number out of range")
        self.suite = suite
        self.seq = seq
        self.secret = bytearray(secret)
        self._hash_name = params.hash_name
        key, iv = traffic_key_iv(params, bytes(self.secret))
        self._iv = int.from_bytes(iv, "big")
        self._aead: AESGCM | ChaCha20Poly1305 | None = (
            ChaCha20Poly1305(key) if suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256 else AESGCM(key)
        )

    def __repr__(self) -> str:
        return f"Protection(suite=0x{self.suite:04x}, seq={self.seq})"

    def _next_nonce(self) -> tuple[AESGCM | ChaCha20Poly1305, bytes]:
        aead = self._aead
        if aead is None:
            raise InternalError("record protection used after wipe")
        if self.seq >= _SEQ_LIMIT:
            raise InternalError("sequence number exhausted")
        return aead, (self._iv ^ self.seq).to_bytes(12, "big")

    def seal(self, content_type: int, data: BytesLike, padding: int = 0) -> bytes:
        """Protect one record and return it with its header (outer type application_data).

        For a handshake message, an alert or a small write: the AEAD's own output and one join cost
        less than preparing a buffer to seal into (bulk goes through :meth:`seal_run_into`).
        """
        inner_len = len(data) + 1 + padding
        if padding < 0:
            raise ValueError("negative padding")
        if inner_len > _MAX_INNER:
            raise ValueError("record content plus padding exceeds 2^14 bytes")
        head = header(_OUTER_TYPE, inner_len + _TAG_LEN)
        inner = b"".join((data, content_type.to_bytes(1, "big"), bytes(padding)))
        aead, nonce = self._next_nonce()
        record = head + aead.encrypt(nonce, inner, head)
        self.seq += 1
        return record

    def seal_run_into(self, out: memoryview, content_type: int, data: BytesLike) -> int:
        """Protect ``data`` as consecutive records of at most 2^14 bytes each (no padding) into ``out``.

        Returns the bytes written (``out`` needs ``record_overhead`` per record beyond ``data``).
        Empty ``data`` gives one empty record. The same records as :meth:`seal` called once per
        2^14-byte piece, written straight into ``out`` in one loop: at bulk sizes a copy per record,
        or the per-record method call and checks, cost as much as the AEAD itself.
        """
        aead, _ = self._next_nonce()  # the checks; each record's nonce is computed below
        n = len(data)
        count = max(1, -(-n // MAX_PLAINTEXT))
        if self.seq + count > _SEQ_LIMIT:
            raise InternalError("sequence number exhausted")
        type_byte = content_type.to_bytes(1, "big")
        full_header = header(_OUTER_TYPE, _MAX_INNER + _TAG_LEN)
        iv, seq, pos = self._iv, self.seq, 0
        with memoryview(data) as src:
            for start in range(0, max(n, 1), MAX_PLAINTEXT):
                size = min(n - start, MAX_PLAINTEXT)
                head = full_header if size == MAX_PLAINTEXT else header(_OUTER_TYPE, size + 1 + _TAG_LEN)
                body = pos + HEADER_LEN
                end = body + size + 1 + _TAG_LEN
                # The AEAD takes its input in one piece, and must not read where it writes: join a copy.
                with src[start : start + size] as chunk, out[body:end] as sealed:
                    aead.encrypt_into((iv ^ seq).to_bytes(12, "big"), b"".join((chunk, type_byte)), head, sealed)
                out[pos:body] = head
                seq += 1
                pos = end
        self.seq = seq
        return pos

    def open(self, header: BytesLike, ciphertext: BytesLike) -> tuple[int, bytes]:
        """Deprotect one record; return (inner content type, content without padding).

        The sequence number only advances on success, so a failed trial decryption (skipped early
        data) leaves the state untouched.
        """
        aead, nonce = self._next_nonce()
        if len(ciphertext) < _TAG_LEN:
            raise BadRecordMac("protected record shorter than its tag")
        try:
            inner = aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None
        self.seq += 1
        n = _content_end(inner)
        return inner[n - 1], inner[: n - 1]

    def open_into(self, header: BytesLike, ciphertext: BytesLike, out: memoryview) -> tuple[int, int]:
        """Deprotect one record into ``out``; return (inner content type, length of the content).

        ``out`` must be exactly ``len(ciphertext) - expansion`` bytes: the content lands at its
        front, the type byte and any padding after it. On failure ``out`` may hold unauthenticated
        bytes, which the caller must drop. The sequence number advances as in :meth:`open`.
        """
        aead, nonce = self._next_nonce()
        if len(ciphertext) < _TAG_LEN:
            raise BadRecordMac("protected record shorter than its tag")
        try:
            aead.decrypt_into(nonce, ciphertext, header, out)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None
        self.seq += 1
        n = _content_end(out)
        return out[n - 1], n - 1

    def next_generation(self) -> Protection:
        """The protection for application_traffic_secret_N+1 (KeyUpdate, §7.2); seq restarts at 0."""
        if self._aead is None:
            raise InternalError("record protection used after wipe")
        return Protection(self.suite, next_traffic_secret(self._hash_name, bytes(self.secret)))

    def wipe(self) -> None:
        """Overwrite the secret in place and drop the key; the object is unusable afterwards."""
        wipe_bytes(self.secret)
        self._aead = None
        self._iv = 0


# -- TLS 1.2 ----------------------------------------------------------------------------------------

# RFC 5246 §6.2.3.3: additional_data = seq_num + TLSCompressed.type + TLSCompressed.version + TLSCompressed.length
_AAD12 = struct.Struct(">QBHH")
_EXPLICIT_NONCE_LEN = 8  # RFC 5288 §3: the part of an AES-GCM nonce that travels with the record


class Tls12Protection:
    """TLS 1.2 AEAD record protection for one direction: AES-GCM (RFC 5288) or ChaCha20-Poly1305 (RFC 7905).

    ``key_material`` is the direction's write key followed by its implicit IV, as the key block gives
    them (sizes in :data:`shared.tls12.SUITES12`). The record keeps its real content type in the
    header and the associated data carries the sequence number, that type, 0x0303 and the plaintext
    length. AES-GCM's nonce is the 4-byte implicit salt followed by 8 explicit bytes sent at the front
    of the record body: we send the sequence number, unique per key as RFC 5288 §3 requires, and take
    whatever the peer sent (a changed one fails the tag). ChaCha20-Poly1305's nonce is the 12-byte IV
    XOR the sequence number, nothing explicit (RFC 7905 §2). A key serves the whole connection: TLS 1.2
    has no KeyUpdate, so the usage limit ends the connection instead (see the record layer).
    """

    __slots__ = ("_aead", "_iv", "_salt", "expansion", "key_material", "record_overhead", "seq", "suite")

    def __init__(self, suite: int, key_material: bytes | bytearray, seq: int = 0) -> None:
        params = SUITES12.get(suite)
        if params is None:
            raise ValueError(f"unsupported TLS 1.2 cipher suite 0x{suite:04x}")
        if len(key_material) != params.key_material_len:
            raise ValueError("key material length does not match the suite's key and IV")
        if not 0 <= seq < _SEQ_LIMIT:
            raise ValueError("sequence number out of range")
        self.suite = suite
        self.seq = seq
        self.key_material = bytearray(key_material)
        key = bytes(self.key_material[: params.key_len])
        iv = bytes(self.key_material[params.key_len :])
        self._aead: AESGCM | ChaCha20Poly1305 | None
        # The implicit IV as an int (ChaCha20-Poly1305) or the salt (AES-GCM, None for ChaCha).
        self._salt: bytes | None
        if params.chacha:
            self._aead, self._iv, self._salt = ChaCha20Poly1305(key), int.from_bytes(iv, "big"), None
            self.expansion = _TAG_LEN
        else:
            self._aead, self._iv, self._salt = AESGCM(key), 0, iv
            self.expansion = _EXPLICIT_NONCE_LEN + _TAG_LEN
        self.record_overhead = HEADER_LEN + self.expansion

    def __repr__(self) -> str:
        return f"Tls12Protection(suite=0x{self.suite:04x}, seq={self.seq})"

    def _reserve(self, count: int) -> AESGCM | ChaCha20Poly1305:
        """The AEAD, once it is known that ``count`` more records fit the sequence number space."""
        aead = self._aead
        if aead is None:
            raise InternalError("record protection used after wipe")
        if self.seq + count > _SEQ_LIMIT:
            raise InternalError("sequence number exhausted")
        return aead

    def seal(self, content_type: int, data: BytesLike, padding: int = 0) -> bytes:
        """Protect one record and return it with its header (outer type ``content_type``)."""
        if padding:
            raise ValueError("TLS 1.2 records carry no padding")
        n = len(data)
        if n > MAX_PLAINTEXT:
            raise ValueError("record content exceeds 2^14 bytes")
        aead = self._reserve(1)
        seq = self.seq
        aad = _AAD12.pack(seq, content_type, TLS12, n)
        salt = self._salt
        if salt is None:
            record = header(content_type, n + _TAG_LEN) + aead.encrypt((self._iv ^ seq).to_bytes(12, "big"), data, aad)
        else:
            explicit = seq.to_bytes(_EXPLICIT_NONCE_LEN, "big")
            sealed = aead.encrypt(salt + explicit, data, aad)
            record = b"".join((header(content_type, n + self.expansion), explicit, sealed))
        self.seq = seq + 1
        return record

    def seal_run_into(self, out: memoryview, content_type: int, data: BytesLike) -> int:
        """Protect ``data`` as consecutive records of at most 2^14 bytes each into ``out``.

        Returns the bytes written (``out`` needs ``record_overhead`` per record beyond ``data``, and
        must not overlap ``data``). Empty ``data`` gives one empty record. The same records as
        :meth:`seal` once per 2^14-byte piece, each sealed where it lands: no inner type byte to
        append, so the AEAD reads the caller's bytes directly.
        """
        n = len(data)
        count = max(1, -(-n // MAX_PLAINTEXT))
        aead = self._reserve(count)
        salt, iv, seq, pos = self._salt, self._iv, self.seq, 0
        expansion = self.expansion
        pack = _AAD12.pack
        with memoryview(data) as src:
            for start in range(0, max(n, 1), MAX_PLAINTEXT):
                size = min(n - start, MAX_PLAINTEXT)
                body = pos + HEADER_LEN
                out[pos:body] = header(content_type, size + expansion)
                if salt is None:
                    nonce, text = (iv ^ seq).to_bytes(12, "big"), body
                else:
                    explicit = seq.to_bytes(_EXPLICIT_NONCE_LEN, "big")
                    nonce, text = salt + explicit, body + _EXPLICIT_NONCE_LEN
                    out[body:text] = explicit
                end = text + size + _TAG_LEN
                with src[start : start + size] as chunk, out[text:end] as sealed:
                    aead.encrypt_into(nonce, chunk, pack(seq, content_type, TLS12, size), sealed)
                seq += 1
                pos = end
        self.seq = seq
        return pos

    def _opening(self, header: BytesLike, ciphertext: BytesLike) -> tuple[AESGCM | ChaCha20Poly1305, bytes, bytes, int]:
        """The checks before a record is opened, and (aead, nonce, associated data, where the sealed part starts)."""
        if header[1] != 3 or header[2] != 3:
            # Judged on the header, before the tag: every TLS 1.2 record after the keys says 0x0303.
            raise ProtocolVersion(f"record version 0x{header[1]:02x}{header[2]:02x} under TLS 1.2 protection")
        aead = self._reserve(1)
        n = len(ciphertext) - self.expansion
        if n < 0:
            raise BadRecordMac("protected record shorter than its nonce and tag")
        seq = self.seq
        salt = self._salt
        if salt is None:
            nonce, skip = (self._iv ^ seq).to_bytes(12, "big"), 0
        else:
            nonce, skip = salt + bytes(ciphertext[:_EXPLICIT_NONCE_LEN]), _EXPLICIT_NONCE_LEN
        return aead, nonce, _AAD12.pack(seq, header[0], TLS12, n), skip

    def open(self, header: BytesLike, ciphertext: BytesLike) -> tuple[int, bytes]:
        """Deprotect one record; return (its content type, from the header; its content).

        The sequence number only advances on success. A plaintext over 2^14 bytes is record_overflow
        once authenticated (RFC 5246 §6.2.3: the peer really sent it).
        """
        aead, nonce, aad, skip = self._opening(header, ciphertext)
        try:
            with memoryview(ciphertext) as whole, whole[skip:] as sealed:
                plain = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None
        self.seq += 1
        if len(plain) > MAX_PLAINTEXT:
            raise RecordOverflow("plaintext longer than 2^14 bytes")
        return header[0], plain

    def open_into(self, header: BytesLike, ciphertext: BytesLike, out: memoryview) -> tuple[int, int]:
        """Deprotect one record into ``out`` (exactly ``len(ciphertext) - expansion`` bytes); return
        (content type, content length). As :meth:`open`; on failure ``out`` may hold unauthenticated bytes."""
        aead, nonce, aad, skip = self._opening(header, ciphertext)
        try:
            with memoryview(ciphertext) as whole, whole[skip:] as sealed:
                aead.decrypt_into(nonce, sealed, aad, out)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None
        self.seq += 1
        n = len(out)
        if n > MAX_PLAINTEXT:
            raise RecordOverflow("plaintext longer than 2^14 bytes")
        return header[0], n

    def next_generation(self) -> Tls12Protection:
        """Never: TLS 1.2 has no KeyUpdate (a caller that asks is a bug)."""
        raise InternalError("TLS 1.2 has no KeyUpdate: one key serves the whole connection")

    def wipe(self) -> None:
        """Overwrite the key material in place and drop the key; the object is unusable afterwards."""
        wipe_bytes(self.key_material)
        self._aead = None
        self._iv = 0
        self._salt = None if self._salt is None else b""

"""Record protection, one direction at a time: the scheme seam and the TLS 1.3 AEAD scheme (RFC 8446 §5.2-5.3).

The record layer only talks to a :class:`RecordProtection`; :class:`Protection` is the TLS 1.3
scheme (nonce = IV XOR sequence number, the real content type and any padding inside the
ciphertext, the outer header as associated data). A TLS 1.2 AEAD scheme (RFC 5288, RFC 7905) is
another class with the same methods: the real type in the outer header, no padding, the sequence
number and header in the associated data, an explicit 8-byte nonce for AES-GCM, so its
``expansion`` and ``record_overhead`` differ.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tls_privsep.shared.errors import BadRecordMac, InternalError, RecordOverflow, UnexpectedMessage
from tls_privsep.shared.keyschedule import SUITES, CipherSuite, next_traffic_secret, traffic_key_iv
from tls_privsep.shared.record.framing import HEADER_LEN, MAX_PLAINTEXT, BytesLike, ContentType, header
from tls_privsep.shared.state import wipe_bytes

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

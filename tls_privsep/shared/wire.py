"""Bounded reads and writes of TLS presentation-language vectors (RFC 8446 §3).

A :class:`Reader` never reads past its end: a length that overruns the data, or a block with bytes
left over, is a ``decode_error``. Sub-blocks are readers of their own, so "a block must be read
exactly" is enforced by calling :meth:`Reader.expect_end` once per block.
"""

from __future__ import annotations

from collections.abc import Iterator

from tls_privsep.shared.errors import DecodeError, LocalAlert


class Reader:
    __slots__ = ("_data", "_end", "_pos", "_what")

    def __init__(self, data: bytes, what: str = "message", start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end
        self._what = what

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def expect_end(self) -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self.remaining} trailing bytes in {self._what}")

    def _truncated(self) -> LocalAlert:
        return DecodeError(f"truncated {self._what}")

    def _take(self, n: int) -> int:
        pos = self._pos
        if n > self._end - pos:
            raise self._truncated()
        self._pos = pos + n
        return pos

    # u8 and u16 index the data directly instead of going through uint: a ClientHello makes dozens.

    def uint(self, size: int) -> int:
        pos = self._pos
        end = pos + size
        if end > self._end:
            raise self._truncated()
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def u8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise self._truncated()
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise self._truncated()
        self._pos = pos + 2
        data = self._data
        return data[pos] << 8 | data[pos + 1]

    def u24(self) -> int:
        return self.uint(3)

    def u32(self) -> int:
        return self.uint(4)

    def raw(self, n: int) -> bytes:
        pos = self._take(n)
        return bytes(self._data[pos : pos + n])

    def vector(self, length_size: int, min_len: int = 0, max_len: int | None = None) -> bytes:
        """Read ``opaque x<min..max>`` with a ``length_size``-byte length prefix."""
        n = self.uint(length_size)
        if n < min_len or (max_len is not None and n > max_len):
            raise DecodeError(f"vector length {n} out of range in {self._what}")
        return self.raw(n)

    def block(self, length_size: int, what: str | None = None, min_len: int = 0) -> Reader:
        """A sub-reader over a length-prefixed block; the caller must read it to its end."""
        n = self.uint(length_size)
        if n < min_len:
            raise DecodeError(f"empty or short block in {what or self._what}")
        pos = self._take(n)
        return Reader(self._data, what or self._what, pos, pos + n)

    def typed_vectors(self) -> Iterator[tuple[int, bytes]]:
        """Read ``(uint16 type, opaque data<0..2^16-1>)`` entries to the end (extension lists).

        One loop with the bound checks of ``u16()`` then ``vector(2)``, each entry yielded whole;
        a ClientHello walks a dozen of them.
        """
        data, end = self._data, self._end
        while self._pos < end:
            pos = self._pos
            if end - pos < 4:
                raise self._truncated()
            n = data[pos + 2] << 8 | data[pos + 3]
            if end - pos - 4 < n:
                raise self._truncated()
            self._pos = pos + 4 + n
            yield data[pos] << 8 | data[pos + 1], bytes(data[pos + 4 : pos + 4 + n])

    def u16_list(self, length_size: int, what: str, min_len: int = 2) -> list[int]:
        """A vector of uint16 (cipher suites, groups, schemes): even, non-empty length."""
        n = self.uint(length_size)
        start = self._take(n)
        if n < min_len or n % 2:
            raise DecodeError(f"bad length of {what}")
        data = self._data
        return [data[i] << 8 | data[i + 1] for i in range(start, start + n, 2)]


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def vector(length_size: int, data: bytes) -> bytes:
    """Encode ``data`` with a ``length_size``-byte length prefix."""
    return len(data).to_bytes(length_size, "big") + data

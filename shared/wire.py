"""Bounded reads and writes of TLS presentation-language vectors (RFC 8446 §3).

A :class:`Reader` never reads past its end: a length that overruns the data, or a block with bytes
left over, is a ``decode_error``. Sub-blocks are readers of their own, so "a block must be read
exactly" is enforced by calling :meth:`Reader.expect_end` once per block.
"""

from __future__ import annotations

from shared.errors import DecodeError


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

    def _take(self, n: int) -> int:
        pos = self._pos
        if n > self._end - pos:
            raise DecodeError(f"truncated {self._what}")
        self._pos = pos + n
        return pos

    def uint(self, size: int) -> int:
        pos = self._take(size)
        return int.from_bytes(self._data[pos : pos + size], "big")

    def u8(self) -> int:
        return self.uint(1)

    def u16(self) -> int:
        return self.uint(2)

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

    def u16_list(self, length_size: int, what: str, min_len: int = 2) -> list[int]:
        """A vector of uint16 (cipher suites, groups, schemes): even, non-empty length."""
        sub = self.block(length_size, what)
        if sub.remaining < min_len or sub.remaining % 2:
            raise DecodeError(f"bad length of {what}")
        out = []
        while not sub.at_end():
            out.append(sub.u16())
        return out


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

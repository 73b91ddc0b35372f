"""The channel socket's I/O, for both daemons' trio shells: datagrams out in order, without a trip
through trio's scheduler when the kernel takes them at once.

Every handshake crosses the channel a few times each way, so the per-datagram cost is paid thousands
of times a second. trio's socket methods yield to the scheduler on every call, and the lock and shielded
cancel scope that keep the channel's messages in order (a message the order checker has counted must
leave, and before the next one) cost as much again: about 25 µs per send on a 2 GHz core, against 3 µs
for the send itself. A SEQPACKET send takes the whole datagram or fails with EAGAIN, so in the common
case no await is needed at all, and then nothing can run between the caller's bookkeeping and the
datagram leaving. Only a sender that finds the socket buffer full waits, holding a lock, and the
sends after it queue behind it: datagrams always leave in the order their turn came.

Not a codec: this module and the OS helpers (hardening, systemd, workers) are the only parts of
``shared`` that touch the operating system, and no codec imports them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import TracebackType

import trio


class Datagrams:
    """One connected SOCK_SEQPACKET socket, owned: closing this closes it."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._full = trio.Lock()  # held by the send that waits for room, and by those queued behind it

    @classmethod
    def adopt(cls, sock: trio.socket.SocketType) -> Datagrams:
        """Take over a trio socket's descriptor (the trio object is left detached and closes nothing)."""
        return cls(socket.socket(fileno=sock.detach()))

    def close(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)  # wakes a task waiting on it instead of leaving it hung
            self.sock.close()

    def __enter__(self) -> Datagrams:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def send(self, make: Callable[[], bytes | None], *, shield: bool = False) -> None:
        """Send the datagram ``make()`` returns (None: nothing to send after all).

        ``make`` runs when this datagram's turn has come, so whatever it records (the channel's order
        checker) is recorded in wire order. With ``shield``, a datagram that has to wait for room still
        leaves if the caller is cancelled meanwhile: once ``make`` has counted it, it must.
        """
        await trio.lowlevel.checkpoint_if_cancelled()  # no yield unless cancelled: then nothing is counted
        if not self._full.locked():
            data = make()
            if data is None:
                return
            try:
                self.sock.send(data)
                return
            except BlockingIOError:
                self._full.acquire_nowait()  # free: nothing has run since the check above
        else:
            await self._full.acquire()  # cancellable: ``make`` has not run yet
            try:
                data = make()
            except BaseException:
                self._full.release()
                raise
            if data is None:
                self._full.release()
                return
        try:
            with trio.CancelScope(shield=shield):
                while True:
                    try:
                        self.sock.send(data)
                        return
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(self.sock)
        finally:
            self._full.release()

    def send_nowait(self, data: bytes) -> bool:
        """One try, for a last word before closing (a channel ``error``): never waits behind a sender
        stuck on a full socket, never raises. True if the datagram left."""
        try:
            self.sock.send(data)
        except OSError:  # BlockingIOError included: a peer that reads nothing gets no last word
            return False
        return True

    async def recv(self, size: int) -> bytes:
        """The next datagram, b"" once the peer has closed. A cancellation never loses one, and a
        cancelled caller stops here even while datagrams keep arriving."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    return self.sock.recv(size)
                except BlockingIOError:
                    continue
        await trio.lowlevel.cancel_shielded_checkpoint()  # a receive is a checkpoint, even when one was queued
        return data

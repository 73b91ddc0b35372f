"""appd's trio shell: accept TCP connections, hand each to a session, drain on SIGTERM."""

from __future__ import annotations

import errno
import functools
import socket
from typing import Any

import trio

from tls_privsep.appd import session
from tls_privsep.appd.apps import Backend
from tls_privsep.appd.link import SecuredLink, StartupCheck
from tls_privsep.shared.log import Logger
from tls_privsep.shared.preload import InstallUnreadable

# accept() errors that mean "no resources right now", not "the listener is broken"
_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_RETRY = 0.1  # seconds between accept attempts while they fail for lack of resources


def listener_address(listener: trio.SocketListener) -> str:
    return listener_address_of(listener.socket)


def listener_address_of(sock: socket.socket | trio.socket.SocketType) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


def bind_listeners(addresses: tuple[tuple[str, int], ...], copies: int = 1) -> list[list[socket.socket]]:
    """``copies`` sets of listening sockets for every address, bound before any event loop exists.

    With several copies each worker gets its own socket per address (SO_REUSEPORT): the kernel spreads
    new connections across them, and no worker wakes for another's connection. A port of 0 is chosen
    by the first copy and reused by the others.
    """
    sets: list[list[socket.socket]] = [[] for _ in range(copies)]
    try:
        for host, port in addresses:
            for family, kind, proto, _, addr in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                    flags=socket.AI_PASSIVE):
                for copy in sets:
                    try:
                        sock = socket.socket(family, kind, proto)
                    except OSError as exc:
                        if exc.errno == errno.EAFNOSUPPORT:  # e.g. IPv6 disabled: serve the other family
                            break
                        raise
                    copy.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if copies > 1:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(addr)
                    sock.listen(BACKLOG)
                    addr = sock.getsockname()  # the port the first copy got, for the next ones
    except OSError:
        for copy in sets:
            for sock in copy:
                sock.close()
        raise
    if not sets[0]:
        raise OSError(errno.EAFNOSUPPORT, "no address family of these addresses is supported here")
    return sets


class Appd:
    def __init__(self, link: SecuredLink, backend: Backend, limits: session.Limits, log: Logger, *,
                 max_connections: int = 10000, drain_timeout: float = 10.0,
                 startup: StartupCheck | None = None) -> None:
        self.link = link
        self.startup = startup
        self.backend = backend
        self.limits = limits
        self.log = log
        self.drain_timeout = drain_timeout
        self.active = 0
        self.accepted = 0
        self._slots = trio.Semaphore(max_connections)
        self._idle = trio.Event()
        self._idle.set()
        self._accepting: trio.CancelScope | None = None
        self._exhausted = False

    async def serve(self, listeners: list[trio.SocketListener], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`drain` (then wait up to drain_timeout for connections to end)."""
        async with trio.open_nursery() as outer:
            await outer.start(functools.partial(self.link.run, startup=self.startup))
            async with trio.open_nursery() as conns:
                with trio.CancelScope() as accepting:
                    self._accepting = accepting
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, conns)
                        task_status.started([listener_address(lst) for lst in listeners])
                for listener in listeners:
                    await listener.aclose()
                self.log.info("draining", active=self.active, timeout=self.drain_timeout)
                with trio.move_on_after(self.drain_timeout):
                    await self._idle.wait()
                if self.active:
                    self.log.warning("drain timeout", closing=self.active)
                conns.cancel_scope.cancel()
            outer.cancel_scope.cancel()

    def drain(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()

    async def _accept_loop(self, listener: trio.SocketListener, conns: trio.Nursery) -> None:
        while True:
            try:
                self._slots.acquire_nowait()  # the common case: a free slot, and no trip through the scheduler
            except trio.WouldBlock:
                await self._slots.acquire()  # max_connections reached: wait for one to end
            try:
                stream = await listener.accept()
            except OSError as exc:
                self._slots.release()
                if exc.errno not in _EXHAUSTED:
                    raise
                # Out of descriptors or kernel memory: the client waits in the listen backlog, and appd
                # must not die of it. Try again once some connection has had a chance to end.
                if not self._exhausted:
                    self._exhausted = True
                    self.log.warning("accept failing", error=exc.strerror, active=self.active)
                await trio.sleep(ACCEPT_RETRY)
                continue
            except BaseException:
                self._slots.release()
                raise
            if self._exhausted:
                self._exhausted = False
                self.log.info("accept working again", active=self.active)
            self.accepted += 1
            self.active += 1
            self._idle = trio.Event() if self.active == 1 else self._idle
            conns.start_soon(self._one, stream)

    async def _one(self, stream: trio.SocketStream) -> None:
        try:
            await session.handle(stream, self.link, self.backend, self.limits, self.log)
        except InstallUnreadable:
            raise  # every connection would fail the same way: appd stops and says why (see shared/preload.py)
        except Exception as exc:  # one connection must never take the others down with it
            self.log.error("connection failed unexpectedly", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.active -= 1
            self._slots.release()
            if self.active == 0:
                self._idle.set()

"""appd's end of the channel to secured: many handshakes multiplexed over one SEQPACKET socket.

One reader task owns the socket's receive side and routes each reply to the connection waiting for
it. Blobs are opened right there, in the order they arrive, because the one-time rule refuses a
counter that is not above the last one imported. When the channel is lost, every waiting handshake
fails at once and the link reconnects with backoff; established sessions never depend on it.
"""

from __future__ import annotations

import contextlib
import errno
import math
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from tls_privsep.shared import channel as ch
from tls_privsep.shared.blob import BlobOpener
from tls_privsep.shared.cli import EX_CONFIG, EX_NOPERM, EX_UNAVAILABLE, StartupFailure
from tls_privsep.shared.dgram import Datagrams
from tls_privsep.shared.errors import BlobError, ChannelError
from tls_privsep.shared.log import Logger
from tls_privsep.shared.state import TrafficState

Connector = Callable[[], Awaitable[trio.socket.SocketType]]
HELLO_TIMEOUT = 10.0  # seconds a connected secured has to answer appd's hello


class SecuredUnavailable(Exception):
    """No channel to secured right now (down, restarting, or lost mid-handshake)."""


class WrongPeer(OSError):
    """The channel socket answered, but as a uid that is not secured's: appd will not talk to it.

    Anyone who can create the socket path could pose as secured and collect every session's keys,
    so the kernel's word on who listens (SO_PEERCRED) is checked before the first byte.
    """

    def __init__(self, path: str, uid: int, allowed: frozenset[int]) -> None:
        super().__init__(errno.EPERM, f"the process answering on {path} runs as uid {uid}, "
                                      f"not as secured's user (uid {', '.join(map(str, sorted(allowed)))})")
        self.uid = uid


@dataclass
class Step:
    """secured's answer to one ``hs``: bytes to write, how much input it used, and the outcome."""

    data: bytes
    consumed: int
    state: TrafficState | None = None  # set on done
    failure: str | None = None  # set on fail (reason code)


def unix_connector(path: str, allowed_uids: frozenset[int] | None = None) -> Connector:
    """Connect to secured's socket at ``path``; with ``allowed_uids``, only to a listener running as one
    of them (root always is: a socket systemd made and passed on reports uid 0)."""
    async def connect() -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            await sock.connect(path)
            if allowed_uids is not None:
                uid = peer_uid(sock)
                if uid != 0 and uid not in allowed_uids:
                    raise WrongPeer(path, uid, allowed_uids)
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def peer_uid(sock: trio.socket.SocketType) -> int:
    """The uid the kernel recorded for the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def fd_connector(fd: int) -> Connector:
    """An inherited channel socket: usable once (a lost channel cannot be re-made from here)."""
    used = False

    async def connect() -> trio.socket.SocketType:
        nonlocal used
        if used:
            raise OSError("the inherited channel is gone")
        used = True
        return trio.socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_SEQPACKET)

    return connect


@dataclass(frozen=True)
class StartupCheck:
    """What a starting appd must see of secured's channel before it says ready."""

    path: str
    user: str
    timeout: float
    inherited: bool = False  # the channel is a socket our starter gave us (--ipc-fd), not a path

    def refused(self, exc: ChannelError) -> None:
        """The first channel connected but failed before both hellos: say why, once, and stop."""
        if exc.reason == "closed" and self.inherited:
            raise StartupFailure("secured closed the inherited channel before its hello: did it fail to start?",
                                 EX_UNAVAILABLE)
        if exc.reason == "closed":
            raise StartupFailure(f"secured at {self.path} closed the channel at once: it does not admit user "
                                 f"{self.user} (give secured --appd-user {self.user}, or add its uid to "
                                 "secured.allowed_uids)", EX_NOPERM)
        if exc.reason == "no_hello":
            raise StartupFailure(f"secured at {self.path} accepted the channel but did not answer within "
                                 f"{self.timeout:g} s: is secured starting or stuck?", EX_UNAVAILABLE)
        raise StartupFailure(f"the channel to secured at {self.path} failed: {exc}", EX_CONFIG)

    def check(self, exc: OSError, expired: bool) -> None:
        """Raise the one-line failure for a first connection that failed with ``exc``, or return to retry."""
        if isinstance(exc, WrongPeer):
            raise StartupFailure(f"{exc.strerror}: refusing it (set appd.secured_user to secured's user)", EX_NOPERM)
        if isinstance(exc, PermissionError):
            raise StartupFailure(f"cannot reach secured's socket {self.path} as user {self.user} ({exc.strerror}): "
                                 "let that user enter every directory above it, or choose another --runtime-dir",
                                 EX_NOPERM)
        if expired:
            why = exc.strerror or str(exc)
            raise StartupFailure(f"no channel to secured at {self.path} after {self.timeout:g} s ({why}): "
                                 "is secured running?", EX_UNAVAILABLE)


class SecuredLink:
    def __init__(self, connect: Connector, log: Logger, *, backoff_max: float = 0.5, channel_wait: float = 2.0) -> None:
        self._connect = connect
        self.channel_wait = channel_wait
        self.log = log
        self._backoff_max = backoff_max
        self._dg: Datagrams | None = None
        self._state: ch.ChannelState | None = None
        self._opener: BlobOpener | None = None
        self._conns: dict[int, HandshakeChannel] = {}  # by the id their open got on the current channel
        self.up = trio.Event()
        self.channels_made = 0

    @property
    def is_up(self) -> bool:
        return self._dg is not None

    @property
    def connections(self) -> int:
        """Handshakes the link tracks on the current channel (an open sent, no final answer taken yet)."""
        return len(self._conns)

    def is_waiting(self, conn: int) -> bool:
        """Connection ``conn`` has sent secured something and waits for the answer."""
        hc = self._conns.get(conn)
        return hc is not None and hc.awaiting

    async def run(self, *, startup: StartupCheck | None = None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a channel up for the life of appd, reconnecting with backoff.

        Without ``startup`` it reports started after the first attempt, whatever its outcome. With it, only
        once a channel is up (both hellos exchanged): a first channel that cannot come up raises
        :class:`~tls_privsep.shared.cli.StartupFailure` instead (no permission, a wrong peer, secured
        refusing our uid, no answer in time), so appd never says ready while every handshake would fail.
        """
        delay = 0.02
        started = False
        deadline = trio.current_time() + startup.timeout if startup is not None else math.inf
        while True:
            try:
                sock = await self._connect()
            except OSError as exc:
                if not started:
                    if startup is not None:
                        startup.check(exc, trio.current_time() >= deadline)
                    else:
                        task_status.started()
                        started = True
                if isinstance(exc, WrongPeer | PermissionError):
                    self.log.error("secured refused", error=str(exc), retry_in=delay)
                else:
                    self.log.debug("secured unreachable", error=str(exc), retry_in=delay)
                await trio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            with Datagrams.adopt(sock) as dg:
                try:
                    # A listener that accepts and never answers (secured stuck, or systemd holding a socket for
                    # a secured that fails to start) must not hold appd: the hello has a deadline too.
                    limit = deadline if startup is not None and not started else trio.current_time() + HELLO_TIMEOUT
                    with trio.move_on_at(limit) as hello:
                        await self._hello(dg)
                    if hello.cancelled_caught:
                        raise ChannelError("no_hello", "secured did not answer the hello")
                    delay = 0.02  # a channel came up: the next loss retries quickly again
                    self.channels_made += 1
                    self.log.info("channel up", channel=self.channels_made)
                    self.up.set()
                    if not started:
                        task_status.started()
                        started = True
                    await self._read_loop(dg)
                    self.log.warning("channel down", reason="secured closed it")
                except ChannelError as exc:
                    if startup is not None and not started:
                        startup.refused(exc)
                    self.log.warning("channel down", reason=exc.reason, detail=str(exc))
                    dg.send_nowait(ch.Error(exc.reason).encode())
                except (OSError, trio.ClosedResourceError) as exc:
                    if startup is not None and not started:
                        startup.refused(ChannelError("closed", str(exc)))
                    self.log.warning("channel down", reason="socket error", error=str(exc))
                finally:
                    self._lose()
            if not started:
                task_status.started()
                started = True
            await trio.sleep(delay)  # a channel that keeps failing (secured refusing us) is not a busy loop
            delay = min(delay * 2, self._backoff_max)

    async def _hello(self, dg: Datagrams) -> None:
        exchange = ch.HelloExchange("appd")
        await dg.send(lambda: exchange.datagram)
        keys = exchange.finish(await dg.recv(ch.MAX_MESSAGE + 1))
        self._opener = keys.opener()
        self._state = exchange.state
        self._dg = dg

    def _lose(self) -> None:
        self._dg = None
        self._state = None
        self._opener = None
        self.up = trio.Event()
        conns, self._conns = self._conns, {}
        for hc in conns.values():  # waiting for secured or for their client: they learn it now
            hc.lose()

    async def _read_loop(self, dg: Datagrams) -> None:
        state = self._state
        assert state is not None
        while True:
            raw = await dg.recv(ch.MAX_MESSAGE + 1)
            if not raw:
                return
            msg = ch.decode(raw)
            if not state.receive(msg):
                continue  # late reply for a connection we already aborted
            if isinstance(msg, ch.Error):
                raise ChannelError("peer_error", msg.reason)
            if not isinstance(msg, ch.Hs | ch.Done | ch.Fail):
                raise ChannelError("unexpected", type(msg).__name__)
            step = self._to_step(msg)
            hc = self._conns.get(msg.conn)
            if hc is None or not (hc.awaiting or step.state is None):
                if step.state is not None:
                    step.state.wipe()  # nobody will import it: its connection is gone
                continue
            hc.deliver(step)

    def _to_step(self, msg: ch.Hs | ch.Done | ch.Fail) -> Step:
        if isinstance(msg, ch.Hs):
            return Step(msg.data, msg.consumed)
        if isinstance(msg, ch.Fail):
            return Step(msg.data, 0, failure=msg.reason)
        assert self._opener is not None
        try:
            state = self._opener.open(msg.blob, msg.conn)
        except BlobError as exc:
            self.log.error("blob refused", conn=msg.conn, reason=exc.reason)
            # The client has our Finished: send what secured sent, then its sealed internal_error.
            return Step(msg.data + msg.alert, 0, failure="blob_" + exc.reason)
        return Step(msg.data, msg.consumed, state=state)

    async def _send(self, msg: ch.Message | Callable[[ch.ChannelState], ch.Message]) -> None:
        """Send ``msg``. A callable builds the message from the channel's state when its turn to leave has
        come: an ``open`` takes its connection id then, so ids reach secured in order."""
        dg, state = self._dg, self._state
        if dg is None or state is None:
            raise SecuredUnavailable("no channel to secured")

        def make() -> bytes | None:
            if self._dg is not dg:  # the channel was lost while this waited its turn
                raise SecuredUnavailable("channel to secured lost")
            m = msg(state) if callable(msg) else msg
            if isinstance(m, ch.Hs | ch.Abort) and not state.is_open(m.conn):
                # secured retired this connection (fail: timeout, busy) while we waited for room;
                # its answer is already with the waiter, so there is nothing left to say.
                return None
            state.send(m)
            return m.encode()

        try:
            # Shielded: once ChannelState has counted a message, the message must leave. A deadline
            # firing while the socket is full would leave secured one id behind.
            await dg.send(make, shield=True)
        except ChannelError as exc:
            # Our own bookkeeping is off: the channel cannot be trusted. Shutting it down ends the
            # read loop normally, which reconnects; closing it under the reader would not.
            self.log.error("channel protocol error on send", reason=exc.reason, detail=str(exc))
            with contextlib.suppress(OSError):
                dg.sock.shutdown(socket.SHUT_RDWR)
            raise SecuredUnavailable(f"channel broken ({exc.reason})") from None
        except OSError as exc:
            raise SecuredUnavailable(f"channel send failed: {exc.strerror}") from None
        except trio.ClosedResourceError:  # closed under a send that waited for room
            raise SecuredUnavailable("channel to secured closed") from None

    async def send_open(self, hc: HandshakeChannel, data: bytes) -> None:
        """Send ``hc``'s ``open``; it takes its connection id (and its place in the table) when its turn to
        leave has come, so ids reach secured in order and an answer that comes before the send returns
        (secured may refuse it at once, busy) finds it."""
        def make(state: ch.ChannelState) -> ch.Message:
            hc.opened(state.next_conn_id(), state)
            self._conns[hc.conn] = hc
            return ch.Open(hc.conn, hc.peer[: ch.MAX_PEER], data)

        await self._send(make)

    async def send_hs(self, hc: HandshakeChannel, data: bytes) -> None:
        await self._send(ch.Hs(hc.conn, data, 0))

    @asynccontextmanager
    async def handshake(self, peer: str) -> AsyncIterator[HandshakeChannel]:
        """A connection's conversation with secured; aborted on exit unless it reached done/fail.

        A connection that arrives while the channel is being (re)made waits for it a little (appd's
        start, secured's restart) rather than failing at once; past that it is ``SecuredUnavailable``.
        Nothing is sent before the first :meth:`HandshakeChannel.step`, whose ``open`` carries the
        client's first records.
        """
        if self._state is None:
            with trio.move_on_after(self.channel_wait):
                await self.up.wait()
        hc = HandshakeChannel(self, peer)
        try:
            yield hc
        finally:
            conn, state = hc.conn, hc.channel
            # After a lost channel, the next one numbers connections from 1 again: touch only our own entry.
            if self._conns.get(conn) is hc:
                del self._conns[conn]
            if state is not None and self._state is state and not hc.settled() and state.is_open(conn):
                with trio.CancelScope(shield=True):
                    try:
                        await self._send(ch.Abort(conn))
                    except SecuredUnavailable:
                        pass


class HandshakeChannel:
    """One connection's handshake as the link sees it: its id on the channel, and secured's answers.

    secured answers each ``open``/``hs``; it may also speak unasked (its deadline, or no room for
    another handshake), always with a final ``fail``. Such an answer is kept apart from the answer to
    the question in flight (both can arrive before :meth:`step` runs again), waits for the next
    :meth:`step`, and cuts short the wait for the client (:meth:`waiting_for_client`).
    """

    def __init__(self, link: SecuredLink, peer: str) -> None:
        self._link = link
        self.peer = peer
        self.conn = 0  # the id its open got; 0 until then
        self.channel: ch.ChannelState | None = None  # the channel its open went out on
        self.finished = False  # secured has retired this connection (done or fail), or the channel is gone
        self.lost = False  # the channel this handshake began on is gone
        self._asked: trio.Event | None = None  # set while step() waits for secured's answer
        self._answer: Step | None = None  # the answer to what step() asked
        self._unasked: Step | None = None  # what secured said unasked, until step() takes it
        self._waiting: trio.CancelScope | None = None

    @property
    def awaiting(self) -> bool:
        """It has asked secured something and no answer has come yet."""
        return self._asked is not None and self._answer is None

    def opened(self, conn: int, channel: ch.ChannelState) -> None:
        self.conn, self.channel = conn, channel

    def deliver(self, step: Step) -> None:
        """secured's answer (from the link's reader)."""
        if self.awaiting:
            assert self._asked is not None
            self._answer = step
            self._asked.set()
            return
        if self._unasked is None:
            self._unasked = step
        self.interrupt()  # unasked: the client need not be waited for any longer

    def lose(self) -> None:
        """The channel is gone (from the link)."""
        self.lost = True
        if self._asked is not None:
            self._asked.set()
        self.interrupt()

    def settled(self) -> bool:
        """Nothing left to tell secured: it retired the connection (its final answer taken, or waiting here)."""
        return self.finished or self._unasked is not None

    @contextlib.contextmanager
    def waiting_for_client(self) -> Iterator[trio.CancelScope]:
        """Wrap the wait for the client's next bytes; it is cancelled (``cancelled_caught``) as soon as
        :meth:`step` has an answer that needs no input: secured gave up on the connection unasked
        (its deadline, or no room for another handshake), or the channel was lost."""
        with trio.CancelScope() as scope:
            if self.lost or self._unasked is not None:
                scope.cancel()
            self._waiting = scope
            try:
                yield scope
            finally:
                self._waiting = None

    def interrupt(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()

    async def step(self, data: bytes) -> Step:
        """Relay ``data`` (in ``open`` the first time) and wait for secured's answer (``b""`` only
        collects one it already gave)."""
        unasked = self._unasked
        if unasked is not None:  # secured already gave up on this connection
            self.finished = True
            self._unasked = None
            return unasked
        if self.lost or not data:
            self.finished = True
            raise SecuredUnavailable("channel to secured lost during the handshake")
        self._asked = asked = trio.Event()
        try:
            if self.conn:
                await self._link.send_hs(self, data)
            else:
                await self._link.send_open(self, data)
            await asked.wait()
        except BaseException:
            # Cancelled (appd's deadline, shutdown) or failed: an answer that came meanwhile is dropped, and a
            # done's keys with it. Unless that answer was final, the connection is still open in secured,
            # and leaving the handshake() block aborts it.
            self._drop_answer()
            raise
        finally:
            self._asked = None
        answer, self._answer = self._answer, None
        if self.lost or answer is None:
            self.finished = True
            raise SecuredUnavailable("channel to secured lost during the handshake")
        if answer.state is not None or answer.failure is not None:
            self.finished = True
        return answer

    def _drop_answer(self) -> None:
        answer, self._answer = self._answer, None
        if answer is None:
            return
        if answer.state is not None:
            answer.state.wipe()
        if answer.state is not None or answer.failure is not None:
            self.finished = True

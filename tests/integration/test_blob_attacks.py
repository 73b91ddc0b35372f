"""A hostile or broken secured: a real appd process against a fake secured that tampers with the blob in ``done``.

The fake speaks the real channel protocol (shared.channel: hello key agreement, ChannelState) and runs a real
:class:`ServerHandshake`, so the client handshake is genuine; only the blob it exports is edited before it leaves.
For every refusal, appd must log ``blob refused`` with the reason docs/blob.md gives, write the ``internal_error``
alert secured sealed for exactly this case (the client sees TLSV1_ALERT_INTERNAL_ERROR), import nothing, and serve
the next honest connection as if nothing had happened.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.inmemory import client_context, server_config
from tests.integration.helpers import ROOT, stop_processes
from tls_privsep.secured.handshake import ServerConfig, ServerHandshake
from tls_privsep.shared import channel as ch
from tls_privsep.shared import cli
from tls_privsep.shared.blob import MAX_BLOB, BlobOpener, BlobSealer, cbor_decode, cbor_encode
from tls_privsep.shared.errors import Alert, AlertDescription, BlobError
from tls_privsep.shared.record import ContentType, Protection
from tls_privsep.shared.state import TrafficState

# Given the state, the connection id and the channel's sealer, produce the blob to put in ``done``.
Tamper = Callable[[TrafficState, int, BlobSealer], bytes]
CBOR_REASONS = {"malformed", "trailing_bytes", "tag", "indefinite_length", "duplicate_key", "non_canonical"}


def honest(state: TrafficState, conn: int, sealer: BlobSealer) -> bytes:
    return sealer.seal(state, conn)


def other_channel_keys() -> ch.ChannelKeys:
    """Keys of a channel appd has never seen: a genuine hello exchange between two other parties."""
    a, s = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ha, hs = ch.make_hello(a, "appd").encode(), ch.make_hello(s, "secured").encode()
    return ch.ChannelKeys.derive(s, hs, ha)


@dataclass
class Sent:
    """One ``done`` the fake sent: the blob, and what a reference opener in step with appd's said about it."""

    conn: int
    blob: bytes
    expected: str | None  # the BlobError reason, None if it imports
    channel: int


@dataclass
class FakeSecured:
    """A secured that runs real handshakes and exports whatever blob the next :data:`Tamper` makes."""

    config: ServerConfig
    plan: deque[Tamper] = field(default_factory=deque)
    sent: list[Sent] = field(default_factory=list)
    channels: int = 0
    keys: ch.ChannelKeys | None = None
    errors: list[BaseException] = field(default_factory=list)

    def serve_channel(self, sock: socket.socket) -> None:
        """Serve one channel until appd closes it (or sends ``error``)."""
        try:
            self._serve(sock)
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def _serve(self, sock: socket.socket) -> None:
        state = ch.ChannelState("secured")
        private = X25519PrivateKey.generate()
        hello = ch.make_hello(private, "secured")
        state.send(hello)
        raw_hello = hello.encode()
        sock.send(raw_hello)
        peer = sock.recv(ch.MAX_MESSAGE + 1)
        if not peer:
            return
        state.receive(ch.decode(peer))
        keys = ch.ChannelKeys.derive(private, raw_hello, peer)
        self.keys = keys
        self.channels += 1
        sealer, mirror = keys.sealer(), keys.opener()
        engines: dict[int, ServerHandshake] = {}

        def send(msg: ch.Message, raw: bytes | None = None) -> None:
            state.send(msg)
            sock.send(msg.encode() if raw is None else raw)

        while True:
            datagram = sock.recv(ch.MAX_MESSAGE + 1)
            if not datagram:
                return
            msg = ch.decode(datagram)
            if not state.receive(msg):
                continue
            if isinstance(msg, ch.Error):
                return
            if isinstance(msg, ch.Open):  # a new connection, with its first records
                engines[msg.conn] = ServerHandshake(self.config)
            if isinstance(msg, ch.Abort):
                engines.pop(msg.conn).abort()
            elif isinstance(msg, ch.Open | ch.Hs):
                engine = engines[msg.conn]
                try:
                    engine.receive_data(msg.data)
                except Alert as exc:
                    del engines[msg.conn]
                    send(ch.Fail(msg.conn, engine.data_to_send(), "fake_" + exc.description.name))
                    continue
                out = engine.data_to_send()
                if not engine.complete:
                    send(ch.Hs(msg.conn, out, len(msg.data)))
                    continue
                del engines[msg.conn]
                done = self._export(engine, msg.conn, out, len(msg.data) - len(engine.trailing), sealer, mirror)
                # Encoded by hand: Done.encode() would refuse an oversize blob (the point of one test).
                send(done, cbor_encode({"t": "done", "c": done.conn, "d": done.data, "u": done.consumed,
                                        "b": done.blob, "a": done.alert}))

    def _export(self, engine: ServerHandshake, conn: int, out: bytes, consumed: int, sealer: BlobSealer,
                mirror: BlobOpener) -> ch.Done:
        state = engine.export()
        try:
            alert = Protection(state.suite, state.write_secret, state.write_seq).seal(
                ContentType.alert, bytes([2, AlertDescription.internal_error]))
            tamper = self.plan.popleft() if self.plan else honest
            blob = tamper(state, conn, sealer)
        finally:
            state.wipe()
        try:
            mirror.open(blob, conn).wipe()
            expected = None
        except BlobError as exc:
            expected = exc.reason
        self.sent.append(Sent(conn, blob, expected, self.channels))
        return ch.Done(conn, out, consumed, blob, alert)


# ---- appd as a real process ---------------------------------------------------------------------------------------


@dataclass
class Appd:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path
    fake: FakeSecured

    def entries(self, event: str) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event:
                    out.append(entry)
        return out

    def wait_entries(self, event: str, count: int, timeout: float = 10.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(found := self.entries(event)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(found) >= count, f"{len(found)} {event!r} lines, expected {count}:\n{self.log.read_text()[-3000:]}"
        return found

    def stop(self) -> None:
        stop_processes([self.proc])


def start_appd(log: Path, fake: FakeSecured, channel_args: list[str], pass_fds: tuple[int, ...] = ()) -> Appd:
    """appd alone (echo backend), its channel given by ``channel_args``; returns once it is ready."""
    ready_r, ready_w = os.pipe()
    as_user = ["--user", "nobody"] if os.geteuid() == 0 else []
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*cli.daemon_argv("appd"), *channel_args, "--ready-fd", str(ready_w), "--log-format", "json",
             "--listen", "127.0.0.1:0", "--backend", "echo", *as_user],
            pass_fds=(*pass_fds, ready_w), stdout=out, stderr=out, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    os.close(ready_w)
    line = b""
    deadline = time.monotonic() + 20
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([ready_r], [], [], 0.2)[0]:
            chunk = os.read(ready_r, 1024)
            if not chunk:
                break
            line += chunk
    os.close(ready_r)
    if not line.endswith(b"\n"):
        proc.kill()
        raise RuntimeError("appd did not start:\n" + log.read_text())
    host, _, port = line.decode().split()[0].rpartition(":")
    return Appd(proc, host, int(port), log, fake)


@pytest.fixture(scope="module")
def appd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appd]:
    """One appd for the module, on an inherited socketpair (``--ipc-fd``) whose other end is the fake secured."""
    fake = FakeSecured(server_config())
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    thread = threading.Thread(target=fake.serve_channel, args=(mine,), daemon=True)
    thread.start()
    try:
        server = start_appd(tmp_path_factory.mktemp("appd") / "appd.log", fake,
                            ["--ipc-fd", str(theirs.fileno())], (theirs.fileno(),))
    finally:
        theirs.close()
    yield server
    server.stop()
    mine.close()
    thread.join(5)
    assert not fake.errors, fake.errors


# ---- clients --------------------------------------------------------------------------------------------------


@functools.cache
def client() -> ssl.SSLContext:
    return client_context()


def refused_connection(server: Appd) -> None:
    """A client whose handshake completes and whose first read gets the internal_error alert."""
    with socket.create_connection((server.host, server.port), timeout=10) as raw, \
            client().wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        with pytest.raises(ssl.SSLError) as info:
            tls.recv(100)
    assert info.value.reason == "TLSV1_ALERT_INTERNAL_ERROR", info.value


def honest_connection(server: Appd) -> None:
    """A normal echo exchange with a clean close both ways: appd imported the blob and serves."""
    with socket.create_connection((server.host, server.port), timeout=10) as raw, \
            client().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"still serving")
        assert tls.recv(100) == b"still serving"
        tls.unwrap()
    assert server.fake.sent[-1].expected is None


def attack(server: Appd, tamper: Tamper) -> tuple[Sent, dict[str, object]]:
    """One tampered connection, then one honest one; returns what was sent and appd's ``blob refused`` line."""
    before = len(server.entries("blob refused"))
    server.fake.plan.append(tamper)
    refused_connection(server)
    sent = server.fake.sent[-1]
    entry = server.wait_entries("blob refused", before + 1)[-1]
    assert entry["conn"] == sent.conn
    honest_connection(server)
    assert server.proc.poll() is None
    return sent, entry


# ---- tests --------------------------------------------------------------------------------------------------------


def test_honest_blob_imports(appd: Appd) -> None:
    honest_connection(appd)
    honest_connection(appd)
    assert appd.entries("blob refused") == []


def test_a_flipped_bit_at_every_byte_of_the_blob_is_refused(appd: Appd) -> None:
    """One connection per byte position of the outer blob, one bit flipped there; nothing is ever imported."""
    keys = appd.fake.keys
    assert keys is not None
    flipped: list[tuple[int, int, str]] = []  # (conn, position, region)
    position = 0
    length = None
    before = len(appd.entries("blob refused"))
    while length is None or position < length:
        pos = position

        def flip(state: TrafficState, conn: int, sealer: BlobSealer, pos: int = pos) -> bytes:
            blob = bytearray(sealer.seal(state, conn))
            outer = cbor_decode(bytes(blob), MAX_BLOB)
            assert isinstance(outer, dict)
            ch_at, ct_at = bytes(blob).find(outer["ch"]), len(blob) - len(outer["ct"])
            region = "ct" if pos >= ct_at else "ch" if ch_at <= pos < ch_at + 16 else "header"
            flipped.append((conn, pos, region))
            blob[pos] ^= 1 << (pos % 8)
            return bytes(blob)

        appd.fake.plan.append(flip)
        refused_connection(appd)
        length = len(appd.fake.sent[-1].blob)  # n grows as we go: the blob may gain a byte
        position += 1
    honest_connection(appd)
    entries = appd.wait_entries("blob refused", before + len(flipped))[before:]
    logged = {int(e["conn"]): str(e["reason"]) for e in entries}  # type: ignore[call-overload]
    expected = {s.conn: s.expected for s in appd.fake.sent}
    by_region: dict[str, set[str]] = {}
    for conn, pos, region in flipped:
        reason = logged[conn]
        assert reason == expected[conn], (pos, region, reason, expected[conn])
        by_region.setdefault(region, set()).add(reason)
    print(f"\n{len(flipped)} positions: {by_region}")
    assert by_region["ct"] == {"bad_tag"}
    assert by_region["ch"] == {"wrong_channel"}
    assert by_region["header"] <= CBOR_REASONS | {"bad_outer", "unsupported_version", "replayed", "bad_tag"}
    outcomes = [str(e["outcome"]) for e in appd.entries("connection")]
    assert sum(o.startswith("handshake failed: blob_") for o in outcomes) >= len(flipped)


def test_replayed_blob_is_refused(appd: Appd) -> None:
    honest_connection(appd)
    old = appd.fake.sent[-1].blob
    _, entry = attack(appd, lambda state, conn, sealer: old)
    assert entry["reason"] == "replayed"
    # The refusal did not move the counter: an honest blob still imports, and the old one is still refused.
    _, entry = attack(appd, lambda state, conn, sealer: old)
    assert entry["reason"] == "replayed"


def test_blob_sealed_for_another_channel_is_refused(appd: Appd) -> None:
    other = other_channel_keys()
    _, entry = attack(appd, lambda state, conn, sealer: other.sealer().seal(state, conn))
    assert entry["reason"] == "wrong_channel"


def test_blob_with_this_channel_id_under_another_key_is_refused(appd: Appd) -> None:
    keys = appd.fake.keys
    assert keys is not None
    forger = BlobSealer(other_channel_keys().blob_key, keys.channel_id)
    # The forger's counter starts at 1, below appd's last import: push it past, so the tag is what fails.
    forger._next = 10_000
    _, entry = attack(appd, lambda state, conn, sealer: forger.seal(state, conn))
    assert entry["reason"] == "bad_tag"


def test_blob_for_another_connection_is_refused(appd: Appd) -> None:
    _, entry = attack(appd, lambda state, conn, sealer: sealer.seal(state, conn + 1))
    assert entry["reason"] == "bad_tag"


@pytest.mark.parametrize("keep", [1, 10, -20, -1])
def test_truncated_blob_is_refused(appd: Appd, keep: int) -> None:
    _, entry = attack(appd, lambda state, conn, sealer: sealer.seal(state, conn)[:keep])
    assert entry["reason"] == "malformed"


@pytest.mark.parametrize("version", [1, 3])
def test_blob_of_another_version_is_refused(appd: Appd, version: int) -> None:
    """The previous format and a future one alike: both daemons come from one install."""
    def other(state: TrafficState, conn: int, sealer: BlobSealer) -> bytes:
        outer = cbor_decode(sealer.seal(state, conn), MAX_BLOB)
        assert isinstance(outer, dict) and outer["v"] == 2
        return cbor_encode({**outer, "v": version})

    _, entry = attack(appd, other)
    assert entry["reason"] == "unsupported_version"


def test_oversize_blob_is_refused(appd: Appd) -> None:
    """Over 64 KiB: refused by the blob decoder before any parsing; only that connection fails."""
    _, entry = attack(appd, lambda state, conn, sealer: sealer.seal(state, conn) + bytes(MAX_BLOB))
    assert entry["reason"] == "oversize"

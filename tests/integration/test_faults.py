"""Faults: a daemon killed mid-stream or mid-handshake, secured gone for good, a hostile peer on secured's channel,
a backend that refuses or dies half-way through an answer.

Everything runs as real processes; the launcher (``tls-privsep run``) supervises where a restart is part of the
story, the ``pair`` fixture (no restarts) where it must not happen. Timings are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pwd
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import (
    AS_ROOT,
    ENV,
    MIB,
    ROOT,
    USERS,
    BioClient,
    Pair,
    PeerClosed,
    Pki,
    TcpBackend,
    alive,
    children,
    echo,
    expected_digest,
    free_port,
    keystream,
    wait_for,
)
from tests.tlsclient import Client
from tls_privsep.shared import channel as ch
from tls_privsep.shared import cli

APPD_CHANNEL_WAIT = 2.0  # appd/link.py: how long a new connection waits for a channel to secured


@pytest.fixture
def client_ctx(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def echo_handler(sock: socket.socket, result: dict[str, object]) -> None:
    """A TCP echo backend: everything back, then EOF after the client's EOF."""
    n = 0
    while data := sock.recv(MIB):
        sock.sendall(data)
        n += len(data)
    sock.shutdown(socket.SHUT_WR)
    result["echoed"] = n


def connection_lines(server: Pair, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
    """appd's summary lines (one per connection, in the order they ended), once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in server.log_text("appd").splitlines() if '"event": "connection"' in line]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count, lines
            return lines
        time.sleep(0.05)


def paced(blocks: Iterator[bytes], pause: float, after: Callable[[], bool]) -> Iterator[bytes]:
    """``blocks``, at most one per ``pause`` seconds once ``after()`` holds (so a stream outlasts an event)."""
    for block in blocks:
        yield block
        if after():
            time.sleep(pause)


def handshake_outcome(ctx: ssl.SSLContext, port: int, timeout: float) -> str:
    """One connection: "served" (handshake + echo round trip), "internal_error" (the alert) or "closed" (EOF or
    reset). A hang raises ``TimeoutError`` (the socket timeout), anything else propagates."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"probe")
            assert tls.recv(100) == b"probe"
            tls.unwrap()
            return "served"
    except ssl.SSLEOFError:
        return "closed"
    except ssl.SSLError as exc:
        if "internal error" in str(exc):
            return "internal_error"
        raise
    except (ConnectionResetError, BrokenPipeError):
        return "closed"


# ---- the launcher -------------------------------------------------------------------------------------------------


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    port: int
    rundir: Path
    err: Path

    @property
    def socket_path(self) -> Path:
        return self.rundir / "secured.sock"

    def daemons(self) -> dict[str, int]:
        return children(self.proc.pid)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def events(self, daemon: str, event: str) -> list[dict[str, object]]:
        """The daemons' JSON log lines (the launcher passes their stderr through) for one event."""
        out = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("daemon") == daemon and entry.get("event") == event:
                    out.append(entry)
        return out


@pytest.fixture
def launch(pki: Pki, client_ctx: ssl.SSLContext, tmp_path: Path) -> Iterator[Callable[[str], Launched]]:
    """``launch(backend)`` runs ``tls-privsep run`` in the foreground and waits until it serves."""
    started: list[tuple[Launched, Path]] = []

    def start(backend: str) -> Launched:
        base = Path(tempfile.mkdtemp(prefix="tls-privsep-faults-"))
        os.chmod(base, 0o711)  # as root the daemons run as nobody and must reach the socket in it
        port = free_port()
        out, err = tmp_path / f"stdout{len(started)}", tmp_path / f"stderr{len(started)}"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                [*cli.daemon_argv("launcher"), "run", "--listen", f"127.0.0.1:{port}", *pki.cert_args("ecdsa", "rsa"),
                 "--backend", backend, "--runtime-dir", str(base / "run"), "--log-format", "json", *USERS],
                stdout=o, stderr=e, env=ENV,
            )
        launched = Launched(proc, port, base / "run", err)
        started.append((launched, base))
        wait_for(lambda: "tls-privsep: ready" in out.read_text() or proc.poll() is not None, 20, "the ready line")
        assert proc.poll() is None, launched.stderr()[-3000:]
        wait_for(lambda: echo(client_ctx, port), 10, "the first connection")
        assert set(launched.daemons()) == {"secured", "appd"}
        return launched

    yield start
    for launched, base in started:
        proc = launched.proc
        daemons = launched.daemons()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in daemons.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


# ---- 1. kill -9 secured in the middle of a stream -----------------------------------------------------------------


def test_kill_secured_mid_stream_keeps_the_stream_and_handshakes_come_back(
        launch: Callable[[str], Launched], client_ctx: ssl.SSLContext) -> None:
    """30 MiB echoed through the tcp:// proxy while secured is SIGKILLed: the stream is intact; a handshake right
    after the kill ends within 3 s (served, or refused cleanly), and handshakes work again within 2 s."""
    total, seed, kill_at = 30 * MIB, 31, 8 * MIB
    backend = TcpBackend(echo_handler)
    try:
        srv = launch(f"tcp://127.0.0.1:{backend.port}")
        before = srv.daemons()
        probes: list[tuple[str, float, float]] = []  # (outcome, started after the kill, ended after the kill)
        failures: list[BaseException] = []
        marks: dict[str, float] = {}

        def probe_after_kill(killed: float) -> None:
            try:
                while True:
                    start = time.monotonic() - killed
                    outcome = handshake_outcome(client_ctx, srv.port, timeout=3.0)
                    probes.append((outcome, start, time.monotonic() - killed))
                    if outcome == "served" or time.monotonic() - killed > 6:
                        return
            except BaseException as exc:  # a hang (socket timeout) or an unexpected error, reported below
                failures.append(exc)

        digest = hashlib.sha256()
        got = 0
        prober: threading.Thread | None = None

        def on_data(data: bytes) -> None:
            nonlocal got, prober
            digest.update(data)
            got += len(data)
            if prober is None and got >= kill_at:
                os.kill(before["secured"], signal.SIGKILL)
                marks["killed"] = time.monotonic()
                marks["got_at_kill"] = got
                prober = threading.Thread(target=probe_after_kill, args=(marks["killed"],), daemon=True)
                prober.start()

        client = BioClient("127.0.0.1", srv.port, client_ctx, timeout=90)
        started = time.monotonic()
        try:
            # Full speed up to the kill, then slower: the remaining 22 MiB (88 blocks of 256 KiB) take seconds.
            client.transfer(paced(keystream(seed, total), 0.04, lambda: "killed" in marks), on_data)
        finally:
            client.close()
        finished = time.monotonic()
        assert prober is not None, "secured was never killed"
        prober.join(15)
        assert not prober.is_alive(), "a handshake after the kill hung"
        if failures:
            raise failures[0]
        results = backend.wait()  # the launcher's check and the probes went through the backend too
        echoed = max(results, key=lambda r: int(r.get("echoed", 0)))  # type: ignore[call-overload]

        killed = marks["killed"]
        print(f"\n30 MiB echoed in {finished - started:.2f} s; secured killed at {marks['got_at_kill'] / MIB:.1f} MiB "
              f"({killed - started:.2f} s in), stream ended {finished - killed:.2f} s after the kill")
        for outcome, t0, t1 in probes:
            print(f"  handshake started {t0:.3f} s after the kill: {outcome} at {t1:.3f} s")
        first_failed = next((t1 for outcome, _, t1 in probes if outcome != "served"), None)
        served_at = next((t1 for outcome, _, t1 in probes if outcome == "served"), None)
        assert served_at is not None, f"no handshake served within 6 s of the kill: {probes}"
        print(f"  first cleanly failed handshake: {'none' if first_failed is None else f'{first_failed:.3f} s'}; "
              f"handshakes work again {served_at:.3f} s after the kill")

        # The stream: every byte back, in order, and a clean close.
        assert got == total and echoed["echoed"] == total
        assert digest.hexdigest() == expected_digest(seed, total)
        assert client.eof_received
        assert marks["got_at_kill"] < total, "the kill came after the stream"
        assert finished - killed > served_at, "the stream did not outlast secured's absence"
        # The first handshake after the kill ends promptly, whatever its outcome; every later one too.
        assert probes[0][2] < 3.0, f"the first handshake after the kill took {probes[0][2]:.2f} s"
        assert all(t1 - t0 < 3.0 for _, t0, t1 in probes), probes
        # And one succeeds within 2 s of the kill: the launcher restarted secured, appd reconnected.
        assert served_at < 2.0, f"handshakes came back {served_at:.2f} s after the kill"
        after = srv.daemons()
        assert after["secured"] != before["secured"] and after["appd"] == before["appd"]
        assert "secured exited (signal SIGKILL); restarting" in srv.stderr()
    finally:
        backend.close()


# ---- 2. secured gone for good --------------------------------------------------------------------------------------


def test_secured_gone_for_good(pair: Callable[..., Pair], client_ctx: ssl.SSLContext) -> None:
    """No restart (the pair fixture): an established session carries on and closes cleanly; every new connection
    gets internal_error within ~3 s (appd waits 2 s for a channel first); appd stays up and says why."""
    server = pair("--backend", "echo")
    with socket.create_connection((server.host, server.port), timeout=5) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"before")
        assert tls.recv(100) == b"before"
        server.secured.kill()
        server.secured.wait(5)
        killed = time.monotonic()
        server.wait_log("appd", '"channel down"')

        def attempt(i: int) -> tuple[str, float]:
            start = time.monotonic()
            outcome = handshake_outcome(client_ctx, server.port, timeout=10)
            return outcome, time.monotonic() - start

        with ThreadPoolExecutor(max_workers=3) as pool:
            attempts = list(pool.map(attempt, range(3)))
        # One more, alone, after the others: nothing changed in between.
        attempts.append(attempt(3))
        print("\nsecured killed; new connections: " +
              ", ".join(f"{outcome} after {took:.2f} s" for outcome, took in attempts))
        for outcome, took in attempts:
            assert outcome == "internal_error"
            assert APPD_CHANNEL_WAIT - 0.1 < took < 3.0, f"refused after {took:.2f} s"

        # The established session is appd's alone: it goes on, and ends with close_notify both ways.
        for i in range(5):
            message = f"after the kill {i}".encode()
            tls.sendall(message)
            assert tls.recv(100) == message
        plain = tls.unwrap()  # our close_notify, then appd's
        assert plain.recv(100) == b""  # and then the TCP close
    print(f"established session closed cleanly {time.monotonic() - killed:.2f} s after the kill")

    assert server.appd.poll() is None
    conns = connection_lines(server, 5)
    assert sum(str(c["outcome"]).startswith("secured unavailable") for c in conns) == 4, conns
    (established,) = [c for c in conns if c["handshake_ms"] is not None]
    assert established["outcome"] == "closed"
    assert established["bytes_in"] == len(b"before") + sum(len(f"after the kill {i}".encode()) for i in range(5))


# ---- 3. kill -9 appd with handshakes in flight ---------------------------------------------------------------------


def test_kill_appd_with_handshakes_in_flight(launch: Callable[[str], Launched], client_ctx: ssl.SSLContext) -> None:
    """20 clients stopped after the server's first flight; kill -9 appd: secured drops the channel with its 20
    handshakes in flight, accepts the restarted appd's channel, and serves; secured's pid never changes."""
    n = 20
    srv = launch("echo")
    before = srv.daemons()
    ups_before = len(srv.events("secured", "channel up"))
    clients: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            clients.append(sock)
            sock.sendall(Client().client_hello_record())
        for sock in clients:  # the ServerHello came back: the handshake is open in secured
            assert len(sock.recv(5)) > 0
        os.kill(before["appd"], signal.SIGKILL)
        killed = time.monotonic()

        # The stalled clients learn at once: the kernel closes their connections with appd.
        for sock in clients:
            sock.settimeout(3)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):
                    pass
        clients_closed = time.monotonic() - killed

        wait_for(lambda: srv.events("secured", "channel down"), 10, "secured's channel down")
        down_at = time.monotonic() - killed
        (down,) = srv.events("secured", "channel down")
        assert down["failed_in_flight"] == n, down  # every stalled handshake ended with the channel
        wait_for(lambda: len(srv.events("secured", "channel up")) > ups_before, 10, "secured's next channel up")
        up_at = time.monotonic() - killed
        wait_for(lambda: echo(client_ctx, srv.port), 10, "a handshake with the restarted appd")
        served_at = time.monotonic() - killed
        print(f"\nappd kill -9 with {n} handshakes in flight: clients closed {clients_closed:.2f} s, "
              f"secured 'channel down' ({down['reason']}, failed_in_flight {down['failed_in_flight']}) "
              f"seen {down_at:.2f} s, new 'channel up' seen {up_at:.2f} s, served again {served_at:.2f} s")

        ups = srv.events("secured", "channel up")
        assert down["channel"] == 1  # the old appd's channel went down; the new appd's is secured's second
        assert "appd exited (signal SIGKILL); restarting" in srv.stderr()
        after = srv.daemons()
        assert [(u["channel"], u["peer_pid"]) for u in ups] == [(1, before["appd"]), (2, after["appd"])]
        assert after["secured"] == before["secured"] and after["appd"] != before["appd"]
        assert not alive(before["appd"])
        assert clients_closed < 3.0
    finally:
        for sock in clients:
            sock.close()


# ---- 4. a hostile peer on secured's channel socket -----------------------------------------------------------------

# Runs as the appd user (an allowed uid), one scenario per line on stdin, one JSON line per answer on stdout.
HOSTILE_PEER = r"""
import json, os, random, socket, sys, time
from tls_privsep.shared import channel as ch
from tests.tlsclient import Client

path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if os.getuid() != uid:  # started as root: the interpreter's files may be out of the appd user's reach, so
    # every code path runs once before the switch (imports are lazy in places)
    import threading  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    exchange = ch.HelloExchange("appd")
    exchange.finish(ch.make_hello(X25519PrivateKey.generate(), "secured").encode())
    for msg in (ch.Hs(1, Client().client_hello_record(), 0), ch.Open(1, "x", b"x"), ch.Done(1, b"", 0, bytes(64), b"")):
        ch.decode(msg.encode())
    ch.decode(ch.Error("warm_up").encode())
    random.Random(0).randbytes(8)
    json.dumps({"warm": time.monotonic()})
    try:
        ch.decode(bytes(ch.MAX_MESSAGE + 1))
    except Exception:
        pass
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)

def recv(sock):
    try:
        return sock.recv(ch.MAX_MESSAGE + 1)
    except ConnectionResetError:
        return b""

def scenario(name):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.settimeout(10)
    sock.connect(path)
    raw_hello = recv(sock)
    assert isinstance(ch.decode(raw_hello), ch.Hello)
    if name == "random-bytes":
        datagram = random.Random(20240).randbytes(300)
    elif name == "hs-before-hello":
        datagram = ch.Hs(1, Client().client_hello_record(), 0).encode()
    else:
        exchange = ch.HelloExchange("appd")
        sock.send(exchange.datagram)
        exchange.finish(raw_hello)
        if name == "oversized":
            datagram = bytes(ch.MAX_MESSAGE + 1)
        elif name == "hs-never-opened":
            datagram = ch.Hs(1, Client().client_hello_record(), 0).encode()
        elif name == "done-from-appd":
            sock.send(ch.Open(1, "hostile", Client().client_hello_record()).encode())
            recv(sock)  # secured's flight
            datagram = ch.Done(1, b"", 0, bytes(64), b"").encode()
        else:
            raise SystemExit(f"unknown scenario {name}")
    sent = time.monotonic()
    sock.send(datagram)
    reply = recv(sock)
    took = time.monotonic() - sent
    closed = (recv(sock) if reply else b"") == b""
    sock.close()
    msg = ch.decode(reply) if reply else None
    return {"scenario": name, "size": len(datagram), "reply": type(msg).__name__ if msg else None,
            "reason": getattr(msg, "reason", None), "closed": closed, "ms": round(took * 1000, 1)}

for line in sys.stdin:
    try:
        out = scenario(line.strip())
    except Exception as exc:
        out = {"scenario": line.strip(), "crash": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)
"""

HOSTILE_SCENARIOS = {  # scenario -> the reason secured must give (None: any reason token)
    "random-bytes": None,
    "oversized": "oversize",
    "hs-never-opened": "unknown_conn",
    "done-from-appd": "wrong_direction",
    "hs-before-hello": "hello_expected",
}


def test_hostile_channel_peer_is_cut_off_and_appd_keeps_serving(
        launch: Callable[[str], Launched], client_ctx: ssl.SSLContext) -> None:
    """A second peer on secured's socket, as the appd user: garbage, an oversized datagram, an hs for a connection
    never opened, done from the wrong side, hs before hello. Each gets the channel error and a close; the real appd
    keeps serving throughout, on the same channel, and secured never restarts."""
    srv = launch("echo")
    before = srv.daemons()
    # Root is off secured's allow-list once secured drops privileges; the appd user is on it.
    uid, gid = (pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid) if AS_ROOT else (os.getuid(), os.getgid())
    peer = subprocess.Popen([sys.executable, "-c", HOSTILE_PEER, str(srv.socket_path), str(uid), str(gid)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "PYTHONPATH": str(ROOT)})
    answers = []
    try:
        assert echo(client_ctx, srv.port, b"before")
        for name in HOSTILE_SCENARIOS:
            assert peer.stdin is not None and peer.stdout is not None
            peer.stdin.write(name + "\n")
            peer.stdin.flush()
            ready, _, _ = select.select([peer.stdout], [], [], 20)
            assert ready, f"{name}: no answer from the hostile peer"
            answers.append(json.loads(peer.stdout.readline()))
            assert echo(client_ctx, srv.port, f"after {name}".encode()), f"appd stopped serving after {name}"
    finally:
        if peer.stdin is not None:
            peer.stdin.close()
        try:
            peer.wait(10)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()
    assert peer.stderr is not None
    print("\nhostile channel peer:")
    for answer in answers:
        print(f"  {answer}")
    for answer, (name, reason) in zip(answers, HOSTILE_SCENARIOS.items(), strict=True):
        assert "crash" not in answer, answer
        assert answer["scenario"] == name
        assert answer["reply"] == "Error" and answer["closed"], answer
        if reason is not None:
            assert answer["reason"] == reason, answer
    assert answers[1]["size"] > ch.MAX_MESSAGE

    errors = srv.events("secured", "channel protocol error")
    assert len(errors) == len(HOSTILE_SCENARIOS), errors
    assert all(e["peer_uid"] == uid for e in errors)
    after = srv.daemons()
    assert after == before, "a daemon restarted"
    # The real appd's channel was never touched: brought up once, never down.
    assert len(srv.events("appd", "channel up")) == 1 and srv.events("appd", "channel down") == []


# ---- 5. a backend that refuses, a backend that dies mid-answer ------------------------------------------------------


def test_backend_refusing_gives_close_notify_then_eof_promptly(
        pair: Callable[..., Pair], client_ctx: ssl.SSLContext) -> None:
    """Nothing listens at the tcp:// port: close_notify, then the TCP close, within 2 s, without the client
    answering; appd stays up. (test_traffic checks the close_notify itself and serving afterwards.)"""
    port = free_port()
    server = pair("--backend", f"tcp://127.0.0.1:{port}")
    client = BioClient(server.host, server.port, client_ctx, timeout=10)
    try:
        client.obj.write(b"anyone there?")
        sent = time.monotonic()
        client._flush()
        with pytest.raises(PeerClosed):  # close_notify, not an alert (an SSLError) and not a bare EOF
            while True:
                assert client.read_some() == b""
                client._pump(want_read=True)
        notified = time.monotonic() - sent
        client.sock.setblocking(True)
        client.sock.settimeout(5)
        assert client.sock.recv(100) == b""  # nothing after close_notify, then EOF
        closed = time.monotonic() - sent
    finally:
        client.close()
    print(f"\nbackend refused: close_notify after {notified * 1000:.0f} ms, TCP close after {closed * 1000:.0f} ms")
    assert closed < 2.0
    assert server.appd.poll() is None


def test_backend_reset_mid_answer_gives_internal_error(
        pair: Callable[..., Pair], client_ctx: ssl.SSLContext) -> None:
    """The backend sends half an answer, then resets the connection: the client gets that half, then an
    internal_error alert (never close_notify: a cut-off answer must not look complete); appd keeps serving."""
    half = b"".join(keystream(5, 200_000))
    cut = threading.Event()
    which = itertools.count()

    def handler(sock: socket.socket, result: dict[str, object]) -> None:
        if next(which) > 0:
            echo_handler(sock, result)
            return
        sock.recv(100)
        sock.sendall(half)
        assert cut.wait(10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        result["reset_at"] = time.monotonic()

    backend = TcpBackend(handler)
    try:
        server = pair("--backend", f"tcp://127.0.0.1:{backend.port}")
        with socket.create_connection((server.host, server.port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
            tls.sendall(b"GET /half")
            got = bytearray()
            while len(got) < len(half):
                chunk = tls.recv(65536)
                assert chunk, "close_notify in the middle of the answer"
                got += chunk
            assert got == half
            cut.set()
            with pytest.raises(ssl.SSLError, match="internal error"):
                extra = tls.recv(65536)
                pytest.fail(f"after the reset the client read {extra!r}, not an alert")
            alerted = time.monotonic()
        (result,) = backend.wait(1)
        took = alerted - float(result["reset_at"])  # type: ignore[arg-type]
        print(f"\nbackend reset after {len(half)} bytes: internal_error alert {took * 1000:.0f} ms later")
        assert took < 2.0
        server.wait_log("appd", '"backend connection failed"')
        assert server.appd.poll() is None

        # The same appd serves the next connection through the same backend.
        with socket.create_connection((server.host, server.port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"still there?")
            assert tls.recv(100) == b"still there?"
            tls.unwrap()
        conns = connection_lines(server, 2)
        print(f"appd's connection outcomes: {[c['outcome'] for c in conns]}")
        # The summary line says the client was cut off, not that the connection closed normally.
        assert [c["outcome"] for c in conns] == ["alert sent: internal_error", "closed"]
    finally:
        backend.close()

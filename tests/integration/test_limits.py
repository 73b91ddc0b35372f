"""Limits against abuse on the real daemons, each at N-1 and N (served) and N+1 (what the client sees).

Every limit is set small in a TOML file given with ``-c``, and timeouts short, so the whole file runs
in seconds. Clients are Python's ``ssl`` where only the outcome matters, and the scriptable client in
tests/tlsclient.py where the records themselves are checked (which alert, which key protected what).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import select
import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.helpers import AS_ROOT, ROOT, Pair, Pki, start_pair, stop_processes
from tests.tlsclient import Client, record
from tls_privsep.shared import cli
from tls_privsep.shared.errors import AlertDescription as AD
from tls_privsep.shared.record import Protection

INTERNAL_ERROR = bytes([21, 3, 3, 0, 2, 2, AD.internal_error])


def write_config(directory: Path, text: str) -> str:
    path = directory / "limits.toml"
    path.write_text(text)
    return str(path)


def ssl_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def full_handshake(server: Pair, pki: Pki, timeout: float = 5.0) -> ssl.SSLSocket:
    """A new connection through the whole handshake, checked with one echo."""
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    tls = ssl_context(pki).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    tls.sendall(b"ping")
    assert tls.recv(100) == b"ping"
    return tls


def stalled(server: Pair, first_bytes: bytes = b"") -> socket.socket:
    """A connection that sends ``first_bytes`` (maybe nothing) and then nothing at all."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open at ``timeout``."""
    sock.settimeout(timeout)
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            got += chunk
    return got


def nothing_within(sock: socket.socket, seconds: float) -> bool:
    ready, _, _ = select.select([sock], [], [], seconds)
    return not ready


class RawTls:
    """A TLS 1.3 client on a real socket where every record the server sends can be inspected.

    Built on tests/tlsclient.py for the handshake; afterwards it seals and opens records itself and
    follows the server's KeyUpdates, remembering under which key generation each record arrived.
    """

    def __init__(self, server: Pair, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.client = Client()
        self._buf = b""

    def record(self) -> tuple[int, bytes, bytes]:
        while True:
            if len(self._buf) >= 5:
                n = int.from_bytes(self._buf[3:5], "big")
                if len(self._buf) >= 5 + n:
                    header, payload = self._buf[:5], self._buf[5 : 5 + n]
                    self._buf = self._buf[5 + n :]
                    return header[0], header, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self._buf += chunk

    def handshake(self, *, before_finished: float = 0.0, finish: bool = True) -> RawTls:
        """Up to the server's Finished; then, after ``before_finished`` seconds, the client's own."""
        c = self.client
        self.sock.sendall(c.client_hello_record())
        ctype, _, server_hello = self.record()
        assert ctype == 22
        c._on_server_hello(server_hello)
        assert c.suite is not None
        reader = Protection(c.suite.suite, c._secrets["s_hs"])
        messages = b""
        while "s_ap" not in c._secrets:
            ctype, header, payload = self.record()
            if ctype == 20:
                continue
            inner, plain = reader.open(header, payload)
            assert inner == 22
            messages += plain
            while len(messages) >= 4 and len(messages) >= 4 + int.from_bytes(messages[1:4], "big"):
                n = 4 + int.from_bytes(messages[1:4], "big")
                msg, messages = messages[:n], messages[n:]
                c.transcript.append(msg)
                if msg[0] == 20:
                    c._derive_application()
        if not finish:
            return self
        time.sleep(before_finished)
        self.sock.sendall(c.protect(c.finished_message()))
        self.write = Protection(c.suite.suite, c._secrets["c_ap"])
        self.read = Protection(c.suite.suite, c._secrets["s_ap"])
        self.generation = 0
        return self

    def send(self, data: bytes, content_type: int = 23) -> None:
        self.sock.sendall(self.write.seal(content_type, data))

    def next(self) -> tuple[int, int, bytes]:
        """(key generation, inner content type, content) of the server's next record; a KeyUpdate is followed."""
        _, header, payload = self.record()
        generation = self.generation
        inner, plain = self.read.open(header, payload)
        if inner == 22 and plain[:1] == b"\x18":
            assert plain == b"\x18\x00\x00\x01\x00", plain.hex()  # update_not_requested
            self.read = self.read.next_generation()
            self.generation += 1
        return generation, inner, plain

    def close(self) -> None:
        self.sock.close()


# ---- one pair with every record-layer limit set small --------------------------------------------

SMALL = """
[secured]
max_handshake_message = 2048
max_handshake_records = 8

[appd]
idle_timeout = 1.0
key_update_after = 8
max_empty_records = 2
max_key_updates = 2
max_warning_alerts = 2
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Pair]:
    d = tmp_path_factory.mktemp("small-limits")
    args = ["-c", write_config(d, SMALL), "--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1])]
    server = start_pair(d, args)
    yield server
    server.stop()


@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_client_hello_size_from_the_config(small: Pair, delta: int) -> None:
    c = Client()
    c.hello.set(21, b"")
    c.hello.set(21, bytes(2048 + delta - (len(c.hello.encode()) - 4)))
    sock = stalled(small, record(22, c.hello.encode(), 0x0301))
    got = read_until_closed(sock, 5) if delta > 0 else sock.recv(5)
    if delta > 0:
        assert got == bytes([21, 3, 3, 0, 2, 2, AD.illegal_parameter])
    else:
        assert got[:1] == b"\x16"  # ServerHello
    sock.close()


def test_the_largest_client_hello_through_the_daemons(pair) -> None:  # type: ignore[no-untyped-def]
    """Every vector of the hello at its largest (131,142 body bytes in 9 records, one TCP write), at the
    default limits: appd relays it to secured in pieces over the channel, the handshake completes, and
    data is echoed under the imported keys."""
    server = pair(certs="ecdsa")
    tls = RawTls(server)
    tls.client.make_largest_hello()
    tls.handshake()
    ticket(tls)
    tls.send(b"ping")
    assert tls.next() == (0, 23, b"ping")
    for _ in range(3):
        tls.send(b"x" * (40000 // 3 + 1))
    got = b""
    while len(got) < 3 * (40000 // 3 + 1):
        generation, inner, plain = tls.next()
        assert (generation, inner) == (0, 23)
        got += plain
    assert got == b"x" * (3 * (40000 // 3 + 1))
    tls.close()
    log = server.log_text("secured")
    assert '"handshake done"' in log and "alert sent" not in log


def test_client_hello_over_the_largest_is_refused_by_the_daemons(pair) -> None:  # type: ignore[no-untyped-def]
    server = pair(certs="ecdsa")
    sock = stalled(server, record(22, b"\x01" + (131396 + 1).to_bytes(3, "big"), 0x0301))
    assert read_until_closed(sock, 5) == bytes([21, 3, 3, 0, 2, 2, AD.illegal_parameter])
    sock.close()


@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_records_before_the_handshake_from_the_config(small: Pair, delta: int) -> None:
    msg = Client().hello.encode()
    pieces = 8 + delta
    cut = [len(msg) * i // pieces for i in range(pieces + 1)]
    wire = b"".join(record(22, msg[a:b], 0x0301) for a, b in itertools.pairwise(cut))
    sock = stalled(small, wire)
    if delta > 0:
        assert read_until_closed(sock, 5) == bytes([21, 3, 3, 0, 2, 2, AD.unexpected_message])
    else:
        assert sock.recv(5)[:1] == b"\x16"
    sock.close()


def ticket(tls: RawTls) -> None:
    """The server's first record: its NewSessionTickets, under the first application key."""
    generation, inner, plain = tls.next()
    assert (generation, inner, plain[:1]) == (0, 22, b"\x04")


def send_key_update(tls: RawTls) -> None:
    tls.send(b"\x18\x00\x00\x01\x00", 22)  # KeyUpdate, update_not_requested
    tls.write = tls.write.next_generation()


RUNS = {
    "empty records": lambda tls: tls.send(b""),
    "KeyUpdates": send_key_update,
    "warning alerts": lambda tls: tls.send(bytes([1, AD.user_canceled]), 21),
}


@pytest.mark.parametrize("kind", list(RUNS))
@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["N-1", "N", "N+1"])
def test_runs_without_data_from_the_config(small: Pair, kind: str, delta: int) -> None:
    tls = RawTls(small).handshake()
    ticket(tls)
    for _ in range(2 + delta):
        RUNS[kind](tls)
    tls.send(b"ok")
    if delta <= 0:
        assert tls.next() == (0, 23, b"ok")
    else:
        assert tls.next() == (0, 21, bytes([2, AD.unexpected_message]))
        with pytest.raises(EOFError):
            tls.next()
    tls.close()


# ---- the AEAD usage limit: appd updates its own key (appd.key_update_after) ----------------------


def test_key_update_after_n_records(small: Pair) -> None:
    """key_update_after = 8: one key protects 8 records, the KeyUpdate that retires it included.

    So under every key the client sees N-1 = 7 records that are not a KeyUpdate, the Nth is the
    KeyUpdate, and no record N+1 ever comes under that key. The first key also protected the tickets.
    """
    n = 8
    tls = RawTls(small).handshake()
    ticket(tls)
    seen: list[tuple[int, bool]] = [(0, False)]  # (key generation, is a KeyUpdate), in arrival order
    for i in range(40):
        msg = b"message %d" % i
        tls.send(msg)
        while True:
            generation, inner, plain = tls.next()
            seen.append((generation, inner == 22))
            if inner == 23:
                assert plain == msg  # the data is intact across every key change
                break
            assert inner == 22  # a KeyUpdate (checked in RawTls.next)
    generations = sorted({g for g, _ in seen})
    assert len(generations) >= 5
    for g in generations[:-1]:  # every key that was retired
        under = [is_ku for gen, is_ku in seen if gen == g]
        assert len(under) == n, (g, under)
        assert not any(under[: n - 1]) and under[n - 1]
    last = [is_ku for gen, is_ku in seen if gen == generations[-1]]
    assert 1 <= len(last) <= n - 1 and not any(last)
    # A large write crosses key changes in the middle: still byte for byte.
    payload = os.urandom(300_000)
    tls.sock.sendall(b"".join(tls.write.seal(23, payload[i : i + 16384]) for i in range(0, len(payload), 16384)))
    got = b""
    while len(got) < len(payload):
        _, inner, plain = tls.next()
        if inner == 23:
            got += plain
    assert got == payload
    assert tls.generation > generations[-1] + 2
    tls.close()


def test_key_updates_with_openssl_as_the_client(small: Pair, pki: Pki) -> None:
    """Python's ssl (OpenSSL) follows every KeyUpdate appd sends: 400 echoes, 57 key changes, no byte lost."""
    tls = full_handshake(small, pki)
    for i in range(400):
        msg = b"line %d\n" % i
        tls.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += tls.recv(100)
        assert got == msg
    tls.close()


# ---- idle timeout (appd.idle_timeout) ----------------------------------------------------------


def test_idle_timeout(small: Pair, pki: Pki) -> None:
    idle = 1.0
    tls = full_handshake(small, pki)
    start = time.monotonic()
    for gap in (0.5, 0.6, 0.6):  # below the limit each time, though longer than it in all
        time.sleep(gap)
        tls.sendall(b"still here")
        assert tls.recv(100) == b"still here"
    assert time.monotonic() - start > 1.5 * idle
    silent = time.monotonic()
    tls.settimeout(idle + 3)
    # b"" from an SSLSocket with suppress_ragged_eofs=False means close_notify, not a bare TCP close.
    assert tls.recv(100) == b""
    waited = time.monotonic() - silent
    assert idle - 0.05 <= waited <= idle + 0.5, waited
    tls.close()


# ---- max_connections ----------------------------------------------------------------------------


def test_max_connections(pair, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = pair("-c", write_config(tmp_path, "[appd]\nmax_connections = 3\n"))
    conns = [full_handshake(server, pki) for _ in range(2)]  # N-1
    conns.append(full_handshake(server, pki))  # N
    # N+1: the kernel completes the TCP handshake (listen backlog) but appd does not accept: no answer.
    fourth = stalled(server, Client().client_hello_record())
    assert nothing_within(fourth, 0.7)
    for tls in conns[1:]:  # the three are unaffected
        tls.sendall(b"x")
        assert tls.recv(10) == b"x"
    conns[0].close()
    fourth.settimeout(5)
    assert fourth.recv(5)[:1] == b"\x16"  # a slot freed: it is served (ServerHello), its deadline starting now
    fourth.close()
    for tls in conns[1:]:
        tls.close()


# ---- handshakes in flight in secured, per channel -------------------------------------------------


def hello_sent(server: Pair | Appd) -> socket.socket:
    """A connection that sends a ClientHello and stalls: it holds a handshake in secured."""
    sock = stalled(server, Client().client_hello_record())
    assert sock.recv(1) == b"\x16"  # secured answered: the handshake is in flight there
    return sock


def served_soon(server: Pair | Appd, pki: Pki, within: float = 5.0) -> None:
    """A full handshake succeeds within ``within`` seconds (refusals before that are retried)."""
    deadline = time.monotonic() + within
    while True:
        try:
            full_handshake(server, pki).close()
            return
        except ssl.SSLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_handshakes_per_channel(pair, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = pair("-c", write_config(tmp_path, "[secured]\nmax_handshakes_per_channel = 3\n"))
    silent = [stalled(server) for _ in range(5)]  # hold nothing in secured: they never sent a whole record
    held = [hello_sent(server)]
    full_handshake(server, pki).close()  # N-1 (2 in flight)
    held.append(hello_sent(server))
    full_handshake(server, pki).close()  # N (3 in flight)
    held.append(hello_sent(server))
    refused = stalled(server, Client().client_hello_record())  # N+1
    assert read_until_closed(refused, 3) == INTERNAL_ERROR
    server.wait_log("secured", '"handshake refused"')
    assert [e["limit"] for e in server.events("secured", "handshake refused")] == ["per_channel"]
    with pytest.raises(ssl.SSLError, match="INTERNAL_ERROR"):
        ssl_context(pki).wrap_socket(stalled(server), server_hostname="localhost")
    held.pop().close()
    served_soon(server, pki)  # room again, once appd has seen the close and told secured (abort)
    for sock in held + silent:
        sock.close()


# ---- the handshake deadline (appd.handshake_timeout, secured.handshake_timeout) ------------------


def trickle(sock: socket.socket, data: bytes, every: float, until: float) -> None:
    """Send ``data`` a byte at a time, never finishing before ``until`` (the deadline must not move)."""
    for i in range(len(data)):
        if time.monotonic() >= until:
            return
        try:
            sock.send(data[i : i + 1])
        except OSError:  # closed by the server
            return
        time.sleep(every)


@pytest.mark.parametrize("whose", ["appd", "secured"])
def test_handshake_deadline(pair, pki: Pki, tmp_path: Path, whose: str) -> None:  # type: ignore[no-untyped-def]
    """Whichever daemon's deadline comes first ends the handshake: the client sees the TCP connection
    close (no alert: none names a timeout) whatever it sent meanwhile, and not before the deadline.
    secured's deadline runs from the client's first whole record (before it, secured has nothing to
    time), and secured reaps every deadline/4, so it is met within a quarter of it."""
    deadline = 1.0
    text = (f"[appd]\nhandshake_timeout = {deadline}\n[secured]\nhandshake_timeout = 30\n" if whose == "appd"
            else f"[secured]\nhandshake_timeout = {deadline}\n[appd]\nhandshake_timeout = 30\n")
    server = pair("-c", write_config(tmp_path, text))
    start = time.monotonic()
    hello = Client().client_hello_record()
    socks: dict[str, socket.socket] = {}
    drips: list[tuple[socket.socket, bytes]] = []
    if whose == "appd":  # these never reach secured
        socks["silent"] = stalled(server)
        socks["partial hello"] = stalled(server, hello[:3])
        socks["dripping hello"] = stalled(server)
        drips.append((socks["dripping hello"], hello))
    for name in ("after hello", "partial finished", "dripping finished"):
        raw = RawTls(server).handshake(finish=False)  # has our whole flight
        socks[name] = raw.sock
        second_flight = record(20, b"\x01") + raw.client.protect(raw.client.finished_message())
        if name == "partial finished":
            raw.sock.sendall(second_flight[:3])
        elif name == "dripping finished":
            drips.append((raw.sock, second_flight))
    in_time = RawTls(server)
    with ThreadPoolExecutor(len(drips) + 1) as pool:
        for sock, data in drips:
            pool.submit(trickle, sock, data, 0.05, start + deadline + 1)
        ok = pool.submit(in_time.handshake, before_finished=deadline / 2)  # finishes within the deadline
        closed_at: dict[str, float] = {}
        got = dict.fromkeys(socks, b"")
        sel = selectors.DefaultSelector()
        for name, sock in socks.items():
            sel.register(sock, selectors.EVENT_READ, name)
        while len(closed_at) < len(socks) and time.monotonic() < start + deadline + 3:
            for key, _ in sel.select(0.1):
                try:
                    chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[key.data] += chunk
                else:
                    closed_at[key.data] = time.monotonic() - start
                    sel.unregister(key.fileobj)
        tls = ok.result()
    assert set(closed_at) == set(socks), closed_at
    late = deadline + (deadline / 4 if whose == "secured" else 0) + 0.5
    for name, at in closed_at.items():
        assert deadline - 0.05 <= at <= late, (name, at)
    assert set(got.values()) == {b""}, got  # not a byte more (the flight was read before): no alert
    ticket(tls)
    tls.send(b"made it")
    assert tls.next()[1:] == (23, b"made it")
    for sock in [*socks.values(), tls.sock]:
        sock.close()


# ---- several appds on one secured: handshakes in flight in total (secured.max_handshakes_total) ----

AS_USER = ["--user", "nobody"] if AS_ROOT else []


@dataclass
class Appd:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class SharedSecured:
    """secured listening on a socket path, with appds connecting to it like separate services."""

    dir: Path
    secured: subprocess.Popen[bytes]
    socket_dir: str
    appds: list[Appd] = field(default_factory=list)

    def stop(self) -> None:
        stop_processes([a.proc for a in self.appds] + [self.secured])
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _spawn(module: str, args: list[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        return subprocess.Popen([*cli.daemon_argv(module), "--log-format", "json", *AS_USER, *args],
                                stdout=out, stderr=out, env=env, **kw)  # type: ignore[call-overload]


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"{path.name}: exited\n{path.read_text(errors='replace')[-2000:]}"
        assert time.monotonic() < deadline, f"{text!r} not in {path.name}:\n{path.read_text(errors='replace')[-2000:]}"
        time.sleep(0.05)


def start_shared(directory: Path, pki: Pki, config_text: str, appds: int, **appd_kw: object) -> SharedSecured:
    socket_dir = tempfile.mkdtemp(prefix="tls-limits-", dir="/tmp")  # short: a socket path has 108 bytes
    os.chmod(socket_dir, 0o711)  # as root the daemons are nobody, and appd must reach the socket
    path = f"{socket_dir}/secured.sock"
    common = ["-c", write_config(directory, config_text), "--socket", path]
    certs = ["--cert", str(pki.ecdsa[0]), "--key", str(pki.ecdsa[1])]
    secured_log = directory / "secured.log"
    shared = SharedSecured(directory, _spawn("secured", [*common, *certs, *(["--appd-user", "nobody"] if AS_ROOT else [])],
                                             secured_log), socket_dir)
    try:
        _wait_for(secured_log, '"ready"', shared.secured)
        for i in range(appds):
            ready_r, ready_w = os.pipe()
            log = directory / f"appd{i}.log"
            proc = _spawn("appd", [*common, "--listen", "127.0.0.1:0", "--ready-fd", str(ready_w)], log,
                          pass_fds=(ready_w,), **appd_kw)
            os.close(ready_w)
            with os.fdopen(ready_r, "rb") as ready:
                line = ready.readline().decode()
            assert line.endswith("\n"), log.read_text()
            host, _, port = line.split()[0].rpartition(":")
            shared.appds.append(Appd(host, int(port), proc, log))
            _wait_for(log, '"channel up"', proc)
    except BaseException:
        shared.stop()
        raise
    return shared


def test_handshakes_in_total_across_channels(tmp_path: Path, pki: Pki) -> None:
    shared = start_shared(tmp_path, pki, "[secured]\nmax_handshakes_per_channel = 3\nmax_handshakes_total = 4\n", 2)
    try:
        a, b = shared.appds
        held = [hello_sent(a), hello_sent(a), hello_sent(b)]
        full_handshake(b, pki).close()  # N: the 4th in flight (A 2, B 2)
        held.append(hello_sent(a))  # A 3 (its own limit), B 1: 4 in all
        refused = stalled(b, Client().client_hello_record())  # B has room on its channel, secured has none: N+1
        assert read_until_closed(refused, 3) == INTERNAL_ERROR
        refusals = [json.loads(line) for line in (tmp_path / "secured.log").read_text().splitlines()
                    if '"handshake refused"' in line]
        assert [r["limit"] for r in refusals] == ["total"]
        held.pop(0).close()  # one of A's ends: room again, on either channel
        served_soon(b, pki)
        for sock in held:
            sock.close()
    finally:
        shared.stop()


# ---- slowloris: 1,000 stalled handshakes ----------------------------------------------------------

STALLED = 1000


def fd_room(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {n} descriptors this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def timed_handshake(server: Pair, pki: Pki) -> float:
    start = time.monotonic()
    full_handshake(server, pki).close()
    return time.monotonic() - start


def test_slowloris(pair, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """1,000 connections send 3 bytes of a record header and stall. A new client's handshake is not
    delayed by more than a second, and every stalled one is closed at its deadline (plus a margin)."""
    deadline = 2.0
    fd_room(STALLED + 200)  # appd raises its own limit as far as max_connections needs
    server = pair("-c", write_config(tmp_path, f"[secured]\nhandshake_timeout = {deadline}\n"
                                                 f"[appd]\nhandshake_timeout = {deadline}\n"))
    baseline = min(timed_handshake(server, pki) for _ in range(3))
    socks: list[socket.socket] = []
    try:
        start = time.monotonic()
        for _ in range(STALLED):
            sock = socket.create_connection((server.host, server.port))
            sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello record header
            socks.append(sock)
        opened = time.monotonic()
        loaded = timed_handshake(server, pki)  # the new client queues behind all 1,000 at accept
        measured = time.monotonic()
        assert measured < start + deadline, "measured after the stalled connections' deadline: not under load"
        print(f"\nslowloris: baseline {baseline * 1000:.0f} ms, with {STALLED} stalled {loaded * 1000:.0f} ms "
              f"(opened in {(opened - start) * 1000:.0f} ms)")
        assert loaded < baseline + 1.0, (baseline, loaded)

        sel = selectors.DefaultSelector()  # epoll: select() stops at descriptor 1024
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        closed: list[float] = []
        while len(closed) < STALLED and time.monotonic() < opened + deadline + 5:
            for key, _ in sel.select(0.2):
                try:
                    data = key.fileobj.recv(100)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                assert data == b"", data  # nothing, not even an alert: there is none for a timeout
                closed.append(time.monotonic())
                sel.unregister(key.fileobj)
        sel.close()
        assert len(closed) == STALLED, f"{STALLED - len(closed)} stalled connections still open"
        print(f"slowloris: first closed {min(closed) - start:.2f} s, last {max(closed) - start:.2f} s after the "
              f"first connect (deadline {deadline} s, all open after {opened - start:.2f} s)")
        assert min(closed) >= start + deadline - 0.05
        assert max(closed) <= opened + deadline + 1.0
    finally:
        for sock in socks:
            sock.close()
    full_handshake(server, pki).close()  # and the server is still fine


# ---- out of file descriptors: appd waits, it does not die -----------------------------------------


def test_accept_out_of_descriptors(tmp_path: Path, pki: Pki) -> None:
    """With a hard RLIMIT_NOFILE of 64, 100 connections at once: accept() fails with EMFILE. appd says so,
    leaves the rest in the listen backlog, and serves them as descriptors free up."""
    limit = 64

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    shared = start_shared(tmp_path, pki, "[appd]\nhandshake_timeout = 1.0\n", 1, preexec_fn=low_limit)
    try:
        app = shared.appds[0]
        assert "file descriptor limit below what max_connections needs" in app.log.read_text()
        socks = [stalled(app) for _ in range(100)]
        _wait_for(app.log, '"accept failing"', app.proc)
        tls = full_handshake(app, pki, timeout=10)  # in the backlog until stalled ones reach their deadline
        assert app.proc.poll() is None
        _wait_for(app.log, '"accept working again"', app.proc)
        tls.close()
        for sock in socks:
            sock.close()
    finally:
        shared.stop()

"""The application side of appd: what runs on the decrypted stream (DESIGN.md §6 backends).

- ``echo``: every record's plaintext comes back as one record.
- ``http``: a tiny HTTP/1.1 responder (one record per answer, keep-alive) for demos and curl.
- ``tcp://HOST:PORT`` / ``unix:PATH``: a proxy with half-close in both directions, optionally
  announcing the client with a PROXY protocol v2 header.

Contract with the caller (appd/session.py): :func:`serve` returns when the application is done with
the connection, having sent close_notify wherever the end is a clean one. A failure of the *client*
stream (an alert, truncation, idle timeout) propagates as ``trio.BrokenResourceError`` so the caller
can log why; backend failures are handled here and logged in one line, never as a traceback. The
caller still owns the stream and must ``aclose()`` it.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import trio

from tls_privsep.appd.stream import BULK_RECEIVE, RecordStream, suite_name, version_name
from tls_privsep.shared.errors import ConfigError
from tls_privsep.shared.log import Logger
from tls_privsep.shared.record import MAX_PLAINTEXT
from tls_privsep.shared.state import TLS13

__all__ = ["Backend", "parse_backend", "proxy_v2_header", "serve"]

# Bulk costs per read and write in Python, so both are large. One backend read is sealed as one
# transport write of 32 full records; the other way, one receive_some(BULK_RECEIVE) takes all the
# records a transport read completed.
BACKEND_READ_SIZE = 32 * MAX_PLAINTEXT
CONNECT_TIMEOUT = 10.0
LINGER = 1.0  # after our close_notify, how long we keep reading so the peer sees our answer, not a reset
MAX_HEAD = 16384  # request line + header fields
MAX_BODY = 1 << 20  # request bodies are read and discarded; bigger ones get 413
_ECHOED_REQUEST_LINE = 1024  # keeps the 200 answer inside one record

BackendKind = Literal["echo", "http", "tcp", "unix"]
_USAGE = "expected echo, http, tcp://HOST:PORT (IPv6: tcp://[ADDR]:PORT) or unix:PATH"


@dataclass(frozen=True, slots=True)
class Backend:
    kind: BackendKind
    host: str | None = None
    port: int | None = None
    path: str | None = None
    proxy_protocol: bool = False  # send a PROXY v2 header first (tcp and unix only)

    def __str__(self) -> str:
        if self.kind == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        if self.kind == "unix":
            return f"unix:{self.path}"
        return self.kind


def parse_backend(spec: str, *, proxy_protocol: bool = False) -> Backend:
    """Parse a ``--backend`` value; any problem is a ConfigError of one line."""
    text = spec.strip()
    backend = _parse(text)
    if proxy_protocol:
        if backend.kind not in ("tcp", "unix"):
            raise ConfigError(f"backend {spec!r}: the PROXY protocol only applies to tcp:// and unix: backends")
        backend = Backend(backend.kind, backend.host, backend.port, backend.path, proxy_protocol=True)
    return backend


def _parse(text: str) -> Backend:
    if text in ("echo", "http"):
        return Backend(text)  # type: ignore[arg-type]  # narrowed by the test above
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path or "\x00" in path:
            raise ConfigError(f"backend {text!r}: unix: needs a socket path, e.g. unix:/run/app.sock")
        return Backend("unix", path=path)
    if text.startswith("tcp://"):
        try:
            parts = urllib.parse.urlsplit(text)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise ConfigError(f"backend {text!r}: {exc} ({_USAGE})") from None
        if not host or port is None or port == 0:
            raise ConfigError(f"backend {text!r}: tcp:// needs HOST:PORT with a port from 1 to 65535")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"backend {text!r}: tcp:// takes HOST:PORT only")
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ConfigError(f"backend {text!r}: {host!r} is not an IPv6 address") from None
        return Backend("tcp", host=host, port=port)
    raise ConfigError(f"backend {text!r}: {_USAGE}")


async def serve(
    stream: RecordStream, backend: Backend, *, peer: str, log: Logger, local: str | None = None
) -> None:
    """Run ``backend`` on ``stream`` until the application is done (see the module docstring).

    ``peer`` is the client address as ``HOST:PORT`` or ``[V6ADDR]:PORT``; ``local`` the address it
    connected to (taken from the transport's socket when not given). Both only feed the PROXY header.
    """
    if backend.kind == "echo":
        await _echo(stream)
    elif backend.kind == "http":
        await _http(stream, log)
    else:
        await _proxy(stream, backend, peer=peer, local=local, log=log)


# -- echo ---------------------------------------------------------------------------------------


async def _echo(stream: RecordStream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)
    await stream.send_eof()


async def _linger(stream: RecordStream) -> None:
    """After our close_notify, read and drop input for a moment.

    Closing a socket with unread input makes the kernel send a reset, which can destroy our last
    answer (a 400 or 431) before the client has read it.
    """
    with trio.move_on_after(LINGER):
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass  # the client left without close_notify after our answer: nothing lost


# -- http ---------------------------------------------------------------------------------------

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_METHOD_START = re.compile(_TOKEN + rb"{1,32}(?: |\Z)")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class _HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    request_line: str
    keep_alive: bool
    http10: bool
    content_length: int
    expect_continue: bool


def _looks_like_http(buf: bytes | bytearray) -> bool:
    """Can ``buf`` still become a request line? Lets garbage get its 400 without waiting for CRLFCRLF."""
    if not buf:
        return True
    if not _METHOD_START.match(buf):
        return False
    eol = buf.find(b"\r\n")
    return eol < 0 or _REQUEST_LINE.fullmatch(buf, 0, eol) is not None


def parse_request_head(head: bytes) -> _Request:
    """Parse a request head (without the final CRLFCRLF); raises _HttpError with the status to send."""
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise _HttpError(400, "malformed request line")
    method, major, minor = m.group(1).decode(), int(m.group(3)), int(m.group(4))
    if major != 1:
        raise _HttpError(505, "only HTTP/1.x is served here")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        f = _FIELD_LINE.fullmatch(line)
        if f is None:  # also refuses obsolete line folding and bare CR/LF
            raise _HttpError(400, "malformed header field")
        fields.setdefault(f.group(1).decode().lower(), []).append(f.group(2).decode("latin-1"))
    if "transfer-encoding" in fields:
        raise _HttpError(501, "transfer codings are not supported; send Content-Length")
    lengths = {v.strip() for value in fields.get("content-length", []) for v in value.split(",")}
    content_length = 0
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit() or not next(iter(lengths)).isascii():
            raise _HttpError(400, "invalid Content-Length")
        content_length = int(next(iter(lengths)))
        if content_length > MAX_BODY:
            raise _HttpError(413, f"request bodies are limited to {MAX_BODY} bytes")
    tokens = {t.strip().lower() for value in fields.get("connection", []) for t in value.split(",")}
    http10 = minor == 0
    keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
    expect = any(v.strip().lower() == "100-continue" for v in fields.get("expect", []))
    return _Request(method, m.group(0).decode(), keep_alive, http10, content_length, expect)


def _response(status: int, body: str, *, keep_alive: bool, http10: bool = False, head_only: bool = False) -> bytes:
    payload = body.encode()
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Server: tls-privsep",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
    ]
    if not keep_alive:
        headers.append("Connection: close")
    elif http10:
        headers.append("Connection: keep-alive")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head_only else payload)


def _hello(stream: RecordStream, request: _Request) -> str:
    suite = stream.suite_name
    line = request.request_line
    if len(line) > _ECHOED_REQUEST_LINE:
        line = line[:_ECHOED_REQUEST_LINE] + "..."
    return (
        "Hello from tls-privsep (appd http backend): handshake in secured, records in appd.\n"
        f"tls: {stream.tls_version} {suite}{' (resumed)' if stream.psk_resumed else ''}\n"
        f"alpn: {stream.alpn or '-'}\n"
        f"sni: {stream.sni or '-'}\n"
        f"request: {line}\n"
    )


async def _http(stream: RecordStream, log: Logger) -> None:
    buf = bytearray()
    while True:
        while buf.startswith(b"\r\n"):  # RFC 9112 §2.2: tolerate empty lines before a request
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD:
                return await _http_fail(stream, log, _HttpError(431, "request head too large"))
            if not _looks_like_http(buf):
                return await _http_fail(stream, log, _HttpError(400, "not an HTTP/1.x request"))
            searched = max(0, len(buf) - 3)
            data = await stream.receive_some()
            if not data:  # close_notify between requests (or mid-request): we are done too
                await stream.send_eof()
                return
            buf += data
            while buf.startswith(b"\r\n"):
                del buf[:2]
                searched = 0
            end = buf.find(b"\r\n\r\n", searched)
        if end + 4 > MAX_HEAD:
            return await _http_fail(stream, log, _HttpError(431, "request head too large"))
        head = bytes(buf[:end])
        del buf[: end + 4]
        try:
            request = parse_request_head(head)
        except _HttpError as exc:
            return await _http_fail(stream, log, exc)
        # Read and drop the body, so that the next request starts where it should.
        remaining = request.content_length
        if remaining and request.expect_continue and len(buf) < remaining:
            await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        dropped = min(remaining, len(buf))
        del buf[:dropped]
        remaining -= dropped
        while remaining:
            data = await stream.receive_some()
            if not data:
                await stream.send_eof()
                return
            if len(data) > remaining:
                buf += data[remaining:]
            remaining -= min(remaining, len(data))
        body = _hello(stream, request)
        await stream.send_all(
            _response(200, body, keep_alive=request.keep_alive, http10=request.http10,
                      head_only=request.method == "HEAD")
        )
        log.debug("http request", request=request.request_line[:200], keep_alive=request.keep_alive)
        if not request.keep_alive:
            await stream.send_eof()
            await _linger(stream)
            return


async def _http_fail(stream: RecordStream, log: Logger, exc: _HttpError) -> None:
    log.info("http request refused", status=exc.status, reason=exc.detail)
    await stream.send_all(_response(exc.status, exc.detail + "\n", keep_alive=False))
    await stream.send_eof()
    await _linger(stream)


# -- proxy --------------------------------------------------------------------------------------

_PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_PP2_TYPE_ALPN = 0x01
_PP2_TYPE_AUTHORITY = 0x02
_PP2_TYPE_SSL = 0x20
_PP2_SUBTYPE_SSL_VERSION = 0x21
_PP2_SUBTYPE_SSL_CIPHER = 0x23
_PP2_CLIENT_SSL = 0x01
_PP2_CLIENT_CERT_CONN = 0x02
_PP2_CLIENT_CERT_SESS = 0x04


def _split_address(text: str | None) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """``1.2.3.4:5`` or ``[::1]:5`` -> (address, port); None when it is not an IP endpoint."""
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]), int(port)
    except ValueError:
        return None


def _tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind,)) + len(value).to_bytes(2, "big") + value


def proxy_v2_header(
    source: str | None,
    destination: str | None,
    *,
    alpn: str | None = None,
    sni: str | None = None,
    suite: int | None = None,
    client_cert: bool = False,
    resumed: bool = False,
    version: int = TLS13,
) -> bytes:
    """A PROXY protocol v2 header (haproxy's proxy-protocol.txt §2.2) announcing the TLS client.

    Addresses that are not IP endpoints give a LOCAL header (the backend uses the real endpoints).
    TLVs carry ALPN, SNI (as AUTHORITY) and a PP2_TYPE_SSL block, like haproxy's ``send-proxy-v2-ssl``.
    """
    src, dst = _split_address(source), _split_address(destination)
    if src is not None and dst is not None:
        (saddr, sport), (daddr, dport) = src, dst
        if saddr.version == 4 and daddr.version == 4:
            family = 0x11  # TCP over IPv4
        else:
            family = 0x21  # TCP over IPv6; an IPv4 end is written as ::ffff:a.b.c.d
            saddr = saddr if saddr.version == 6 else ipaddress.IPv6Address(f"::ffff:{saddr}")
            daddr = daddr if daddr.version == 6 else ipaddress.IPv6Address(f"::ffff:{daddr}")
        command = 0x21  # version 2, PROXY
        addresses = saddr.packed + daddr.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    else:
        command, family, addresses = 0x20, 0x00, b""  # version 2, LOCAL, AF_UNSPEC
    tlvs = b""
    if alpn:
        tlvs += _tlv(_PP2_TYPE_ALPN, alpn.encode())
    if sni:
        tlvs += _tlv(_PP2_TYPE_AUTHORITY, sni.encode())
    client = _PP2_CLIENT_SSL
    if client_cert:
        client |= _PP2_CLIENT_CERT_SESS if resumed else _PP2_CLIENT_CERT_CONN
    ssl_sub = _tlv(_PP2_SUBTYPE_SSL_VERSION, version_name(version).encode())
    name = None if suite is None else suite_name(version, suite)
    if name is not None and not name.startswith("0x"):  # haproxy sends OpenSSL's cipher name, so a known one only
        ssl_sub += _tlv(_PP2_SUBTYPE_SSL_CIPHER, name.encode())
    # verify = 0 only when a client certificate was presented and verified (secured refuses the rest).
    tlvs += _tlv(_PP2_TYPE_SSL, bytes((client,)) + (0 if client_cert else 1).to_bytes(4, "big") + ssl_sub)
    body = addresses + tlvs
    return _PP2_SIGNATURE + bytes((command, family)) + len(body).to_bytes(2, "big") + body


def _local_address(stream: RecordStream) -> str | None:
    transport = stream.transport
    if not isinstance(transport, trio.SocketStream):
        return None
    try:
        addr = transport.socket.getsockname()
    except OSError:
        return None
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None


async def _connect(backend: Backend) -> trio.SocketStream:
    with trio.fail_after(CONNECT_TIMEOUT):
        if backend.kind == "tcp":
            assert backend.host is not None and backend.port is not None
            return await trio.open_tcp_stream(backend.host, backend.port)
        assert backend.path is not None
        return await trio.open_unix_socket(backend.path)


class _BackendIdle(Exception):
    pass


async def _receive_backend(conn: trio.SocketStream, stream: RecordStream) -> bytes:
    """Read the backend under the stream's idle clock (activity either way on the TLS side counts)."""
    if stream.idle_timeout is None:
        return await conn.receive_some(BACKEND_READ_SIZE)
    while True:
        with trio.move_on_at(stream.last_activity + stream.idle_timeout):
            return await conn.receive_some(BACKEND_READ_SIZE)
        if trio.current_time() >= stream.last_activity + stream.idle_timeout:
            raise _BackendIdle


async def _proxy(stream: RecordStream, backend: Backend, *, peer: str, local: str | None, log: Logger) -> None:
    try:
        conn = await _connect(backend)
    except (OSError, trio.TooSlowError) as exc:
        reason = "timed out" if isinstance(exc, trio.TooSlowError) else (exc.strerror or str(exc))
        log.warning("backend unavailable", backend=str(backend), error=reason)
        await stream.send_eof()
        await _linger(stream)
        return
    async with conn:
        client_error: trio.BrokenResourceError | None = None
        backend_error: str | None = None
        counts = {"to_backend": 0, "from_backend": 0}

        async def client_to_backend(cancel: trio.CancelScope) -> None:
            nonlocal client_error, backend_error
            while True:
                try:
                    data = await stream.receive_some(BULK_RECEIVE)
                except trio.BrokenResourceError as exc:
                    client_error = exc
                    cancel.cancel()
                    return
                try:
                    if not data:
                        await conn.send_eof()  # the client's close_notify: shut down the backend's input
                        if stream.eof_sent:  # TLS 1.2: answered with ours, so nothing more goes to the client
                            cancel.cancel()
                        return
                    await conn.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    backend_error = f"write: {exc}"
                    cancel.cancel()
                    return
                counts["to_backend"] += len(data)

        async def backend_to_client(cancel: trio.CancelScope) -> None:
            nonlocal client_error, backend_error
            while True:
                try:
                    data = await _receive_backend(conn, stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    backend_error = f"read: {exc}"
                    cancel.cancel()
                    return
                except _BackendIdle:
                    log.info("proxy idle timeout", seconds=stream.idle_timeout)
                    data = b""
                try:
                    if not data:
                        await stream.send_eof()  # the backend's EOF: close_notify, keep relaying upwards
                        return
                    await stream.send_all(data)
                except trio.BrokenResourceError as exc:
                    client_error = exc
                    cancel.cancel()
                    return
                counts["from_backend"] += len(data)

        if backend.proxy_protocol:
            header = proxy_v2_header(
                peer, local or _local_address(stream), alpn=stream.alpn, sni=stream.sni, suite=stream.suite,
                client_cert=bool(stream.peer_certs), resumed=stream.psk_resumed, version=stream.version,
            )
            try:
                await conn.send_all(header)
            except (trio.BrokenResourceError, OSError) as exc:
                backend_error = f"write: {exc}"
        if backend_error is None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_to_backend, nursery.cancel_scope)
                nursery.start_soon(backend_to_client, nursery.cancel_scope)
        log.debug("proxy done", backend=str(backend), **counts)
        if client_error is not None:
            raise client_error
        if backend_error is not None:
            if stream.eof_sent:  # e.g. the backend closed both ways while the client still wrote
                log.info("backend connection ended", backend=str(backend), error=backend_error)
            else:
                log.warning("backend connection failed", backend=str(backend), error=backend_error)
                # Not close_notify: the client must not mistake a cut-off answer for a complete one.
                await stream.send_fatal_alert()

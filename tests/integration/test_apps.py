"""The http backend under curl, over a real loopback socket.

The handshake runs in-process (ServerHandshake driven over the socket, as secured would through
appd's relay); then the exported state goes into a RecordStream and :func:`appd.apps.serve`, exactly
the hand-over appd/session.py makes.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import structlog
import trio

from tests.inmemory import server_config
from tls_privsep.appd.apps import Backend, serve
from tls_privsep.appd.stream import RecordStream
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import Alert

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]
LOG = structlog.get_logger("test")


async def _handle(tcp: trio.SocketStream, config: Any, backend: Backend) -> None:
    async with tcp:
        hs = ServerHandshake(config)
        while not hs.complete:
            data = await tcp.receive_some(65536)
            if not data:
                return
            try:
                hs.receive_data(data)
            except Alert:
                await tcp.send_all(hs.data_to_send())
                return
            if out := hs.data_to_send():
                await tcp.send_all(out)
        stream = RecordStream(tcp, hs.export(), initial=hs.trailing, log=LOG)
        try:
            await serve(stream, backend, peer="client", log=LOG)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


async def _curl(config: Any, *args: str, urls: int = 1) -> tuple[str, str]:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, lambda s: _handle(s, config, Backend("http")), listeners)
        url = f"https://127.0.0.1:{port}/hello?x=1"
        result = await trio.run_process(
            ["curl", "-sS", "-k", "--max-time", "5", *args, *([url] * urls)],
            capture_stdout=True, capture_stderr=True, check=False,
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode(), result.stderr.decode()


@pytest.mark.parametrize("alpn", [(), ("http/1.1",)])
def test_curl_default(alpn: tuple[str, ...]) -> None:
    # curl offers h2 and http/1.1 by ALPN; without a server choice it speaks HTTP/1.1.
    config = server_config(alpn=alpn) if alpn else server_config()
    out, _ = trio.run(_curl, config)
    assert "Hello from tls-privsep" in out
    assert "request: GET /hello?x=1 HTTP/1.1" in out
    assert f"alpn: {alpn[0] if alpn else '-'}" in out


def test_curl_http11_keep_alive_reuses_the_connection() -> None:
    out, _ = trio.run(lambda: _curl(server_config(), "--http1.1", "-w", "connects=%{num_connects}\n", urls=2))
    assert out.count("Hello from tls-privsep") == 2
    assert "connects=1" in out and "connects=0" in out  # the second transfer rode the first connection

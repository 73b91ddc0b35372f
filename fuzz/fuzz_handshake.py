"""Fuzz target `handshake`: a fresh secured.handshake.ServerHandshake fed arbitrary client bytes.

Input: ``[config][split:2][bytes]``. ``config`` picks one of the server configurations in
fuzz/common.py (real test certificates from tests/certs.py; tickets; ALPN; HelloRetryRequest with a
cookie; optional and required client certificates). ``bytes`` is the client's side of the
connection, fed in two pieces cut at ``split``: the first flight (ClientHello records, a second
ClientHello after a retry, a ticket offer) and whatever follows.

The server is reproducible (fixed randomness, ephemeral keys and clock; see fuzz/common.py), so a
real client's bytes recorded by fuzz/seeds.py replay here: the seeds reach the encrypted flight.

Allowed: a PeerAlert, or a LocalAlert that is not internal_error and whose alert record is the last
thing queued for the wire. A handshake that completes must export its state exactly once.

Run: ``python -m fuzz.fuzz_handshake CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.base import Finding, check_alert_queued, record_types
    from fuzz.common import CONFIG_NAMES, new_server
    from tls_privsep.secured.handshake import ServerHandshake, State
    from tls_privsep.shared.errors import Alert, InternalError, LocalAlert


def drive(hs: ServerHandshake, chunks: list[bytes]) -> None:
    """Feed the chunks; check what an error or a completion leaves behind."""
    try:
        for chunk in chunks:
            hs.receive_data(chunk)
            record_types(hs.data_to_send())
    except LocalAlert as exc:
        check_alert_queued(exc, hs.data_to_send())
        if hs.state is not State.CLOSED:
            raise Finding("engine still open after an alert") from exc
        return
    except Alert:
        if hs.state is not State.CLOSED:
            raise Finding("engine still open after the peer's alert") from None
        return
    if hs.complete:
        state = hs.export()
        if len(state.read_secret) != len(state.write_secret):
            raise Finding("exported secrets of different lengths")
        try:
            hs.export()
        except InternalError:
            pass
        else:
            raise Finding("state exported twice")


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    hs = new_server(data[0] % len(CONFIG_NAMES))
    rest = data[3:]
    split = int.from_bytes(data[1:3], "big") % (len(rest) + 1)
    drive(hs, [rest[:split], rest[split:]])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

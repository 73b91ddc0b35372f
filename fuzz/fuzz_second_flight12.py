"""Fuzz target `second_flight12`: the client's TLS 1.2 second flight, after a valid TLS 1.2 ClientHello.

Input: ``[mode][ops]``. The mode byte picks a server configuration (its value modulo 4, as in
fuzz/common.py's CONFIG_NAMES) and, with bit 2, an abbreviated handshake: the ClientHello then carries a
ticket the harness got from a full handshake of its own, and the server has already sent its
ChangeCipherSpec and Finished. The harness replays the fixed ClientHello to a fresh reproducible
server, then turns the op stream (fuzz/common.py's OP12_*) into client records: handshake messages,
alerts, application data and raw bytes, in plaintext until the harness's change_cipher_spec and sealed
under the client write key after it; and on request the ClientKeyExchange of the fixed client key (with
any point in its place), a change_cipher_spec (with any content), a correct Finished, the test client
certificate, or a CertificateVerify over the messages so far. So the fuzzer works on ClientKeyExchange
parsing and the key exchange, the change_cipher_spec and its place, Finished, client authentication,
the record protection in between, and the order of all of them.

When the handshake completes, its exported state is imported into a new RecordLayer, as appd does,
and the bytes that followed the Finished are fed to it.

Allowed: PeerAlert, and LocalAlert other than internal_error with its alert record queued last.

Run: ``python -m fuzz.fuzz_second_flight12 CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.common import CONFIG_NAMES, SecondFlight12, first_flight12, run_second_flight

RESUMED = 0x04


def test_one_input(data: bytes) -> None:
    if not data:
        return
    index = data[0] % len(CONFIG_NAMES)
    ff = first_flight12(index, bool(data[0] & RESUMED))
    run_second_flight(index, ff.client_hello, ff.server_flight, SecondFlight12(ff), data[1:])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

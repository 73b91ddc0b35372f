"""Fuzz target `second_flight`: the client's second flight, after a valid ClientHello.

Input: ``[config][ops]``. The harness replays a fixed, valid ClientHello to a fresh reproducible
server (fuzz/common.py), then turns the op stream into client records: handshake messages sealed
under the client handshake key (and hashed into the client's view of the transcript), alerts,
application data, raw bytes, and on request a correct Finished, a Certificate with the test client
chain or a CertificateVerify over the transcript so far. So the fuzzer works on plaintext messages
behind the AEAD: Certificate / CertificateVerify / Finished parsing, their order, client
authentication, records after the Finished.

When the handshake completes, its exported state is imported into a new RecordLayer, as appd does,
and the bytes that followed the Finished are fed to it.

Allowed: PeerAlert, and LocalAlert other than internal_error with its alert record queued last.

Run: ``python -m fuzz.fuzz_second_flight CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.common import CONFIG_NAMES, SecondFlight, first_flight, run_second_flight


def test_one_input(data: bytes) -> None:
    if not data:
        return
    index = data[0] % len(CONFIG_NAMES)
    ff = first_flight(index)
    run_second_flight(index, ff.client_hello, ff.server_flight, SecondFlight(ff), data[1:])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

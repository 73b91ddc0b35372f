"""Fuzz target `record`: shared.record.RecordLayer fed arbitrary bytes.

Input: ``[mode][split:2][rest]``. Modes 0-4 feed ``rest`` as raw bytes to a layer in one of the states
its callers put it in (plaintext handshake, handshake keys, application keys, skipping rejected
early data, skipping after a HelloRetryRequest). Modes 5 and 6 read ``rest`` as an op stream (see
fuzz/common.py) of records to *seal* under the layer's read key first, so the fuzzer reaches what
comes after deprotection: inner types, padding, KeyUpdate, alerts, fragmented handshake messages.

Every input is fed twice, whole and cut at ``split``; both runs must give the same events, the same
error and the same output. Only alerts (LocalAlert, PeerAlert) may escape, never internal_error.

Run: ``python -m fuzz.fuzz_record CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.base import Finding, check_local_alert, ops
    from tls_privsep.shared.errors import Alert, LocalAlert
    from tls_privsep.shared.keyschedule import SUITES
    from tls_privsep.shared.record import Event, Phase, Protection, RecordLayer

SUITE_IDS = sorted(SUITES)
MODES = ("plaintext", "handshake", "application", "skip_early", "skip_plain", "sealed_app", "sealed_hs")
KEY_UPDATE = (b"\x18\x00\x00\x01\x00", b"\x18\x00\x00\x01\x01")


def secret(suite: int, seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(SUITES[suite].hash_len))


def make_layer(mode: str, suite: int) -> RecordLayer:
    layer = RecordLayer(max_handshake_message=8192)
    if mode != "plaintext":
        layer.set_read_key(suite, secret(suite, 1))
        layer.set_write_key(suite, secret(suite, 2))
    if mode in ("application", "sealed_app"):
        layer.enter(Phase.APPLICATION)
    elif mode in ("plaintext", "handshake", "skip_early", "sealed_hs"):
        layer.enter(Phase.HANDSHAKE_CCS)
    if mode == "skip_early":
        layer.skip_early_data(4000)
    elif mode == "skip_plain":
        layer.skip_plaintext_app_data(4000)
    return layer


def seal_ops(data: bytes, suite: int, application: bool) -> bytes:
    """Records sealed under the read key: op = inner type (low 5 bits) and padding (high 3 bits, 32-byte units)."""
    prot = Protection(suite, secret(suite, 1))
    out = []
    for code, payload in ops(data):
        body = payload[: 2**14 - 224]
        out.append(prot.seal(code & 0x1F, body, (code >> 5) * 32))
        if application and code & 0x1F == 22 and body in KEY_UPDATE:
            prot = prot.next_generation()  # the layer moves on after the peer's KeyUpdate; so does the peer
    return b"".join(out)


def run(mode: str, suite: int, chunks: list[bytes]) -> tuple[list[Event], str | None, bytes]:
    """Feed chunks, draining events after each; return (events, error, bytes the layer queued)."""
    layer = make_layer(mode, suite)
    events: list[Event] = []
    error = None
    try:
        for chunk in chunks:
            layer.receive_data(chunk)
            while (event := layer.next_event()) is not None:
                events.append(event)
                # Play the engine: after the first handshake message in plaintext, switch to a key.
                if layer.read is None and not layer.has_pending_handshake():
                    layer.set_read_key(0x1301, secret(0x1301, 1))
    except LocalAlert as exc:
        check_local_alert(exc)
        error = f"{type(exc).__name__}: {exc.reason}"
    except Alert as exc:
        error = f"{type(exc).__name__}: {exc}"
    return events, error, layer.data_to_send()


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    mode = MODES[data[0] % len(MODES)]
    suite = SUITE_IDS[(data[0] // len(MODES)) % len(SUITE_IDS)]
    split = int.from_bytes(data[1:3], "big")
    rest = data[3:]
    if mode.startswith("sealed"):
        rest = seal_ops(rest, suite, mode == "sealed_app")
    split %= len(rest) + 1
    whole = run(mode, suite, [rest])
    cut = run(mode, suite, [rest[:split], rest[split:]])
    if whole != cut:
        raise Finding(f"feeding in two pieces changed the outcome: {whole[1]!r} vs {cut[1]!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

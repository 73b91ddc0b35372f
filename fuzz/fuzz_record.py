"""Fuzz target `record`: shared.record.RecordLayer fed arbitrary bytes.

Input: ``[mode][split:2][rest]``; the mode byte picks a mode and a suite of the mode's version.
TLS 1.3: modes 0-4 feed ``rest`` as raw bytes to a layer in one of the states its callers put it in
(plaintext handshake, handshake keys, application keys, skipping rejected early data, skipping after
a HelloRetryRequest). Modes 5 and 6 read ``rest`` as an op stream (see fuzz/base.py) of records to
*seal* under the layer's read key first, so the fuzzer reaches what comes after deprotection: inner
types, padding, KeyUpdate, alerts, fragmented handshake messages.
TLS 1.2: modes 7 and 8 feed raw bytes to a layer in the handshake (plaintext until a
change_cipher_spec, after which the harness sets the read protection as the engine does) and to an
imported one. Modes 9 and 10 seal an op stream as TLS 1.2 records (op = content type): under the
imported layer's read protection, and in the handshake as plaintext records until an op with the
high bit, which sends the change_cipher_spec and seals everything after it.

Every input is fed twice, whole and cut at ``split``; both runs must give the same events, the same
error and the same output. Only alerts (LocalAlert, PeerAlert) may escape, never internal_error.

Run: ``python -m fuzz.fuzz_record CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.base import Finding, check_local_alert, key_material12, ops
    from tls_privsep.shared.errors import Alert, LocalAlert
    from tls_privsep.shared.keyschedule import SUITES
    from tls_privsep.shared.record import ChangeCipherSpec, Event, Phase, Protection, RecordLayer, Tls12Protection
    from tls_privsep.shared.state import TLS12, TrafficState
    from tls_privsep.shared.tls12 import SUITES12

SUITE_IDS = sorted(SUITES)
SUITE12_IDS = sorted(SUITES12)
MODES = ("plaintext", "handshake", "application", "skip_early", "skip_plain", "sealed_app", "sealed_hs",
         "tls12_handshake", "tls12_application", "sealed12_app", "sealed12_hs")
KEY_UPDATE = (b"\x18\x00\x00\x01\x00", b"\x18\x00\x00\x01\x01")
CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"


def secret(suite: int, seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(SUITES[suite].hash_len))


def key_material(suite: int, seed: int) -> bytes:
    return key_material12(SUITES12[suite].key_material_len, seed)


def make_layer12(mode: str, suite: int) -> RecordLayer:
    """A TLS 1.2 layer: in the handshake as secured's engine drives it, or imported at sequence number 1."""
    if mode in ("tls12_handshake", "sealed12_hs"):
        layer = RecordLayer(max_handshake_message=8192)
        layer.use_tls12()
        return layer
    state = TrafficState(suite, bytearray(key_material(suite, 1)), bytearray(key_material(suite, 2)),
                         read_seq=1, write_seq=1, records_protected=1, version=TLS12)
    return RecordLayer.from_traffic_state(state)


def make_layer(mode: str, suite: int) -> RecordLayer:
    if "12" in mode:
        return make_layer12(mode, suite)
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


def seal_ops12(data: bytes, suite: int, handshake: bool) -> bytes:
    """TLS 1.2 records: op = content type; in the handshake plaintext until an op with the high bit,
    which sends the change_cipher_spec (its payload is dropped) and protects what follows."""
    prot: Tls12Protection | None = None if handshake else Tls12Protection(suite, key_material(suite, 1), 1)
    out = []
    for code, payload in ops(data):
        body = payload[: 2**14]
        if handshake and prot is None and code & 0x80:
            out.append(CCS_RECORD)
            prot = Tls12Protection(suite, key_material(suite, 1))
        elif prot is None:
            out.append(bytes([code & 0x1F, 3, 3]) + len(body).to_bytes(2, "big") + body)
        else:
            out.append(prot.seal(code & 0x1F, body))
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
                # Play the engine: TLS 1.2 reads under the key block's key after the change_cipher_spec;
                # TLS 1.3 switches to a key after the first handshake message in plaintext.
                if layer.read is not None:
                    continue
                if isinstance(event, ChangeCipherSpec):
                    layer.set_read_protection(Tls12Protection(suite, key_material(suite, 1)))
                elif layer.version != TLS12 and not layer.has_pending_handshake():
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
    suites = SUITE12_IDS if "12" in mode else SUITE_IDS
    suite = suites[(data[0] // len(MODES)) % len(suites)]
    split = int.from_bytes(data[1:3], "big")
    rest = data[3:]
    if mode.startswith("sealed12"):
        rest = seal_ops12(rest, suite, mode == "sealed12_hs")
    elif mode.startswith("sealed"):
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

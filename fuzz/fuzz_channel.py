"""Fuzz target `channel`: shared.channel.decode and the order checker behind it.

Input: ``[mode][bytes]``.
- mode 0: ``bytes`` is one datagram for ``decode``. A message that decodes must encode back to the
  same bytes (the encoding is deterministic, so there is exactly one accepted form).
- mode 1 / 2: ``bytes`` is a list of datagrams (``[len:2][datagram]`` ...) that appd (1) or
  secured (2) receives after both hellos; each is decoded and passed through ChannelState.
- mode 3: ``bytes`` is the peer's hello for HelloExchange.finish (key agreement).

Only ChannelError may escape.

Run: ``python -m fuzz.fuzz_channel CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tls_privsep"]):
    from fuzz.base import Finding
    from tls_privsep.shared import channel as C
    from tls_privsep.shared.errors import ChannelError

PK = bytes(range(32))


def datagrams(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def ready_state(role: C.Role) -> C.ChannelState:
    state = C.ChannelState(role)
    state.send(C.Hello(versions=[C.CHANNEL_VERSION], public_key=PK, role=role))
    state.receive(C.Hello(versions=[C.CHANNEL_VERSION], public_key=PK, role=state.peer_role))
    first = b"\x16\x03\x01\x00\x00"
    if role == "secured":  # appd opened 1 (answered: appd's turn) and 2 (secured's turn) before the fuzzed part
        state.receive(C.Open(conn=1, peer="192.0.2.1:1", data=first))
        state.send(C.Hs(conn=1, data=b"", consumed=len(first)))
        state.receive(C.Open(conn=2, peer="192.0.2.1:2", data=first))
    else:
        state.send(C.Open(conn=1, peer="192.0.2.1:1", data=first))
    return state


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    try:
        if mode == 0:
            msg = C.decode(rest)
            if msg.encode() != rest:
                raise Finding(f"{msg.TYPE} decoded but does not encode back to its datagram")
        elif mode in (1, 2):
            state = ready_state("appd" if mode == 1 else "secured")
            for datagram in datagrams(rest):
                state.receive(C.decode(datagram))
        else:
            C.HelloExchange("appd").finish(rest)
    except ChannelError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

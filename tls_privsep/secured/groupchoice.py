"""Which key-exchange group a handshake uses: the post-quantum policy over the configured groups.

RFC 8446 §4.2.8 leaves the choice to the server: a group the client sent a share for ends the question at
once, a group it only lists costs a HelloRetryRequest (one more round trip, and for a hybrid 1.2 KB more
from the client), a client with no group in common gets handshake_failure (§4.1.1). The policy decides
where the hybrids of draft-ietf-tls-ecdhe-mlkem stand in that order:

- ``prefer`` (the default): a hybrid share the client sent wins over every classical one; otherwise the
  best classical share it sent. A HelloRetryRequest only when no share it sent is usable, and then for the
  best group it lists, hybrids first. A Chrome-like hello (X25519MLKEM768 and x25519 shares) gets
  X25519MLKEM768 at once; an OpenSSL 3.0-like one (an x25519 share only) gets x25519 at once, no retry.
- ``require``: only the hybrids count. A client that lists one without sending its share is asked for it
  (HelloRetryRequest); one that lists none gets handshake_failure. Chrome-like: X25519MLKEM768 at once;
  OpenSSL 3.0-like: handshake_failure.
- ``off``: the hybrids are never chosen, whatever the groups list says. A share the client sent for one is
  still checked for length, as every share of a group we implement is (handshake.py ``_check_key_shares``:
  a wrong one is illegal_parameter), but never decoded or used. Chrome-like: x25519 at once; OpenSSL
  3.0-like: x25519 at once.

Within each kind the configured ``groups`` order is the server's preference. Pure: no I/O, no keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tls_privsep.secured.groups import is_hybrid

PqPolicy = Literal["prefer", "require", "off"]
PQ_POLICIES: tuple[PqPolicy, ...] = ("prefer", "require", "off")


@dataclass(frozen=True, slots=True)
class Choice:
    """``group`` with the client's ``share`` for it: use it. ``group`` without a share: ask for it (HRR).
    Neither: no group in common."""

    group: int | None
    share: bytes | None


def ranking(groups: Sequence[int], policy: PqPolicy) -> list[int]:
    """The groups this policy lets a handshake use, best first."""
    hybrids = [g for g in groups if is_hybrid(g)]
    classical = [g for g in groups if not is_hybrid(g)]
    if policy == "require":
        return hybrids
    if policy == "off":
        return classical
    return hybrids + classical


def choose(groups: Sequence[int], policy: PqPolicy, supported: Sequence[int] | None,
           shares: Sequence[tuple[int, bytes]] | None) -> Choice:
    """The group for a ClientHello that lists ``supported`` and sent ``shares`` (both as the client sent them)."""
    order = ranking(groups, policy)
    sent = dict(shares or ())
    for group in order:
        if group in sent:
            return Choice(group, sent[group])
    listed = set(supported or ())
    for group in order:
        if group in listed:
            return Choice(group, None)
    return Choice(None, None)

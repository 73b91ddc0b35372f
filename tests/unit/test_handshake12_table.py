"""TLS 1.2's transition table (handshake12.py) is its whole state machine, and the engine keeps to it.

The same three views as TLS 1.3's (test_handshake_table.py): the table is connected, the handlers'
source returns exactly the states their rows list and nothing else moves the state, and real
handshakes with an OpenSSL client take every listed transition and no other.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import ssl
import textwrap
from collections.abc import Callable

import pytest

from tests.inmemory import Pair, client_context, client_verifier, server_config
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.secured.handshake12 import CHANGE_CIPHER_SPEC, TRANSITIONS, State12, Tls12Handshake
from tls_privsep.shared.errors import InternalError
from tls_privsep.shared.record import HandshakeMessage

FIRST = {State12.EXPECT_CERTIFICATE, State12.EXPECT_CLIENT_KEY_EXCHANGE, State12.EXPECT_CCS_RESUMED}  # after start()

_CONFIG = server_config()
_MTLS = server_config(client_auth="required", client_verifier=client_verifier())
_OPTIONAL = server_config(client_auth="optional", client_verifier=client_verifier())


def _resumed() -> Pair:
    ctx = client_context(tls12=True)
    first = Pair(ServerHandshake(_CONFIG), ctx)
    first.handshake()
    return Pair(ServerHandshake(_CONFIG), ctx, session=first.client.session)


Scenario = Callable[[], Pair]
SCENARIOS: dict[str, Scenario] = {
    "full": lambda: Pair(ServerHandshake(_CONFIG), client_context(tls12=True)),
    "client certificate": lambda: Pair(ServerHandshake(_MTLS), client_context(tls12=True, client_cert="ecdsa")),
    "optional client certificate, none sent": lambda: Pair(ServerHandshake(_OPTIONAL), client_context(tls12=True)),
    "resumed": _resumed,
}
REACHES = {key: "resumed" if row.handler.__name__ in ("_on_finished_resumed",) or key[0] is State12.EXPECT_CCS_RESUMED
           else "client certificate" for key, row in TRANSITIONS.items()}


def _declared() -> set[tuple[State12, int, State12]]:
    return {(state, msg, after) for (state, msg), row in TRANSITIONS.items() for after in row.next_states}


def test_every_state_is_reachable_from_the_first_flight_and_only_complete_ends_it() -> None:
    seen, todo = set(FIRST), list(FIRST)
    while todo:
        state = todo.pop()
        for (source, _msg), row in TRANSITIONS.items():
            if source is state:
                todo += [s for s in row.next_states if s not in seen]
                seen |= row.next_states
    assert seen == set(State12)
    assert {state for state, _msg in TRANSITIONS} == set(State12) - {State12.COMPLETE}


def _returned_states(handler: Callable[..., object]) -> set[State12]:
    found = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(handler)))):
        if isinstance(node, ast.Return):
            exprs = [node.value.body, node.value.orelse] if isinstance(node.value, ast.IfExp) else [node.value]
            for leaf in exprs:
                assert isinstance(leaf, ast.Attribute) and ast.unparse(leaf.value) == "State12", ast.unparse(node)
                found.add(State12[leaf.attr])
    return found


def test_each_handler_returns_exactly_the_states_its_rows_list() -> None:
    listed: dict[Callable[..., object], set[State12]] = {}
    for row in TRANSITIONS.values():
        listed.setdefault(row.handler, set()).update(row.next_states)
    for handler, states in listed.items():
        assert _returned_states(handler) == states, handler.__name__


def test_only_start_and_on_message_move_the_state() -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(Tls12Handshake)))
    assigners = set()
    for method in ast.walk(tree):
        if isinstance(method, ast.FunctionDef):
            for node in ast.walk(method):
                targets = (node.targets if isinstance(node, ast.Assign)
                           else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
                if any(isinstance(t, ast.Attribute) and t.attr == "state" and ast.unparse(t.value) == "self"
                       for t in targets):
                    assigners.add(method.name)
    assert assigners == {"__init__", "start", "_resume", "on_message"}


def test_real_handshakes_take_every_listed_transition_and_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: set[tuple[State12, int, State12]] = set()
    on_message = Tls12Handshake.on_message

    def recording(self: Tls12Handshake, msg: HandshakeMessage | None) -> None:
        before = self.state
        on_message(self, msg)
        assert before is not None and self.state is not None
        taken.add((before, CHANGE_CIPHER_SPEC if msg is None else msg.msg_type, self.state))

    monkeypatch.setattr(Tls12Handshake, "on_message", recording)
    for name, scenario in SCENARIOS.items():
        pair = scenario()
        pair.handshake()
        assert pair.server.complete and pair.client.version() == "TLSv1.2", name
    assert taken == _declared()


def _strays() -> list[tuple[tuple[State12, int], State12]]:
    return [(key, wrong) for key, row in TRANSITIONS.items() for wrong in sorted(set(State12) - row.next_states, key=str)]


@pytest.mark.parametrize(("key", "wrong"), _strays(), ids=[f"{k[0].name}-{w.name}" for k, w in _strays()])
def test_a_handler_leading_outside_its_row_is_internal_error(
    monkeypatch: pytest.MonkeyPatch, key: tuple[State12, int], wrong: State12
) -> None:
    row = TRANSITIONS[key]

    def stray(hs: Tls12Handshake, msg: HandshakeMessage | None) -> State12:
        row.handler(hs, msg)
        return wrong

    stray.__name__ = "stray"
    pair = SCENARIOS[REACHES[key]]()  # built first: the resumed scenario runs a handshake of its own
    monkeypatch.setitem(TRANSITIONS, key, dataclasses.replace(row, handler=stray))
    with pytest.raises(InternalError) as exc:
        pair.handshake()
    assert "stray" in exc.value.reason and "does not allow" in exc.value.reason
    server = pair.server
    assert not server.complete
    with pytest.raises(InternalError):
        server.export()
    pair.incoming.write(server.data_to_send())
    with pytest.raises(ssl.SSLError, match="internal error"):
        pair.client.do_handshake()
        pair.client.read()

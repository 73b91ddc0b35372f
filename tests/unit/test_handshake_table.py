"""The handshake's transition table is the whole state machine, and the engine keeps to it.

Three views of one claim: the table itself is connected (every state reachable, every row's next
states real states); the handlers' source returns exactly the next states their rows list, and
nothing else moves the state; and real handshakes with an OpenSSL client take every listed
transition and no other. A handler that strays from its row ends the handshake with internal_error.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import ssl
import textwrap
from collections.abc import Callable, Iterator

import pytest

from tests.inmemory import Pair, client_context, client_verifier, server_config
from tls_privsep.secured.handshake import TRANSITIONS, ServerHandshake, State, Transition
from tls_privsep.shared.errors import InternalError
from tls_privsep.shared.record import HandshakeMessage, HandshakeType

P256 = 0x0017  # OpenSSL sends an X25519 share only, so a P-256-only server asks for a retry

Scenario = Callable[[], Pair]
SCENARIOS: dict[str, Scenario] = {
    "full": lambda: Pair(ServerHandshake(server_config()), client_context()),
    "hello retry": lambda: Pair(ServerHandshake(server_config(groups=(P256,))), client_context()),
    "client certificate": lambda: Pair(
        ServerHandshake(server_config(client_auth="required", client_verifier=client_verifier())),
        client_context(client_cert="ecdsa"),
    ),
    "optional client certificate, none sent": lambda: Pair(
        ServerHandshake(server_config(client_auth="optional", client_verifier=client_verifier())),
        client_context(),
    ),
    "TLS 1.2": lambda: Pair(ServerHandshake(server_config()), client_context(tls12=True)),
    "hello retry, then client certificate": lambda: Pair(
        ServerHandshake(server_config(groups=(P256,), client_auth="required", client_verifier=client_verifier())),
        client_context(client_cert="ecdsa"),
    ),
}
# A scenario that reaches each row, for the stray-handler test.
REACHES: dict[tuple[State, int], str] = {
    (State.EXPECT_CLIENT_HELLO, HandshakeType.client_hello): "full",
    (State.EXPECT_CLIENT_HELLO_2, HandshakeType.client_hello): "hello retry",
    (State.EXPECT_CERTIFICATE, HandshakeType.certificate): "client certificate",
    (State.EXPECT_CERTIFICATE_VERIFY, HandshakeType.certificate_verify): "client certificate",
    (State.EXPECT_FINISHED, HandshakeType.finished): "full",
}


def _declared() -> set[tuple[State, int, State]]:
    return {(state, msg, after) for (state, msg), row in TRANSITIONS.items() for after in row.next_states}


# ---- the table alone ----------------------------------------------------------------------------


def test_every_state_is_reachable_and_only_complete_ends_the_flow() -> None:
    seen, todo = {State.EXPECT_CLIENT_HELLO}, [State.EXPECT_CLIENT_HELLO]
    while todo:
        state = todo.pop()
        for (source, _msg), row in TRANSITIONS.items():
            if source is state:
                todo += [s for s in row.next_states if s not in seen]
                seen |= row.next_states
    assert seen == set(State) - {State.CLOSED}  # CLOSED is any failure, outside the table
    with_rows = {state for state, _msg in TRANSITIONS}
    # TLS12 ends this table too: handshake12.py's takes over (test_handshake12_table.py).
    assert with_rows == set(State) - {State.COMPLETE, State.CLOSED, State.TLS12}


def test_rows_are_well_formed() -> None:
    for (state, msg), row in TRANSITIONS.items():
        assert isinstance(state, State) and isinstance(msg, HandshakeType)
        assert row.next_states and State.CLOSED not in row.next_states
        assert row.rfc.startswith("§"), row
    # Only one HelloRetryRequest (§4.1.4): the second ClientHello cannot lead to a third.
    second = TRANSITIONS[(State.EXPECT_CLIENT_HELLO_2, HandshakeType.client_hello)]
    assert State.EXPECT_CLIENT_HELLO_2 not in second.next_states
    # Never 0-RTT, so never an EndOfEarlyData (§4.5); no KeyUpdate before the Finished (§4.6.3).
    assert not {msg for _state, msg in TRANSITIONS} & {HandshakeType.end_of_early_data, HandshakeType.key_update}


# ---- the handlers' source -----------------------------------------------------------------------


def _returned_states(handler: Callable[..., object]) -> set[State]:
    """Every ``State.X`` a handler's ``return`` statements can give (through conditional expressions)."""

    def leaves(expr: ast.expr) -> Iterator[ast.expr]:
        if isinstance(expr, ast.IfExp):
            yield from leaves(expr.body)
            yield from leaves(expr.orelse)
        else:
            yield expr

    found = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(handler)))):
        if isinstance(node, ast.Return):
            assert node.value is not None, f"{handler.__name__} has a bare return"
            for leaf in leaves(node.value):
                is_state = isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "State"
                assert is_state, f"{handler.__name__} returns {ast.unparse(leaf)}, not a State member"
                assert isinstance(leaf, ast.Attribute)
                found.add(State[leaf.attr])
    return found


def test_each_handler_returns_exactly_the_states_its_rows_list() -> None:
    listed: dict[Callable[..., object], set[State]] = {}
    for row in TRANSITIONS.values():
        listed.setdefault(row.handler, set()).update(row.next_states)
    for handler, states in listed.items():
        assert _returned_states(handler) == states, handler.__name__


def test_only_dispatch_moves_the_state() -> None:
    """Besides the start (``__init__``) and a failure (``_close``), no method assigns ``self.state``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(ServerHandshake)))
    assigners = set()
    for method in ast.walk(tree):
        if isinstance(method, ast.FunctionDef):
            for node in ast.walk(method):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                if any(isinstance(t, ast.Attribute) and t.attr == "state" and ast.unparse(t.value) == "self" for t in targets):
                    assigners.add(method.name)
    assert assigners == {"__init__", "_dispatch", "_close"}


# ---- real handshakes ----------------------------------------------------------------------------


def test_real_handshakes_take_every_listed_transition_and_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: set[tuple[State, int, State]] = set()
    dispatch = ServerHandshake._dispatch

    def recording(self: ServerHandshake, msg: HandshakeMessage) -> None:
        before = self.state
        dispatch(self, msg)
        taken.add((before, msg.msg_type, self.state))

    monkeypatch.setattr(ServerHandshake, "_dispatch", recording)
    for name, scenario in SCENARIOS.items():
        pair = scenario()
        pair.handshake()
        assert pair.server.complete, name
    assert taken == _declared()


def _strays() -> list[tuple[tuple[State, int], State]]:
    return [(key, wrong) for key, row in TRANSITIONS.items() for wrong in sorted(set(State) - row.next_states, key=str)]


@pytest.mark.parametrize(("key", "wrong"), _strays(), ids=[f"{k[0].name}-{w.name}" for k, w in _strays()])
def test_a_handler_leading_outside_its_row_is_internal_error(
    monkeypatch: pytest.MonkeyPatch, key: tuple[State, int], wrong: State
) -> None:
    row = TRANSITIONS[key]

    def stray(hs: ServerHandshake, msg: HandshakeMessage) -> State:
        row.handler(hs, msg)  # all of the real work, then the wrong answer
        return wrong

    stray.__name__ = "stray"
    monkeypatch.setitem(TRANSITIONS, key, dataclasses.replace(row, handler=stray))
    pair = SCENARIOS[REACHES[key]]()
    with pytest.raises(InternalError) as exc:
        pair.handshake()
    assert "stray" in exc.value.reason and "does not allow" in exc.value.reason
    # Closed for good, nothing to export, and the client is told: internal_error, never a wrong state.
    server = pair.server
    assert server.state is State.CLOSED and not server.complete
    with pytest.raises(InternalError):
        server.export()
    pair.incoming.write(server.data_to_send())
    with pytest.raises(ssl.SSLError, match="internal error"):
        pair.client.do_handshake()
        pair.client.read()


def test_the_row_type_is_what_the_engine_reads() -> None:
    row = TRANSITIONS[(State.EXPECT_FINISHED, HandshakeType.finished)]
    assert isinstance(row, Transition) and row.handler is ServerHandshake._on_finished
    assert row.next_states == frozenset({State.COMPLETE})

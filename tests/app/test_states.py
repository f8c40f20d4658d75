import itertools

import pytest

from app.states import LEGAL, TERMINAL, IllegalTransition, State, can_transition, transition

EXPECTED_LEGAL = {
    ("received", "queued"), ("received", "rejected"), ("received", "cancelled"),
    ("queued", "running"), ("queued", "cancelled"), ("queued", "rejected"), ("queued", "crashed"),
    ("running", "evaluating"), ("running", "queued"), ("running", "failed"),
    ("running", "crashed"), ("running", "cancelled"),
    ("evaluating", "completed"), ("evaluating", "queued"), ("evaluating", "failed"),
    ("evaluating", "crashed"), ("evaluating", "cancelled"),
}
ALL_PAIRS = list(itertools.product([s.value for s in State], repeat=2))


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS)
def test_every_transition(current: str, target: str) -> None:
    if (current, target) in EXPECTED_LEGAL:
        assert transition(current, target) == State(target)
        assert can_transition(current, target)
    else:
        assert not can_transition(current, target)
        with pytest.raises(IllegalTransition):
            transition(current, target)


def test_terminal_states_have_no_exit() -> None:
    names = ("completed", "failed", "crashed", "cancelled", "rejected")
    assert {State(s) for s in names} == TERMINAL
    for state in TERMINAL:
        assert LEGAL[state] == frozenset()


def test_happy_path_reaches_completed() -> None:
    state = State.RECEIVED
    for nxt in ("queued", "running", "evaluating", "completed"):
        state = transition(state, nxt)
    assert state is State.COMPLETED

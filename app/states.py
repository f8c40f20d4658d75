"""The takedown/job state machine: the one place that says which transitions are legal.

Both the API (intake, cancel) and the workers (claim, progress, commit, reconciler) call
`transition`; nothing else assigns a state.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    EVALUATING = "evaluating"
    COMPLETED = "completed"
    FAILED = "failed"  # the code raised, or the evaluation gate refused the version
    CRASHED = "crashed"  # the worker died and retries are spent
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # validation after intake, e.g. a concept unknown to a closed vocabulary


TERMINAL: frozenset[State] = frozenset(
    {State.COMPLETED, State.FAILED, State.CRASHED, State.CANCELLED, State.REJECTED}
)
ACTIVE: frozenset[State] = frozenset({State.RUNNING, State.EVALUATING})
CANCELLABLE: frozenset[State] = frozenset(
    {State.RECEIVED, State.QUEUED, State.RUNNING, State.EVALUATING}
)

LEGAL: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.QUEUED, State.REJECTED, State.CANCELLED}),
    # queued -> rejected: the worker may find the concept unknown when it reads the catalog.
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.REJECTED, State.CRASHED}),
    # running -> queued: the lease expired (worker died) and a retry is left, or a merged
    # step was cancelled by another takedown and this one goes back in line, or production
    # moved off the step's parent while it ran (it runs again from the new one).
    State.RUNNING: frozenset(
        {State.EVALUATING, State.QUEUED, State.FAILED, State.CRASHED, State.CANCELLED}
    ),
    State.EVALUATING: frozenset(
        {State.COMPLETED, State.QUEUED, State.FAILED, State.CRASHED, State.CANCELLED}
    ),
    State.COMPLETED: frozenset(),
    State.FAILED: frozenset(),
    State.CRASHED: frozenset(),
    State.CANCELLED: frozenset(),
    State.REJECTED: frozenset(),
}


class IllegalTransition(ValueError):
    """A caller tried to move a takedown or job along an edge the state machine does not have."""

    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"cannot move from {current.value!r} to {target.value!r}")
        self.current = current
        self.target = target


def can_transition(current: State | str, target: State | str) -> bool:
    return State(target) in LEGAL[State(current)]


def transition(current: State | str, target: State | str) -> State:
    """Return `target` if the edge current -> target is legal, else raise IllegalTransition."""
    current, target = State(current), State(target)
    if target not in LEGAL[current]:
        raise IllegalTransition(current, target)
    return target


def is_terminal(state: State | str) -> bool:
    return State(state) in TERMINAL

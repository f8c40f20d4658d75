"""Progress of an erasure step, as the service streams it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STAGES = ("selecting_targets", "building_replay", "training", "evaluating", "saving")


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Cancelled(Exception):
    """The caller asked the step to stop; nothing was saved."""

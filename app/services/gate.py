"""Evaluation gate: may a new version become `production`?

Passes when, for every concept erased in this step, forget accuracy (fraction of its samples the
judge still recognises) <= gate_max_forget_acc, and retention of related and of general concepts,
each measured relative to the parent version (1.0 = unchanged), is at least its threshold. A
retention reported as undefined (null or NaN: no such concept is left, or the parent drew none)
has nothing to lose and passes; one not reported at all fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from app.settings import Settings


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)


def evaluate_gate(metrics: dict[str, Any], concepts: list[str], settings: Settings) -> GateResult:
    thresholds = {
        "max_forget_acc": settings.gate_max_forget_acc,
        "min_related_retention": settings.gate_min_related_retention,
        "min_general_retention": settings.gate_min_general_retention,
    }
    if metrics.get("evaluated") is False and not settings.gate_require_evaluation:
        return GateResult(passed=True, reasons=["not evaluated: this model has no judge"],
                          thresholds=thresholds)
    reasons: list[str] = []
    forget = metrics.get("forget_acc") or {}
    for concept in concepts:
        value = forget.get(concept)
        if value is None:
            reasons.append(f"no forget accuracy reported for {concept!r}")
        elif value > settings.gate_max_forget_acc:
            reasons.append(f"forget accuracy for {concept!r} is {value:.3f} "
                           f"> {settings.gate_max_forget_acc:.3f}")
    for name, minimum in (("related_retention", settings.gate_min_related_retention),
                          ("general_retention", settings.gate_min_general_retention)):
        if name not in metrics:
            reasons.append(f"no {name} reported")
            continue
        value = metrics[name]
        if value is None or math.isnan(value):
            continue  # no concept left to retain (every neighbour erased): nothing to lose
        if value < minimum:
            reasons.append(f"{name} is {value:.3f} < {minimum:.3f}")
    return GateResult(passed=not reasons, reasons=reasons, thresholds=thresholds)

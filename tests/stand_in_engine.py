"""A stand-in for `workers.engine.service_api` with the same interface and no torch.

It lets the service's end-to-end and fault tests run real Celery workers today. Timing is set
by LETHE_TEST_STEP_SECONDS (per training step, 20 steps); a concept named "explode" raises;
"impossible" is refused as the engine refuses a concept with no safe target;
"stubborn" stays recognisable (forget accuracy 0.5) so the gate refuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEPS = 20


@dataclass
class ErasureRequest:
    concept: str
    prompts: list[str] | None = None
    neighbors: list[str] | None = None


@dataclass
class ProgressEvent:
    stage: str
    step: int
    total: int
    losses: dict[str, float]
    eta_seconds: float | None


@dataclass
class StepOutcome:
    artifact_dir: Path
    digest: str
    size_bytes: int
    erased: list[str]
    metrics: dict[str, Any]
    targets: dict[str, str] = field(default_factory=dict)
    neighbours: dict[str, list[str]] = field(default_factory=dict)
    covered_by: dict[str, list[str]] = field(default_factory=dict)


class Cancelled(Exception):
    pass


class NoSafeTarget(ValueError):
    def __init__(self, concept: str, message: str) -> None:
        super().__init__(message)
        self.concept = concept


def erase_step(model_dir: Path, parent_artifact: Path | None, requests: list[ErasureRequest],
               previously_erased: list[str], out_dir: Path, *, seed: int,
               progress: Callable[[ProgressEvent], None],
               should_stop: Callable[[], bool]) -> StepOutcome:
    delay = float(os.environ.get("LETHE_TEST_STEP_SECONDS", "0.05"))
    concepts = [r.concept for r in requests]
    progress(ProgressEvent("selecting_targets", 0, STEPS, {}, None))
    if "impossible" in concepts:
        raise NoSafeTarget("impossible", "cannot erase 'impossible': no rewrite names no erased "
                                         "concept")
    progress(ProgressEvent("building_replay", 0, STEPS, {}, None))
    for step in range(1, STEPS + 1):
        if should_stop():
            raise Cancelled()
        if "explode" in concepts:
            raise RuntimeError("engine exploded on purpose")
        time.sleep(delay)
        progress(ProgressEvent("training", step, STEPS, {"forget": 1.0 / step},
                               (STEPS - step) * delay))
    progress(ProgressEvent("evaluating", 0, 1, {}, None))
    out_dir.mkdir(parents=True, exist_ok=True)
    erased = [*previously_erased, *concepts]
    weights = json.dumps({"erased": erased, "seed": seed}).encode()
    (out_dir / "weights.safetensors").write_bytes(weights)
    (out_dir / "manifest.json").write_text(json.dumps({"erased": erased}))
    forget = {c: (0.5 if c == "stubborn" else 0.0) for c in concepts}
    # a concept with no related concepts left to retain, and a loss that overflowed: the
    # engine's metrics then hold NaN and infinity, as the real engine's do
    undefined = {"related": [], "related_retention": math.nan,
                 "final_losses": {"unlearn": math.inf}} if "lonely" in concepts else {}
    # as the real engine's token rule: a concept whose name says an erased one's is erased
    # already, and nothing is mapped for it
    covered = {c: by for c in concepts if (by := [p for p in previously_erased if p in c])}
    return StepOutcome(
        artifact_dir=out_dir, digest=hashlib.sha256(weights).hexdigest(),
        size_bytes=len(weights), erased=erased,
        metrics={"before": {"forget_acc": dict.fromkeys(concepts, 1.0)}, "after": {},
                 "forget_acc": forget, "related_retention": 0.95, "general_retention": 0.99,
                 **undefined},
        targets={c: "a plain object" for c in concepts if c not in covered},
        neighbours={c: ["something near"] for c in concepts if c not in covered},
        covered_by=covered,
    )


def render_samples(model_dir: Path, artifact: Path | None, prompt: str, seed: int,
                   n: int) -> list[bytes]:
    time.sleep(float(os.environ.get("LETHE_TEST_RENDER_SECONDS", "0")))
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
    return [png] * n


def load_catalog(model_dir: Path) -> list[dict[str, Any]]:
    return list(json.loads((model_dir / "catalog.json").read_text()))


def unknown_concepts(model_dir: Path, concepts: list[str]) -> list[str]:
    names = {c["name"] for c in load_catalog(model_dir)}
    return [c for c in concepts if c not in names]


def build_folder(model_dir: Path, artifact: Path | None, out_dir: Path) -> dict[str, Any]:
    """Stand-in for workers.engine.export.build_folder: the base folder, `unet/` = artifact."""
    import shutil

    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns("unet"))
    unet = out_dir / "unet"
    unet.mkdir()
    if artifact is not None:
        shutil.copy(artifact / "weights.safetensors", unet / "diffusion_pytorch_model.safetensors")
    return {"weights": "merged" if artifact else "base"}

"""Generate from any version and read the images with the judge (`lethe sample`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from workers.engine.loading import LoadedModel, load_model
from workers.engine.sampling import generate
from workers.engine.versions import base_digest, load_version_model, read_manifest

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

    from workers.conceptworld.evaluate import GeneratedSet, WorldEvaluator


def probe(model_dir: Path, version: Path | None, prompt: str, n: int, seed: int, steps: int,
          guidance: float | None, judge_path: Path | None, concept: str | None,
          out: Path | None) -> dict[str, object]:
    if concept is not None:
        from workers.conceptworld.world import CONCEPT_BY_NAME

        if judge_path is None:
            raise ValueError("--concept needs --judge: the judge reads the concept's share")
        if concept not in CONCEPT_BY_NAME:
            raise ValueError(f"unknown concept {concept!r}; the judge knows "
                             f"{', '.join(CONCEPT_BY_NAME)}")
    model = load_model(model_dir)
    unet = model.unet
    if version is not None:
        model, unet = load_version_model(model, version, expected_base=base_digest(model_dir))
    images = generate(model, [prompt] * n, [seed + i for i in range(n)], steps=steps,
                      guidance=guidance, unet=unet)
    report: dict[str, object] = {"prompt": prompt, "n": n, "seed": seed,
                                 "version": str(version) if version else None}
    if out is not None:
        arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        strip = np.concatenate(list(arr), axis=1)
        Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4),
                                      Image.Resampling.NEAREST).save(out)
        report["png"] = str(out)
    if judge_path is not None:
        from workers.conceptworld.judge import HEADS, Judge
        from workers.conceptworld.world import CONCEPT_BY_NAME

        verdicts = Judge.load(judge_path).read(images)
        report["images"] = [{head: verdicts.labels(head)[i] for head in HEADS} for i in range(n)]
        if concept is not None:
            report["concept"] = concept
            report["concept_rate"] = float(verdicts.shows(CONCEPT_BY_NAME[concept]).float().mean())
    return report


@dataclass
class KeptSets:
    """A benchmark step's kept concepts drawn by the base model and by the version, the same
    prompts and seeds (the final check's sets, for probes). `evaluator` holds the base model."""

    evaluator: WorldEvaluator
    erased: list[str]
    kept: list[str]
    view: LoadedModel
    unet: UNet2DConditionModel
    base: GeneratedSet
    version: GeneratedSet


def kept_sets(step_dir: Path, images: int, precision: str = "auto") -> KeptSets:
    from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
    from workers.conceptworld.evaluate import WorldEvaluator, retention_sets
    from workers.conceptworld.judge import Judge

    model = load_model(MODEL_DIR, device="cpu", precision=precision)
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH))
    erased = read_manifest(step_dir)["erased"]
    assert isinstance(erased, list)
    related, general = retention_sets(erased)
    kept = related + general
    view, unet = load_version_model(model, step_dir)
    base = evaluator.generate_for(kept, None, per_concept=images)
    version = replace(evaluator, model=view).generate_for(kept, unet, per_concept=images)
    return KeptSets(evaluator, erased, kept, view, unet, base, version)

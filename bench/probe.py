"""Generate from any version and read the images with the judge (`lethe sample`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workers.engine.loading import load_model
from workers.engine.sampling import generate
from workers.engine.versions import base_digest, load_version_model


def probe(model_dir: Path, version: Path | None, prompt: str, n: int, seed: int, steps: int,
          guidance: float | None, judge_path: Path | None, concept: str | None,
          out: Path | None) -> dict[str, object]:
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
            if concept not in CONCEPT_BY_NAME:
                raise ValueError(f"unknown concept {concept!r}")
            report["concept"] = concept
            report["concept_rate"] = float(verdicts.shows(CONCEPT_BY_NAME[concept]).float().mean())
    return report

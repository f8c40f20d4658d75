"""The numbers and pictures `lethe conceptworld eval` and `grid` produce."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.conceptworld.evaluate import WorldEvaluator
from workers.conceptworld.judge import Judge, agreement_with_labels, judge_accuracy
from workers.conceptworld.render import render_scene
from workers.conceptworld.world import CATALOG, scene_for
from workers.engine.loading import load_model
from workers.engine.sampling import generate

LABELS = Path(__file__).parent / "labels"


def evaluate_world(model_dir: Path, judge_path: Path, per_concept: int = 8) -> dict[str, object]:
    judge = Judge.load(judge_path)
    clock = time.perf_counter()
    model = load_model(model_dir, device="cpu")
    load_seconds = time.perf_counter() - clock
    evaluator = WorldEvaluator(model, judge, per_concept=per_concept)
    gen = evaluator.generate_for([c.name for c in CATALOG])
    rates = {c.name: gen.rate(c.name) for c in CATALOG}
    confusion = {c.name: {n: gen.rate(c.name, judged_as=n) for n in c.related} for c in CATALOG}
    return {
        "judge_accuracy": judge_accuracy(judge, n=2000),
        "judge_agreement_with_hand_labels": agreement_with_labels(
            judge, LABELS / "generated_labels.json", LABELS / "generated.png"),
        "base_accuracy_mean": float(np.mean(list(rates.values()))),
        "base_accuracy_min": float(min(rates.values())),
        "per_concept": rates,
        "neighbour_confusion": confusion,
        "quality": evaluator.quality(gen.images),
        "quality_of_renders": _render_quality(evaluator, len(gen.images)),
        "images_per_concept": per_concept,
        "seconds_per_image": gen.seconds / len(gen.images),
        "model_load_seconds": load_seconds,
    }


def _render_quality(evaluator: WorldEvaluator, n: int) -> float:
    """The same distance for fresh renders: the floor a perfect generator would reach."""
    rng = random.Random(99)
    scenes = [scene_for(c.name, rng) for c in CATALOG for _ in range(max(1, n // len(CATALOG)))]
    images = np.stack([render_scene(s, rng) for s in scenes])
    return evaluator.quality(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)


def concept_grid(model_dir: Path, out: Path, per_concept: int = 4) -> None:
    model = load_model(model_dir, device="cpu")
    rng = random.Random(5)
    prompts, seeds, rows = [], [], []
    for ci, concept in enumerate(CATALOG):
        renders = [render_scene(scene_for(concept.name, rng), rng) for _ in range(per_concept)]
        rows.append(renders)
        for j in range(per_concept):
            prompts.append(concept.prompts[j % len(concept.prompts)])
            seeds.append(777 + 100 * ci + j)
    images = generate(model, prompts, seeds, batch_size=128)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    size = arr.shape[1]
    gap = np.full((size, 4, 3), 255, np.uint8)
    lines = []
    for ci, renders in enumerate(rows):
        generated = list(arr[ci * per_concept:(ci + 1) * per_concept])
        lines.append(np.concatenate(renders + [gap] + generated, axis=1))
    half = (len(lines) + 1) // 2
    left, right = lines[:half], lines[half:]
    right += [np.zeros_like(lines[0])] * (len(left) - len(right))
    col_gap = np.full((size * len(left), 12, 3), 255, np.uint8)
    picture = np.concatenate([np.concatenate(left), col_gap, np.concatenate(right)], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).resize((picture.shape[1] * 4, picture.shape[0] * 4),
                                    Image.Resampling.NEAREST).save(out)

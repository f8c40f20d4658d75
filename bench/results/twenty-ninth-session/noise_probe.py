"""How noisy is the kept-set quality distance at a given image count? (throwaway probe)

    python bench/results/twenty-ninth-session/noise_probe.py ERASED IMAGES

The base model draws every kept concept at 2×IMAGES images on the evaluation seeds; prints the
quality distance of the whole set, of each half (images j < IMAGES and j >= IMAGES of each
concept: two independent draws of IMAGES a concept), and the mean and spread over 20 random
IMAGES-a-concept subsets.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.engine.loading import load_model


def main() -> None:
    erased, images = sys.argv[1].split(","), int(sys.argv[2])
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=2 * images)
    related, general = retention_sets(erased)
    kept = related + general
    gen = evaluator.generate_for(kept, None)
    rows = np.arange(len(kept) * 2 * images)
    halves = {"first": rows[(rows % (2 * images)) < images],
              "second": rows[(rows % (2 * images)) >= images]}
    out = {"erased": erased, "images": images,
           f"quality_at_{2 * images}": round(evaluator.retained_quality(gen, kept), 4)}
    for name, part in halves.items():
        out[f"quality_{name}_{images}"] = round(evaluator.retained_quality_of_rows(gen, part), 4)
    rng = np.random.default_rng(0)
    subsets = [evaluator.retained_quality_of_rows(gen, np.concatenate(
        [c * 2 * images + rng.choice(2 * images, images, replace=False)
         for c in range(len(kept))])) for _ in range(20)]
    out["random_subsets"] = {"mean": round(float(np.mean(subsets)), 4),
                             "sd": round(float(np.std(subsets)), 4),
                             "min": round(min(subsets), 4), "max": round(max(subsets), 4)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

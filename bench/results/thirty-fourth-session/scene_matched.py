"""How much of a version's typicality ratio is the scenes it draws rather than how it draws
them? The final check's kept set (base and version, the same prompts and seeds, 32 images a
concept) with each image's typicality next to the base model's own typicality on the scene
the judge reads in it (`WorldEvaluator.drawn_typicality`). Prints one JSON object:

- `typicality_ratio`: the version's mean typicality over the base's (the final check's).
- `difficulty_ratio`: the base's own typicality on the version's scenes over that on the
  base's scenes, image for image: how much harder the scenes drawn now are for the base.
- `matched_ratio`: the first over the second, with a 90 % paired-bootstrap interval.
- `frechet_ratio`, `frechet_matched_ratio`: the Fréchet quality ratio, and the same over the
  ratio of the base's own drawings of each set's scenes (`drawings_of`, the n-th image of a
  scene taking the base's n-th drawing of it, cycling).
- `by_concept`: each kept concept's share of the excess, where its images changed.

    python bench/results/thirty-fourth-session/scene_matched.py STEP_DIR [--images N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.probe import kept_sets
from workers.conceptworld.evaluate import Reading, paired_draw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step_dir", type=Path)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    sets = kept_sets(args.step_dir, args.images)
    evaluator, kept, base, version = sets.evaluator, sets.kept, sets.base, sets.version
    rows = base.rows_of(kept)
    read_b, read_v = evaluator.reading(base, rows), evaluator.reading(version, rows)
    typ_b, typ_v = evaluator.typicality(read_b), evaluator.typicality(read_v)
    own_b = evaluator.drawn_typicality(read_b.scenes)
    own_v = evaluator.drawn_typicality(read_v.scenes)

    def drawn_alike(reading: Reading) -> Reading:
        pools = dict(zip(reading.scenes, evaluator.drawings_of(reading.scenes), strict=True))
        seen: dict[object, int] = {}
        features = []
        for scene in reading.scenes:
            n = seen[scene] = seen.get(scene, -1) + 1
            features.append(pools[scene].features[n % len(pools[scene].features)])
        return Reading(np.stack(features), reading.scenes)

    frechet = evaluator.quality_of(read_v) / evaluator.quality_of(read_b)
    frechet_own = (evaluator.quality_of(drawn_alike(read_v))
                   / evaluator.quality_of(drawn_alike(read_b)))

    def ratios(pick: np.ndarray) -> tuple[float, float]:
        typical = typ_v[pick].mean() / typ_b[pick].mean()
        difficulty = own_v[pick].mean() / own_b[pick].mean()
        return float(typical), float(difficulty)

    every = np.arange(len(rows))
    typical, difficulty = ratios(every)
    rng = np.random.default_rng(0)
    draws = [ratios(paired_draw(len(kept), args.images, rng)) for _ in range(200)]
    matched = [t / d for t, d in draws]
    q5, q95 = np.percentile(matched, [5, 95])
    r = typical / difficulty
    by_concept = {}
    for i, name in enumerate(kept):
        block = slice(i * args.images, (i + 1) * args.images)
        if (typ_v[block] != typ_b[block]).any():
            by_concept[name] = {
                "typicality_excess": round(float((typ_v[block] - typ_b[block]).sum()
                                                 / typ_b.sum()), 4),
                "difficulty_excess": round(float((own_v[block] - own_b[block]).sum()
                                                 / own_b.sum()), 4)}
    print(json.dumps({
        "step": str(args.step_dir), "kept": len(kept), "images": args.images,
        "typicality_ratio": round(typical, 3), "difficulty_ratio": round(difficulty, 3),
        "matched_ratio": round(r, 3),
        "frechet_ratio": round(frechet, 3), "frechet_own_ratio": round(frechet_own, 3),
        "frechet_matched_ratio": round(frechet / frechet_own, 3),
        "matched_ratio_interval": [round(2 * r - q95, 3), round(2 * r - q5, 3)],
        "scenes": len(set(read_b.scenes) | set(read_v.scenes)),
        "by_concept": by_concept}))


if __name__ == "__main__":
    main()

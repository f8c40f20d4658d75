"""Where a version's kept images differ from the base's: per kept concept and prompt, the
images changed, the judge's readings of base and version, and mean typicality (a probe).

    python bench/results/thirty-first-session/kept_probe.py STEP_DIR ERASED [CONCEPT ...] \
        [--images N] [--precision P]

STEP_DIR: a benchmark step folder; ERASED: comma-separated concepts it erased. Prints one JSON
line per prompt whose images changed, then one per concept: mean typicality and the Fréchet
quality of its images (biased at this count; base and version share the bias). All kept concepts
when none are named.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step_dir", type=Path)
    parser.add_argument("erased")
    parser.add_argument("concepts", nargs="*")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    model = load_model(MODEL_DIR, device="cpu", precision=args.precision)
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=args.images)
    related, general = retention_sets(args.erased.split(","))
    kept = args.concepts or related + general
    view, unet = load_version_model(model, args.step_dir)
    base = evaluator.generate_for(kept, None)
    after = replace(evaluator, model=view).generate_for(kept, unet)
    rows = base.rows_of(kept)
    read_base, read_after = evaluator.reading(base, rows), evaluator.reading(after, rows)
    typical_base, typical_after = (evaluator.typicality(read_base),
                                   evaluator.typicality(read_after))
    for ci, name in enumerate(kept):
        block = np.arange(ci * args.images, (ci + 1) * args.images)
        for prompt in dict.fromkeys(base.prompts[i] for i in block):
            idx = np.array([i for i in block if base.prompts[i] == prompt])
            changed = int((after.images[idx] != base.images[idx]).flatten(1).any(1).sum())
            if not changed:
                continue
            print(json.dumps({
                "concept": name, "prompt": prompt, "images": len(idx), "changed": changed,
                "base_reads": Counter(read_base.scenes[i].words for i in idx).most_common(3),
                "version_reads": Counter(read_after.scenes[i].words for i in idx
                                         ).most_common(3),
                "typicality": [round(float(typical_base[idx].mean()), 3),
                               round(float(typical_after[idx].mean()), 3)]}), flush=True)
        print(json.dumps({
            "concept": name, "typicality": [round(float(typical_base[block].mean()), 3),
                                            round(float(typical_after[block].mean()), 3)],
            "quality": [round(evaluator.quality_of(read_base.take(block)), 2),
                        round(evaluator.quality_of(read_after.take(block)), 2)]}), flush=True)



if __name__ == "__main__":
    main()

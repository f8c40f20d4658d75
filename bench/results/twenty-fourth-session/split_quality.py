"""Kept-concept quality split by whether the prompt names an erased concept (throwaway probe).

    python bench/results/twenty-fourth-session/split_quality.py STEP_DIR [IMAGES]

A kept concept's catalog templates can name an erased one ("a striped yellow star" is one of
striped's after star is erased); those images are what the erasure draws instead. This draws
the kept concepts from the base and from STEP_DIR's version (IMAGES a concept, default 32, the
benchmark's seeds) and prints the quality distance and its ratio to the base's over all rows,
over the rows whose prompt names an erased concept, and over the rest.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.concepts import load_catalog
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model, read_manifest


def main() -> None:
    step_dir = sys.argv[1]
    images = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    erased = [str(e) for e in read_manifest(step_dir)["erased"]]  # type: ignore[union-attr]
    related, general = retention_sets(erased)
    kept = related + general
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images)
    catalog = load_catalog(MODEL_DIR)
    prompts = [CONCEPT_BY_NAME[c].prompts[j % len(CONCEPT_BY_NAME[c].prompts)]
               for c in kept for j in range(images)]
    names_erased = np.array([catalog.mentions(p, set(erased)) for p in prompts])
    base = evaluator.generate_for(kept)
    view, unet = load_version_model(model, step_dir)  # token rows, where the version has them
    version = replace(evaluator, model=view).generate_for(kept, unet)
    out: dict[str, object] = {"step_dir": step_dir, "images": images,
                              "rows_naming_erased": int(names_erased.sum()), "rows": len(prompts)}
    for name, rows in (("all", np.arange(len(prompts))),
                       ("names_erased", np.flatnonzero(names_erased)),
                       ("clean", np.flatnonzero(~names_erased))):
        if len(rows) > 1:
            q_base = evaluator.retained_quality_of_rows(base, rows)
            q_version = evaluator.retained_quality_of_rows(version, rows)
            out[name] = {"base": round(q_base, 3), "version": round(q_version, 3),
                         "ratio": round(q_version / q_base, 3)}
    out["prompts_naming_erased"] = sorted({p for p, n in zip(prompts, names_erased, strict=True)
                                          if n})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

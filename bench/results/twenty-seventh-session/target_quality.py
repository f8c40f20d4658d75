"""Kept rows that name an erased concept: the version's drawing against the base's drawing of
each row's mapping target (throwaway probe).

    python bench/results/twenty-seventh-session/target_quality.py RUN_DIR/METHOD STEP [IMAGES]

A kept concept's template that names an erased concept ("a yellow circle") is drawn from then
on as what its erased word now reads. If the version drew each such row exactly as the base
draws the row's target ("a orange circle"), any quality lost there is the target's own; if
not, the mapping is imperfect. Prints the quality distance of those rows for: the base on the
row itself, the version on the row, and the base on the row's target (the last target any step
up to STEP chose for it; rows never mapped keep their own prompt). Same seeds throughout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import EVAL_SEED, GeneratedSet, WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.concepts import load_catalog
from workers.engine.loading import LoadedModel, load_model
from workers.engine.sampling import generate
from workers.engine.versions import load_version_model, read_manifest


def _drawn(evaluator: WorldEvaluator, model: LoadedModel, prompts: list[str],
           seeds: list[int], unet: object = None) -> GeneratedSet:
    images = generate(model, prompts, seeds, steps=evaluator.steps, guidance=evaluator.guidance,
                      unet=unet, batch_size=128)  # type: ignore[arg-type]
    return GeneratedSet(["rows"], len(prompts), images, evaluator.judge.read(images), 0.0)


def main() -> None:
    method_dir, step = Path(sys.argv[1]), int(sys.argv[2])
    images = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    step_dir = method_dir / f"step-{step}"
    erased = [str(e) for e in read_manifest(step_dir)["erased"]]  # type: ignore[union-attr,attr-defined]
    targets: dict[str, str] = {}
    for i in range(1, step + 1):
        record = json.loads((method_dir / f"step-{i}" / "metrics.json").read_text())
        targets |= record["targets"]
    related, general = retention_sets(erased)
    catalog = load_catalog(MODEL_DIR)
    rows = [(CONCEPT_BY_NAME[c].prompts[j % len(CONCEPT_BY_NAME[c].prompts)], 1000 * ci + j)
            for ci, c in enumerate(related + general) for j in range(images)]
    rows = [(p, s) for p, s in rows if catalog.mentions(p, set(erased))]
    prompts = [p for p, _ in rows]
    seeds = [EVAL_SEED + s for _, s in rows]
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images)
    view, unet = load_version_model(model, step_dir)
    everything = np.arange(len(rows))
    out: dict[str, object] = {"step_dir": str(step_dir), "rows": len(rows),
                              "unmapped": sorted({p for p in prompts if p not in targets})}
    for name, drawn in (("base_on_row", _drawn(evaluator, model, prompts, seeds)),
                        ("version_on_row", _drawn(evaluator, view, prompts, seeds, unet)),
                        ("base_on_target", _drawn(evaluator, model,
                                                  [targets.get(p, p) for p in prompts], seeds))):
        out[name] = round(evaluator.retained_quality_of_rows(drawn, everything), 3)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

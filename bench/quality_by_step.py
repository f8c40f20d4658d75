"""Where along a sequence the kept concepts' drawing quality is lost.

    python -m bench.quality_by_step METHOD_DIR [--images N] [--steps 6,8,10]

The benchmark's quality at each step is over that step's kept concepts, a set that shrinks as
concepts are erased, and at 8 images a concept it is mostly small-sample bias. This draws one
fixed set, the concepts still kept after the method's last step, from the base and from every
chosen step's version on the same prompts and seeds (N images a concept, default 32), and
prints one JSON object: per step the quality distance, its ratio to the base's, and the
concepts whose own distance grew most.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, kept_check, retention_sets
from workers.conceptworld.judge import Judge
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model, read_manifest


def step_dirs(method_dir: Path) -> dict[int, Path]:
    found = {int(p.name.removeprefix("step-")): p for p in method_dir.glob("step-*")
             if p.name.removeprefix("step-").isdigit()}
    if not found:
        raise ValueError(f"{method_dir} holds no step-<i> folders")
    return dict(sorted(found.items()))


def quality_by_step(method_dir: Path, images: int, steps: list[int] | None = None, *,
                    sampling_steps: int = 20) -> dict[str, object]:
    folders = step_dirs(method_dir)
    chosen = steps or list(folders)
    missing = [s for s in chosen if s not in folders]
    if missing:
        raise ValueError(f"{method_dir} has no step {', '.join(map(str, missing))}")
    erased = read_manifest(folders[max(folders)])["erased"]
    if not isinstance(erased, list):
        raise ValueError(f"{folders[max(folders)]}: the manifest's erased concepts are not a list")
    names = [str(e) for e in erased]
    related, general = retention_sets(names)
    kept = related + general
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images,
                               steps=sampling_steps)
    base = evaluator.generate_for(kept)
    base_quality = evaluator.retained_quality(base, kept)
    rows = []
    for step in chosen:
        view, unet = load_version_model(model, folders[step])
        check = kept_check(evaluator, unet, names, images, base=base, view=view)
        rows.append({"step": step, "quality": check.quality, "ratio": check.quality_ratio,
                     "quality_worse_by_concept": check.quality_worse_by_concept})
    return {"method_dir": str(method_dir), "kept": kept, "images": images,
            "base_quality": base_quality, "steps": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method_dir", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", default="", help="comma-separated step numbers (default all)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",") if s.strip()] or None
    print(json.dumps(quality_by_step(args.method_dir, args.images, steps)))


if __name__ == "__main__":
    main()

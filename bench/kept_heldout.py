"""Retention of the kept concepts on their held-out templates, which no step ever holds.

    python -m bench.kept_heldout STEP_DIR [--images N]

The benchmark's related and general retention read the kept concepts' catalog prompts, the
very prompts the K/V consolidation holds to the teacher; this reads the same concepts on their
held-out templates too, base model and version on the same seeds, N images a concept
(default 16). Prints one JSON object: retention on each template set, the concepts that lost
most, the kept concepts' drawing quality (`retained_quality`) of base and version over the same
images (at 16 a concept the distance carries less small-sample bias than the benchmark's 8), and
the concepts whose own distance grew most (`evaluate.kept_check`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, kept_check
from workers.conceptworld.judge import Judge
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model, read_manifest


def kept_retention(step_dir: Path, images: int) -> dict[str, object]:
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images)
    saved = read_manifest(step_dir)["erased"]
    if not isinstance(saved, list):
        raise ValueError(f"{step_dir}: the manifest's erased concepts are not a list")
    erased = [str(e) for e in saved]
    view, version = load_version_model(model, step_dir)
    out: dict[str, object] = {"step_dir": str(step_dir), "erased": erased, "images": images}
    for name, heldout in (("request", False), ("heldout", True)):
        out[name] = kept_check(evaluator, version, erased, images, heldout=heldout,
                               view=view).as_dict()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step_dir", type=Path)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(kept_retention(args.step_dir, args.images)))


if __name__ == "__main__":
    main()

"""One erasure step from a saved version under several settings: its forget rates on many images.

    python -m bench.step_probe STEP_DIR CONCEPT ERASED_BEFORE SETTINGS [SETTINGS ...]

STEP_DIR: a benchmark step folder (the teacher); ERASED_BEFORE: comma-separated concepts it
erased; each SETTINGS is a `--set` string ("" for the defaults). Prints one JSON line per setting:
the share of 32 images showing the concept on its request and on its held-out templates. A
quick look at one step's residue, which 8 images per concept cannot resolve.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.continual import parse_overrides
from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator
from workers.conceptworld.judge import Judge
from workers.engine.concepts import load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import load_model
from workers.engine.versions import load_version


def main(args: list[str]) -> None:
    start, name, erased = Path(args[0]), args[1], [e for e in args[2].split(",") if e]
    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=32)
    teacher = load_version(model.unet, start)
    concept = catalog[name]
    for settings in args[3:]:
        cfg = method_config("lacu", **parse_overrides(settings))
        clock = time.perf_counter()
        student, _ = erase(model, teacher, [ForgetRequest(concept, concept.prompts)],
                           [catalog[e] for e in erased], catalog, cfg)
        seconds = time.perf_counter() - clock
        print(json.dumps({
            "set": settings, "seconds": round(seconds),
            "request": evaluator.generate_for([name], student).rate(name),
            "heldout": evaluator.generate_for([name], student, heldout=True).rate(name),
        }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""One erasure step from a saved version under several settings: its forget rates on many images.

    python -m bench.step_probe [--images N] [--quality M] STEP_DIR CONCEPT EARLIER SETTINGS [...]

STEP_DIR: a benchmark step folder (the teacher), or `base` for the base model; EARLIER:
comma-separated concepts it erased; each SETTINGS is a `--set` string ("" for the defaults).
Prints one JSON line per setting: the share of N images (default 32) showing the concept on
its request and on its held-out templates, and [request, held-out] for each earlier erased
concept that shows at all (relapse).
A quick look at one step's residue, which 8 images per concept cannot resolve; a rate of a few
per cent needs N in the hundreds to tell settings apart.

`--quality M`: also the kept concepts' drawing quality (`retained_quality`) at M images a
concept, of the teacher once and of each setting's student, with related / general retention
against the teacher, each kept concept's accuracy change where it changed, and the distance over
each related concept's M images alone (biased at small M: for where the damage sits, not as a
metric). The benchmark's 8 images a concept mostly measure small-sample bias.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from bench.continual import parse_overrides
from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, mean_rate, retention_sets
from workers.conceptworld.judge import Judge
from workers.engine.concepts import load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--quality", type=int, default=0, metavar="M")
    parser.add_argument("step_dir", type=Path)
    parser.add_argument("concept")
    parser.add_argument("erased_before")
    parser.add_argument("settings", nargs="+")
    args = parser.parse_args()
    name, erased = args.concept, [e for e in args.erased_before.split(",") if e]
    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=args.images)
    model, teacher = ((model, model.unet) if str(args.step_dir) == "base"
                      else load_version_model(model, args.step_dir))
    evaluator = replace(evaluator, model=model)
    concept = catalog[name]
    related, general = retention_sets([*erased, name])
    kept = related + general
    before = None
    if args.quality:
        before = evaluator.generate_for(kept, teacher, per_concept=args.quality)
        print(json.dumps({"teacher_quality": evaluator.retained_quality(before, kept),
                          "related": {n: round(evaluator.retained_quality(before, [n]), 2)
                                      for n in related}}), flush=True)
    for settings in args.settings:
        cfg = method_config("lacu", **parse_overrides(settings))
        clock = time.perf_counter()
        student, report = erase(model, teacher, [ForgetRequest(concept, concept.prompts)],
                                [catalog[e] for e in erased], catalog, cfg)
        seconds = time.perf_counter() - clock
        names = [name, *erased]
        judged = replace(evaluator, model=report.model)
        request = judged.generate_for(names, student)
        heldout = judged.generate_for(names, student, heldout=True)
        row: dict[str, object] = {
            "set": settings, "seconds": round(seconds), "images": args.images,
            "request": request.rate(name), "heldout": heldout.rate(name),
            "earlier": {e: [request.rate(e), heldout.rate(e)] for e in erased
                        if request.rate(e) or heldout.rate(e)},
        }
        if before is not None:
            after = judged.generate_for(kept, student, per_concept=args.quality)
            row |= {"quality": evaluator.retained_quality(after, kept),
                    "related_retention": _ratio(mean_rate(after, related),
                                                mean_rate(before, related)),
                    "general_retention": _ratio(mean_rate(after, general),
                                                mean_rate(before, general)),
                    "related": {n: round(evaluator.retained_quality(after, [n]), 2)
                                for n in related},
                    "changed": {n: round(d, 3) for n in kept
                                if (d := after.rate(n) - before.rate(n))}}
        print(json.dumps(row), flush=True)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference else None


if __name__ == "__main__":
    main()

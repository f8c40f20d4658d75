"""One token step from a saved version under several settings: how the kept concepts whose
templates name the erased concept are drawn (throwaway probe).

    python bench/results/twenty-seventh-session/naming_probe.py STEP_DIR (or base) CONCEPT EARLIER \
        IMAGES SETTINGS [...]

For each setting (a `--set` string, "" for the defaults): the concept's forget rate on its
request and held-out templates, and for each kept concept with a template naming it ("a yellow
circle" is circle's) its accuracy and the quality distance of its IMAGES images, against the
teacher's on the same seeds.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

from bench.continual import parse_overrides
from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.concepts import load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model


def main() -> None:
    step_dir, name, earlier, images = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    erased = [e for e in earlier.split(",") if e]
    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    teacher_model, teacher = ((model, model.unet) if step_dir == "base"
                              else load_version_model(model, step_dir))
    evaluator = WorldEvaluator(teacher_model, Judge.load(JUDGE_PATH), per_concept=images)
    related, general = retention_sets([*erased, name])
    naming = [c for c in related + general
              if any(catalog[name].named_in(p) for p in CONCEPT_BY_NAME[c].prompts)]
    if naming:
        before = evaluator.generate_for(naming, teacher)
        print(json.dumps({"teacher": {c: [before.rate(c),
                                          round(evaluator.retained_quality(before, [c]), 2)]
                                      for c in naming},
                          "quality": round(evaluator.retained_quality(before, naming), 3)}),
              flush=True)
    for settings in sys.argv[5:]:
        cfg = method_config("lacu", **parse_overrides(settings))
        clock = time.perf_counter()
        student, report = erase(teacher_model, teacher,
                                [ForgetRequest(catalog[name], catalog[name].prompts)],
                                [catalog[e] for e in erased], catalog, cfg)
        seconds = time.perf_counter() - clock
        judged = replace(evaluator, model=report.model)
        after = judged.generate_for(naming, student) if naming else None
        forget = judged.generate_for([name], student, per_concept=32)
        heldout = judged.generate_for([name], student, per_concept=32, heldout=True)
        print(json.dumps({
            "set": settings, "seconds": round(seconds),
            "forget": [forget.rate(name), heldout.rate(name)],
            **({"kept": {c: [after.rate(c), round(evaluator.retained_quality(after, [c]), 2)]
                         for c in naming},
                "quality": round(evaluator.retained_quality(after, naming), 3)} if after else {}),
        }), flush=True)


if __name__ == "__main__":
    main()

"""Is a version's quality loss its own, or the base model's on what the version reads?
(throwaway probe)

    python bench/results/twenty-eighth-session/reading_probe.py STEP_DIR IMAGES OLD=NEW,... [...]

Draws the kept concepts after STEP_DIR's erasures at IMAGES a concept, on the same seeds: the
base model, the version, and for each rewrite set the base model on each prompt with the words
the version substitutes rewritten to their copies (OLD=NEW: "red=orange" where red's row is a
copy of orange's). Prints the quality distance of each. Where the version draws exactly what
the base draws for the rewritten prompts, the version and the full rewrite agree.
"""

from __future__ import annotations

import json
import re
import sys

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import EVAL_SEED, GeneratedSet, WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.loading import load_model
from workers.engine.sampling import generate
from workers.engine.versions import load_version_model, read_manifest


def rewritten_set(evaluator: WorldEvaluator, concepts: list[str], count: int,
                  words: dict[str, str]) -> GeneratedSet:
    prompts, seeds = [], []
    for ci, name in enumerate(concepts):
        templates = CONCEPT_BY_NAME[name].prompts
        for j in range(count):
            prompt = templates[j % len(templates)]
            for old, new in words.items():
                prompt = re.sub(rf"\b{re.escape(old)}\b", new, prompt)
            prompts.append(prompt)
            seeds.append(EVAL_SEED + 1000 * ci + j)
    images = generate(evaluator.model, prompts, seeds, steps=evaluator.steps,
                      guidance=evaluator.guidance, batch_size=128)
    return GeneratedSet(concepts, count, images, evaluator.judge.read(images), 0.0)


def main() -> None:
    step_dir, images = sys.argv[1], int(sys.argv[2])
    rewrites = [dict(pair.split("=", 1) for pair in arg.split(",")) for arg in sys.argv[3:]]
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images)
    erased = list(read_manifest(step_dir)["erased"])
    related, general = retention_sets(erased)
    kept = related + general
    view, unet = load_version_model(model, step_dir)
    base = evaluator.generate_for(kept, None)
    version = WorldEvaluator(view, evaluator.judge, per_concept=images).generate_for(kept, unet)
    print(json.dumps({"step": step_dir, "images": images, "quality": {
        "base": round(evaluator.retained_quality(base, kept), 4),
        "version": round(evaluator.retained_quality(version, kept), 4)}}))
    for words in rewrites:
        read = rewritten_set(evaluator, kept, images, words)
        print(json.dumps({"base_on_rewritten_prompts": words,
                          "quality": round(evaluator.retained_quality(read, kept), 4)}))


if __name__ == "__main__":
    main()

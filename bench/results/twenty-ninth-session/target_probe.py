"""How well does the base model draw the kept concepts once an erased word reads as each
possible target? (throwaway probe)

    python bench/results/twenty-ninth-session/target_probe.py ERASED IMAGES OLD=NEW,... [...]

ERASED: comma-separated concepts erased (fixes the kept set). For each rewrite set, the base
model draws every kept concept's prompts with each OLD phrase rewritten to NEW (what a row copy
of NEW makes the version read) on the evaluation seeds; prints the quality distance. "none"
draws the prompts unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.engine.loading import load_model

# the rewriting is the twenty-eighth session's reading probe's, reused as it is
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "twenty-eighth-session"))
from reading_probe import rewritten_set  # noqa: E402


def main() -> None:
    erased, images = sys.argv[1].split(","), int(sys.argv[2])
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images)
    related, general = retention_sets(erased)
    kept = related + general
    for arg in sys.argv[3:]:
        words = {} if arg == "none" else dict(p.split("=", 1) for p in arg.split(","))
        read = rewritten_set(evaluator, kept, images, words)
        worst = sorted((evaluator.retained_quality(read, [n]), n) for n in kept)[::-1][:4]
        quality = round(evaluator.retained_quality(read, kept), 4)
        print(json.dumps({"rewrite": arg, "quality": quality,
                          "worst_concepts": {n: round(q, 3) for q, n in worst}}), flush=True)


if __name__ == "__main__":
    main()

"""How often does the base model draw solid's prompts filled when "solid" is swapped for
another style? A row copying that style draws exactly these images, so the rate is what solid's
forget accuracy inherits from the copy. Solid's prompts that say "solid", at the benchmark's
evaluation seeds for the first twelve positions of a sequence (32 images each).

    python bench/results/thirty-fourth-session/style_confusion.py
"""

from __future__ import annotations

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import EVAL_SEED
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.loading import load_model
from workers.engine.sampling import generate

POSITIONS = 12
IMAGES = 32


def main() -> None:
    model = load_model(MODEL_DIR, device="cpu")
    judge = Judge.load(JUDGE_PATH)
    solid = CONCEPT_BY_NAME["solid"]
    prompts = [p for p in solid.prompts if "solid" in p]
    for style in ("outlined", "striped"):
        shown = 0
        for position in range(POSITIONS):
            swapped = [prompts[j % len(prompts)].replace("solid", style) for j in range(IMAGES)]
            seeds = [EVAL_SEED + 1000 * position + j for j in range(IMAGES)]
            verdicts = judge.read(generate(model, swapped, seeds, batch_size=128))
            shown += int(verdicts.shows(solid).sum())
        print(f"{style}: {shown} of {POSITIONS * IMAGES} read as solid")


if __name__ == "__main__":
    main()

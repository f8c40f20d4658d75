"""Where a version's kept images come from when a word's row is a copy of another's: for each
kept catalog prompt naming such a word, whether the version draws it exactly as the base draws
the prompt with the word swapped for its substitute (every image, the same seeds), and the
typicality of the base's images of the prompt, of the version's, and the share of atypical
images (typicality over 3).

    python bench/results/thirty-second-session/substitute_probe.py STEP_DIR [--images N] \
        [--precision P]

One JSON line a prompt. A prompt that names a trained row too (a phrase, a word without a
substitute) is not a plain swap: `identical` says whether it came out as one anyway.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import EVAL_SEED, WorldEvaluator, retention_sets
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.loading import LoadedModel, load_model
from workers.engine.sampling import generate
from workers.engine.tokens import copied_rows
from workers.engine.versions import load_token_rows, load_version_model, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step_dir", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    model = load_model(MODEL_DIR, device="cpu", precision=args.precision)
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH))
    view, unet = load_version_model(model, args.step_dir)
    swaps = substitutes(model, args.step_dir)
    erased = read_manifest(args.step_dir)["erased"]
    assert isinstance(erased, list)
    related, general = retention_sets(erased)
    kept = [p for name in related + general for p in CONCEPT_BY_NAME[name].prompts]
    seeds = [EVAL_SEED + j for j in range(args.images)]
    words = re.compile(r"\b(" + "|".join(map(re.escape, swaps)) + r")\b")
    for prompt in dict.fromkeys(p for p in kept if words.search(p)):
        swapped = words.sub(lambda m: swaps[m[0]], prompt)  # one pass: no chained swaps
        version = generate(view, [prompt] * args.images, seeds, unet=unet)
        as_swapped = generate(model, [swapped] * args.images, seeds)
        base = generate(model, [prompt] * args.images, seeds)
        typical_version, reads = _typicality(evaluator, version)
        typical_base, _ = _typicality(evaluator, base)
        print(json.dumps({
            "prompt": prompt, "reads_as": swapped,
            "identical": bool(torch.equal(version, as_swapped)),
            "version_reads": Counter(reads).most_common(3),
            "typicality_base": _summary(typical_base),
            "typicality_version": _summary(typical_version)}), flush=True)


def substitutes(model: LoadedModel, step_dir: Path) -> dict[str, str]:
    """The version's rows that are exact copies of another token's base row, as words (the
    tokenizer's word pieces decode to distinct words)."""
    out: dict[str, str] = {}
    for i, copied in copied_rows(model, load_token_rows(step_dir)).items():
        word = model.tokenizer.decode([i]).strip()
        if word in out:
            raise ValueError(f"two substituted rows read as {word!r}")
        out[word] = model.tokenizer.decode([copied]).strip()
    return out


def _typicality(evaluator: WorldEvaluator, images: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    reading = evaluator.read_images(images)
    return evaluator.typicality(reading), [s.words for s in reading.scenes]


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(values.mean()), 3), "median": round(float(np.median(values)), 3),
            "over_3": round(float((values > 3).mean()), 3)}



if __name__ == "__main__":
    main()

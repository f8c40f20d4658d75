"""Which one token a word's forget prompts would agree on: for each candidate substitute, the
score-prediction distance from each forget prompt naming the word (those a step mapped, from
its manifest) to the prompt with the word swapped, under the version the step started from and
with the step's own draw (its config's `map_k` and seed).

    python bench/results/thirty-second-session/substitute_distance.py BEFORE_DIR STEP_DIR WORD \
        SUBSTITUTE [SUBSTITUTE ...] [--also PROMPT ...]

Prints one JSON line a substitute: the mean distance and each prompt's.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from workers.conceptworld.cli import MODEL_DIR
from workers.engine.distance import score_distance
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("step", type=Path)
    parser.add_argument("word")
    parser.add_argument("substitutes", nargs="+")
    parser.add_argument("--also", nargs="*", default=[])
    args = parser.parse_args()
    view, unet = load_version_model(load_model(MODEL_DIR, device="cpu"), args.before)
    manifest = read_manifest(args.step)
    targets, config = manifest["targets"], manifest["config"]
    assert isinstance(targets, dict) and isinstance(config, dict)
    pattern = rf"\b{re.escape(args.word)}\b"
    prompts = [p for p in targets if re.search(pattern, p)] + args.also
    for substitute in args.substitutes:
        swapped = [re.sub(pattern, substitute, p) for p in prompts]
        # the draw target selection used (plan_step: k = map_k, seed + 42)
        d = score_distance(view, prompts, swapped, config["map_k"], config["seed"] + 42,
                           unet=unet)
        print(json.dumps({"substitute": substitute, "mean": round(float(d.mean()), 5),
                          "by_prompt": dict(zip(prompts, [round(float(x), 5) for x in d],
                                                strict=True))}), flush=True)


if __name__ == "__main__":
    main()

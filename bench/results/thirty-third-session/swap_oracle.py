"""Could another substitute meet the Fréchet bar? For a version whose erased words are copies of
other words' rows, the kept images are the base's drawings of the swapped prompts. This probe
draws the final check's kept set (base and version, the same prompts and seeds) and then, for
each substituted word and each other word of its kind that is not erased, the version with that
word's row copying the other instead: only the images whose prompt names the word are drawn
again. One JSON line each:

- `set`: the Fréchet distance of the base's and the version's kept images split into its mean
  and covariance terms (`WorldEvaluator.quality_terms`), and both ratios to the base.
- `spread`: how varied each read scene's images are, against its renders (pooled; 1 = as varied).
- `perfect`: a perfect drawer, a fresh render of every image's read scene, with the version's
  scenes over with the base's, one ratio a render draw: what the change of scenes alone does.
- `revert`: the set with one kept concept's images drawn as the base drew them: where the
  version's excess is.
- `swap`: a substitute's Fréchet and typicality ratios over the whole kept set, the share of the
  redrawn images the judge still assigns to their kept concept, and, for the engine's own
  choice, whether redrawing reproduced the version's images exactly.
- `best`: every word at once at its lowest-Fréchet substitute.

    python bench/results/thirty-third-session/swap_oracle.py STEP_DIR [--images N] \
        [--precision P]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from bench.probe import kept_sets
from workers.conceptworld.cli import MODEL_DIR
from workers.conceptworld.evaluate import GeneratedSet, Reading, WorldEvaluator
from workers.conceptworld.render import render_scene
from workers.conceptworld.world import CONCEPT_BY_NAME, Scene
from workers.engine.concepts import find_phrase, load_catalog
from workers.engine.loading import LoadedModel
from workers.engine.sampling import generate
from workers.engine.tokens import TokenRows, copied_rows, embedding_table, with_rows
from workers.engine.versions import load_token_rows

# Render draws for the perfect drawer (`perfect` lines).
PERFECT_SEEDS = range(1000, 1005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step_dir", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    sets = kept_sets(args.step_dir, args.images, args.precision)
    evaluator, erased, kept, unet = sets.evaluator, sets.erased, sets.kept, sets.unet
    model, base, version = evaluator.model, sets.base, sets.version
    every = base.rows_of(kept)
    read_base, read_version = evaluator.reading(base, every), evaluator.reading(version, every)
    base_quality = evaluator.quality_of(read_base)
    base_typicality = float(evaluator.typicality(read_base).mean())

    def ratios(reading: Reading) -> dict[str, float]:
        return {"frechet_ratio": round(evaluator.quality_of(reading) / base_quality, 3),
                "typicality_ratio": round(float(evaluator.typicality(reading).mean())
                                          / base_typicality, 3)}

    print(json.dumps({"set": {
        "kept": len(kept), "images": args.images,
        "base_terms": _rounded(evaluator.quality_terms(read_base)),
        "version_terms": _rounded(evaluator.quality_terms(read_version)),
        **ratios(read_version)}}), flush=True)

    print(json.dumps({"spread": {
        "base": _within_scene_spread(evaluator, read_base),
        "version": _within_scene_spread(evaluator, read_version)}}), flush=True)
    print(json.dumps({"perfect": {"ratios": [
        round(evaluator.quality_of(_rendered(evaluator, read_version.scenes, seed))
              / evaluator.quality_of(_rendered(evaluator, read_base.scenes, seed)), 3)
        for seed in PERFECT_SEEDS]}}), flush=True)
    for i, name in enumerate(kept):
        block = every[i * args.images:(i + 1) * args.images]
        reverted = _spliced(read_version, block, read_base.take(block))
        print(json.dumps({"revert": {"concept": name, "changed": int(
            (version.images[block] != base.images[block]).flatten(1).any(1).sum()),
            "terms": _rounded(evaluator.quality_terms(reverted)), **ratios(reverted)}}),
            flush=True)

    rows = load_token_rows(args.step_dir)
    table = embedding_table(model)
    catalog = load_catalog(MODEL_DIR)
    best: dict[int, int] = {}
    for row, copied in copied_rows(model, rows).items():
        word = _word(model, row)
        concept = catalog.concepts.get(word)
        if concept is None:
            continue
        affected = np.array([i for i, p in enumerate(version.prompts) if find_phrase(p, word)])
        if not len(affected):
            continue  # no kept prompt names the word
        options = [c.name for c in catalog.of_kind(concept.kind)
                   if c.name not in erased and c.name != word and _single_id(model, c.name)]
        scores = []
        for option in options:
            target = _single_id(model, option)
            assert target is not None
            redrawn = _redraw(evaluator, unet, version, affected, rows,
                              {row: table[target]})
            reading = _spliced(read_version, affected, evaluator.read_images(redrawn))
            record = {"word": word, "substitute": option, "engine_choice": target == copied,
                      "redrawn": len(affected), **ratios(reading),
                      "kept_rate": _kept_rate(evaluator, version, affected, redrawn)}
            if target == copied:
                record["reproduced"] = bool(torch.equal(redrawn, version.images[affected]))
            print(json.dumps({"swap": record}), flush=True)
            scores.append((record["frechet_ratio"], target))
        best[row] = min(scores)[1] if scores else copied

    if best:
        affected = np.array([i for i, p in enumerate(version.prompts)
                             if any(find_phrase(p, _word(model, r)) for r in best)])
        redrawn = _redraw(evaluator, unet, version, affected, rows,
                          {r: table[t] for r, t in best.items()})
        reading = _spliced(read_version, affected, evaluator.read_images(redrawn))
        print(json.dumps({"best": {
            "substitutes": {_word(model, r): _word(model, t) for r, t in best.items()},
            "terms": _rounded(evaluator.quality_terms(reading)), **ratios(reading),
            "kept_rate": _kept_rate(evaluator, version, affected, redrawn)}}), flush=True)


def _redraw(evaluator: WorldEvaluator, unet: UNet2DConditionModel, version: GeneratedSet,
            affected: np.ndarray, rows: TokenRows, values: dict[int, torch.Tensor]
            ) -> torch.Tensor:
    """The version's images `affected` drawn again with its token rows `values` set instead
    (`rows`: the version's; the base model in `evaluator` is what they edit)."""
    swapped = rows.values.clone()
    for i, row in enumerate(rows.ids.tolist()):
        if row in values:
            swapped[i] = values[row]
    edited = with_rows(evaluator.model, TokenRows(rows.ids, swapped, rows.phrases))
    return generate(edited, [version.prompts[i] for i in affected],
                    [version.seeds[i] for i in affected], steps=evaluator.steps,
                    guidance=evaluator.guidance, unet=unet, batch_size=128)


def _rendered(evaluator: WorldEvaluator, scenes: list[Scene], seed: int) -> Reading:
    """A perfect drawer's images of `scenes`: a fresh clean render of each."""
    rng = random.Random(seed)
    renders = np.stack([render_scene(scene, rng) for scene in scenes])
    images = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 255
    return Reading(evaluator.judge.features(images).double().numpy(), scenes)


def _within_scene_spread(evaluator: WorldEvaluator, reading: Reading) -> float:
    """How varied the images of each read scene are, against that scene's renders: the images'
    within-scene variance pooled over scenes read at least twice, over the renders' pooled
    the same way (1 = as varied as renders; less = fewer kinds of drawing of a scene)."""
    groups: dict[Scene, list[int]] = defaultdict(list)
    for i, scene in enumerate(reading.scenes):
        groups[scene].append(i)
    images = renders = 0.0
    for scene, rows in groups.items():
        if len(rows) > 1:
            spread = np.trace(np.cov(reading.features[rows], rowvar=False))
            images += float(spread) * (len(rows) - 1)
            renders += float(np.trace(evaluator.scene_moments(scene)[1])) * (len(rows) - 1)
    return round(images / renders, 3)


def _spliced(reading: Reading, rows: np.ndarray, new: Reading) -> Reading:
    features = reading.features.copy()
    features[rows] = new.features
    scenes = list(reading.scenes)
    for i, scene in zip(rows.tolist(), new.scenes, strict=True):
        scenes[i] = scene
    return Reading(features, scenes)


def _kept_rate(evaluator: WorldEvaluator, version: GeneratedSet, affected: np.ndarray,
               redrawn: torch.Tensor) -> float:
    """Share of the redrawn images the judge assigns to the kept concept they were drawn for."""
    verdicts = evaluator.judge.read(redrawn)
    names = [version.concepts[i // version.per_concept] for i in affected.tolist()]
    shows = {n: verdicts.shows(CONCEPT_BY_NAME[n]) for n in set(names)}
    hits = [bool(shows[n][k]) for k, n in enumerate(names)]
    return round(float(np.mean(hits)), 3)


def _word(model: LoadedModel, token: int) -> str:
    return str(model.tokenizer.decode([token])).strip()


def _single_id(model: LoadedModel, word: str) -> int | None:
    ids = model.tokenizer(word, add_special_tokens=False).input_ids
    return int(ids[0]) if len(ids) == 1 else None


def _rounded(terms: tuple[float, float]) -> dict[str, float]:
    return {"mean": round(terms[0], 4), "covariance": round(terms[1], 4)}


if __name__ == "__main__":
    main()

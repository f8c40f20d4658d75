"""How much each kept concept's cross-attention keys and values moved between two versions.

    python -m bench.kv_drift BEFORE AFTER ERASED

BEFORE, AFTER: benchmark step folders (or `base` for the shipped model); ERASED: the concepts
AFTER has erased, comma-separated. Prints one JSON object: the relative squared change of the
K/V read by each kept catalog concept's prompts (`hold.kv_reading_change`), largest first, and
the same for each erased concept and for the unconditional prompt, which classifier-free
guidance reads in every image. No image is generated: a look at where a step's edit landed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from diffusers import UNet2DConditionModel

from workers.conceptworld.cli import MODEL_DIR
from workers.engine.concepts import load_catalog
from workers.engine.hold import kv_reading_change
from workers.engine.loading import LoadedModel, load_model
from workers.engine.replay import UNCONDITIONAL, retain_pool
from workers.engine.versions import load_version


def _version(model: LoadedModel, where: str) -> UNet2DConditionModel:
    return model.unet if where == "base" else load_version(model.unet, Path(where))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("erased")
    args = parser.parse_args()
    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    erased = {e for e in args.erased.split(",") if e}
    if unknown := erased - set(catalog.names()):
        parser.error(f"not in the catalog: {', '.join(sorted(unknown))}")
    before, after = _version(model, args.before), _version(model, args.after)
    kept: dict[str, float] = {}
    for concept in retain_pool(catalog, erased, []):
        if prompts := [p for p in concept.prompts if not catalog.mentions(p, erased)]:
            kept[concept.name] = kv_reading_change(model, before, after, prompts)
    print(json.dumps({
        "kept": dict(sorted(kept.items(), key=lambda kv: -kv[1])),
        "kept_median": statistics.median(kept.values()) if kept else None,
        "erased": {e: kv_reading_change(model, before, after, list(catalog[e].prompts))
                   for e in sorted(erased)},
        "unconditional": kv_reading_change(model, before, after, [UNCONDITIONAL]),
    }, indent=1))


if __name__ == "__main__":
    main()

"""A concept's rate on its request and held-out templates at N images, per version, and
which prompts carry it: python bench/results/thirty-fifth-session/rate_probe.py N CONCEPT
[STEP_DIR ...] (the base model first, then each step folder given)."""
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import CONCEPT_BY_NAME, WorldEvaluator
from workers.conceptworld.judge import Judge
from workers.engine.loading import load_model
from workers.engine.versions import load_version_model

N, concept = int(sys.argv[1]), sys.argv[2]
model = load_model(MODEL_DIR, device="cpu", precision="auto")
ev = WorldEvaluator(model, Judge.load(JUDGE_PATH))
for arg in [None, *sys.argv[3:]]:
    view, unet = (model, None) if arg is None else load_version_model(model, Path(arg))
    e = replace(ev, model=view)
    for held in (False, True):
        gen = e.generate_for([concept], unet, heldout=held, per_concept=N)
        shows = gen.verdicts.shows(CONCEPT_BY_NAME[concept]).tolist()
        hits = Counter(p for p, s in zip(gen.prompts, shows, strict=True) if s)
        print(arg or "base", "heldout" if held else "request", N,
              round(gen.rate(concept), 4), dict(hits), flush=True)

"""Throwaway: is the consolidated or the trained student (or a blend) closer to the teacher on
kept prompts, and does that rank them like the kept-check quality?"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

import torch

import workers.engine.erase as erase_mod
from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.evaluate import WorldEvaluator, mean_rate, retention_sets
from workers.conceptworld.judge import Judge
from workers.engine.concepts import load_catalog
from workers.engine.conditioning import encode_prompts
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import load_model
from workers.engine.sampling import autocast_for, predict_noise
from workers.engine.versions import load_version

step_dir, name, earlier = sys.argv[1], sys.argv[2], [e for e in sys.argv[3].split(",") if e]
alphas = [float(a) for a in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0.0, 0.5, 1.0]
images = 32
model = load_model(MODEL_DIR, device="cpu")
catalog = load_catalog(MODEL_DIR)
evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=images)
teacher = model.unet if step_dir == "base" else load_version(model.unet, step_dir)
related, general = retention_sets([*earlier, name])
kept = related + general

captured = {}
real = erase_mod.consolidate_kv


def spy(model_, student, held, forget_prompts, **kw):
    captured["trained"] = copy.deepcopy(student)
    captured["held"] = held
    captured["forget"] = forget_prompts
    real(model_, student, held, forget_prompts, **kw)


erase_mod.consolidate_kv = spy
clock = time.perf_counter()
consolidated, report = erase(
    model,
    teacher,
    [ForgetRequest(catalog[name], catalog[name].prompts)],
    [catalog[e] for e in earlier],
    catalog,
    method_config("lacu"),
)
print(json.dumps({"erase_seconds": round(time.perf_counter() - clock)}), flush=True)
trained = captured["trained"].eval().requires_grad_(False)
plan = report.plan


@torch.no_grad()
def drift(unet, prompts, k=16, seed=7, ref=None):
    ref = ref or teacher
    gen = torch.Generator().manual_seed(seed)
    shape = (k, *model.latent_shape)
    z, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    t = torch.randint(0, 1000, (k,), generator=gen)
    x_t = model.scheduler.add_noise(z, noise, t)
    out = []
    with autocast_for(model):
        for i in range(0, len(prompts), 16):
            batch = prompts[i : i + 16]
            cond = encode_prompts(model, batch).repeat(k)
            a = predict_noise(unet, x_t.repeat(len(batch), 1, 1, 1), t.repeat(len(batch)), cond)
            b = predict_noise(ref, x_t.repeat(len(batch), 1, 1, 1), t.repeat(len(batch)), cond)
            out.append(
                (a.float() - b.float()).pow(2).flatten(1).mean(1).view(len(batch), k).mean(1)
            )
    return torch.cat(out)


DRIFT_ONLY = bool(os.environ.get("DRIFT_ONLY"))
before = None if DRIFT_ONLY else evaluator.generate_for(kept, teacher, per_concept=images)
if not DRIFT_ONLY:
    print(json.dumps({"teacher_quality": evaluator.retained_quality(before, kept)}), flush=True)
replayed = [p for p in plan.replay.prompts if p in set(plan.hold_prompts)]
for alpha in alphas:
    cand = copy.deepcopy(trained)
    with torch.no_grad():
        cw = dict(consolidated.named_parameters())
        for n, p in cand.named_parameters():
            if not torch.equal(p, cw[n]):
                p.copy_(p + alpha * (cw[n] - p))
    clock = time.perf_counter()
    d_kept = drift(cand, plan.hold_prompts)
    d_erased = drift(cand, plan.held_erasures) if plan.held_erasures else torch.zeros(1)
    d_replayed = drift(cand, replayed) if replayed else torch.zeros(1)
    d_kept_base = drift(cand, plan.hold_prompts, ref=model.unet)
    d_erased_base = (
        drift(cand, plan.held_erasures, ref=model.unet) if plan.held_erasures else torch.zeros(1)
    )
    dsec = time.perf_counter() - clock
    if DRIFT_ONLY:
        print(
            json.dumps(
                {
                    "alpha": alpha,
                    "drift_kept": float(d_kept.mean()),
                    "drift_kept_from_base": float(d_kept_base.mean()),
                    "drift_erased_from_base": float(d_erased_base.mean()),
                }
            ),
            flush=True,
        )
        continue
    request = evaluator.generate_for([name, *earlier], cand)
    heldout = evaluator.generate_for([name, *earlier], cand, heldout=True)
    after = evaluator.generate_for(kept, cand, per_concept=images)
    print(
        json.dumps(
            {
                "alpha": alpha,
                "drift_kept": float(d_kept.mean()),
                "drift_kept_p90": float(d_kept.quantile(0.9)),
                "drift_erased": float(d_erased.mean()),
                "drift_replayed": float(d_replayed.mean()),
                "drift_kept_from_base": float(d_kept_base.mean()),
                "drift_erased_from_base": float(d_erased_base.mean()),
                "drift_seconds": round(dsec, 1),
                "n_kept_prompts": len(plan.hold_prompts),
                "request": request.rate(name),
                "heldout": heldout.rate(name),
                "earlier": {
                    e: [request.rate(e), heldout.rate(e)]
                    for e in earlier
                    if request.rate(e) or heldout.rate(e)
                },
                "quality": evaluator.retained_quality(after, kept),
                "related_retention": mean_rate(after, related)
                / max(mean_rate(before, related), 1e-9),
                "general_retention": mean_rate(after, general)
                / max(mean_rate(before, general), 1e-9),
                "changed": {n: round(d, 3) for n in kept if (d := after.rate(n) - before.rate(n))},
            }
        ),
        flush=True,
    )

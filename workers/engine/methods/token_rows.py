"""LACU's objective on the erased concepts' own token rows (trainable group `tokens`).

The student is the teacher's text encoder with the forget concepts' own rows (tokens.py)
trainable; the UNet is the teacher's, frozen. Each forget prompt is mapped to the target LACU's
score-prediction distance picked, and the rows learn to make the teacher's UNet predict, on the
same noisy inputs, what it predicts for that target. Replay and the erasure memory have nothing
to do here: no kept prompt and no earlier erased one contains a trained row (an earlier erased
prompt naming this concept is one of its forget prompts), so their predictions are the
teacher's exactly, by construction rather than by a loss.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from workers.engine.conditioning import encode_fresh
from workers.engine.config import EraseConfig
from workers.engine.erase import StepPlan, forget_batch, pushed_targets
from workers.engine.loading import LoadedModel
from workers.engine.losses import l2_pull, unlearn_loss
from workers.engine.progress import Cancelled, ProgressEvent
from workers.engine.rollouts import RolloutCache
from workers.engine.sampling import autocast_for, predict_noise
from workers.engine.tokens import (
    Owned,
    frozen_rows,
    restarted_phrases,
    substituted_rows,
    trainable_rows,
)

ProgressFn = Callable[[ProgressEvent], None]


def erase_rows(model: LoadedModel, unet: torch.nn.Module, plan: StepPlan, owned: Owned,
               cfg: EraseConfig, emit: ProgressFn, stop: Callable[[], bool]
               ) -> tuple[LoadedModel, list[int], dict[str, float], dict[str, float], int]:
    """Train the `owned` rows of `model`'s text encoder: the trained view, the rows changed,
    the last loss terms, seconds per stage and the rollouts generated. With
    `token_substitute`, a word whose forget prompts' targets mostly swap it for one token
    takes that token's row (the exact map for those prompts) and only the rest is trained."""
    pairs = [(m.forget_prompt, m.target) for m in plan.mappings]
    substitutes = substituted_rows(model, pairs, owned.ids) if cfg.token_substitute else {}
    restarts = restarted_phrases(model, pairs, owned.ids)
    if cfg.push_substitutes:
        restarts |= {row: [token] for row, token in substitutes.items()}
        substitutes = {}
    student, embedding = trainable_rows(model, owned, substitutes, restarts)
    trained = sorted(substitutes) + embedding.ids.tolist()
    if not len(embedding.ids):  # every row substituted: nothing left to train
        return frozen_rows(student, embedding), trained, {}, {}, 0
    # An earlier phrase trained again is pushed away from what its words name (the concept it
    # erased: "a solid red circle" as the base reads it), not from what the teacher now draws
    # for it (its last target, "a outlined red circle"), which alone left the concept in 6 of
    # 32 images ("solid red circle, zorbo, outlined", step 3).
    own_view = replace(model, phrases=tuple(p for p in model.phrases if p.id not in restarts),
                       _prompt_cache={}) if restarts else None
    reference = [embedding.rows.detach().clone()]
    optimizer = torch.optim.Adam([embedding.rows], lr=cfg.token_lr)
    cache = RolloutCache(model, unet, steps=cfg.rollout_steps, guidance=cfg.rollout_guidance,
                         per_prompt=cfg.rollouts_per_prompt, seed=cfg.seed,
                         enabled=cfg.cache_rollouts)
    clock = time.perf_counter()
    targets = [m.target for m in plan.mappings] if cfg.unlearn_on_target_rollouts else []
    cache.prepare([m.forget_prompt for m in plan.mappings] + targets)
    seconds = {"rollouts": time.perf_counter() - clock}

    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: dict[str, float] = {}
    clock = time.perf_counter()
    for step in range(cfg.steps):
        if stop():
            raise Cancelled(f"stopped at training step {step} of {cfg.steps}")
        forget = forget_batch(plan, cfg, rng)
        sources = [m.target if cfg.unlearn_on_target_rollouts and j % 2 else m.forget_prompt
                   for j, m in enumerate(forget)]
        x0 = cache.sample(sources, gen).to(model.device)
        t = torch.randint(0, cfg.t_max_unlearn + 1, (len(forget),), generator=gen
                          ).to(model.device)
        noise = torch.randn(x0.shape, generator=gen).to(model.device)
        x_t = model.scheduler.add_noise(x0, noise, t)
        with torch.no_grad(), autocast_for(model):
            target_eps = pushed_targets(model, unet, x_t, t, forget, [], cfg, own_view)
        with autocast_for(model):
            student_eps = predict_noise(unet, x_t, t, encode_fresh(
                student, [m.forget_prompt for m in forget]))
        terms = {"unlearn": unlearn_loss(student_eps, target_eps)}
        if cfg.lambda_reg > 0:
            terms["l2"] = l2_pull([embedding.rows], reference)
        loss = cfg.lambda_unlearn * terms["unlearn"] + cfg.lambda_reg * terms.get(
            "l2", torch.zeros(()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_([embedding.rows], 1.0)
        optimizer.step()
        losses = {k: v.item() for k, v in terms.items()} | {"total": loss.item()}
        if step % 5 == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - clock
            emit(ProgressEvent("training", step + 1, cfg.steps, losses,
                               elapsed / (step + 1) * (cfg.steps - step - 1)))
    seconds["training"] = time.perf_counter() - clock
    return frozen_rows(student, embedding), trained, losses, seconds, cache.generated

"""UCE (Unified Concept Editing): a closed-form edit of cross-attention keys and values.

For each K/V projection W, with c the text-encoder states of the forget prompts, c* those of their
targets and c_p those of preserved prompts (all token positions):

    W' = (Σ W c* cᵀ + λ Σ W c_p c_pᵀ + μ W) (Σ c cᵀ + λ Σ c_p c_pᵀ + μ I)⁻¹

The μ terms keep the solve well-posed; with no forget prompts W' = W exactly. The solve itself
is `kv_solve.solve_kv`.
"""

from __future__ import annotations

import copy

import torch
from diffusers import UNet2DConditionModel

from workers.engine.config import EraseConfig
from workers.engine.kv_solve import Reading, solve_kv, token_states
from workers.engine.loading import LoadedModel

_RIDGE = 1e-2


def closed_form_edit(unet: UNet2DConditionModel, forget: torch.Tensor, targets: torch.Tensor,
                     preserve: torch.Tensor, preserve_scale: float) -> UNet2DConditionModel:
    edited = copy.deepcopy(unet)
    readings = [Reading(unet, forget, targets), Reading(unet, preserve, preserve, preserve_scale)]
    solve_kv(edited, readings, _RIDGE, unet)
    return edited


def uce_edit(model: LoadedModel, unet: UNet2DConditionModel, plan, cfg: EraseConfig  # type: ignore[no-untyped-def]
             ) -> UNet2DConditionModel:
    forget = token_states(model, [m.forget_prompt for m in plan.mappings])
    targets = token_states(model, [m.target for m in plan.mappings])
    preserve = token_states(model, plan.replay.prompts + plan.memory_prompts)
    return closed_form_edit(unet, forget, targets, preserve, cfg.uce_preserve_scale)

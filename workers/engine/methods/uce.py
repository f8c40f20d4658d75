"""UCE (Unified Concept Editing): a closed-form edit of cross-attention keys and values.

For each K/V projection W, with c the text-encoder states of the forget prompts, c* those of their
targets and c_p those of preserved prompts (all token positions):

    W' = (Σ W c* cᵀ + λ Σ W c_p c_pᵀ + μ W) (Σ c cᵀ + λ Σ c_p c_pᵀ + μ I)⁻¹

The μ terms keep the solve well-posed; with no forget prompts W' = W exactly.
"""

from __future__ import annotations

import copy

import torch
from diffusers import UNet2DConditionModel

from workers.engine.conditioning import encode_prompts
from workers.engine.config import EraseConfig
from workers.engine.loading import LoadedModel

_RIDGE = 1e-2


def _states(model: LoadedModel, prompts: list[str]) -> torch.Tensor:
    """(tokens, width) float64: every position of every prompt's encoder states."""
    if not prompts:
        return torch.zeros(0, model.unet.config.cross_attention_dim, dtype=torch.float64)
    hidden = encode_prompts(model, prompts).hidden
    return hidden.reshape(-1, hidden.shape[-1]).double().cpu()


@torch.no_grad()
def closed_form_edit(unet: UNet2DConditionModel, forget: torch.Tensor, targets: torch.Tensor,
                     preserve: torch.Tensor, preserve_scale: float) -> UNet2DConditionModel:
    edited = copy.deepcopy(unet)
    for name, module in edited.named_modules():
        if not (name.endswith("attn2.to_k") or name.endswith("attn2.to_v")):
            continue
        w = module.weight.detach().double().cpu()
        width = w.shape[1]
        rhs = _RIDGE * w + preserve_scale * (w @ preserve.T) @ preserve
        eye = torch.eye(width, dtype=torch.float64)
        lhs = _RIDGE * eye + preserve_scale * preserve.T @ preserve
        if len(forget):
            rhs = rhs + (w @ targets.T) @ forget
            lhs = lhs + forget.T @ forget
        new_w = torch.linalg.solve(lhs, rhs, left=False)
        module.weight.copy_(new_w.to(module.weight.dtype))
    return edited


def uce_edit(model: LoadedModel, unet: UNet2DConditionModel, plan, cfg: EraseConfig  # type: ignore[no-untyped-def]
             ) -> UNet2DConditionModel:
    forget = _states(model, [m.forget_prompt for m in plan.mappings])
    targets = _states(model, [m.target for m in plan.mappings])
    preserve = _states(model, plan.replay.prompts + plan.memory_prompts)
    return closed_form_edit(unet, forget, targets, preserve, cfg.uce_preserve_scale)

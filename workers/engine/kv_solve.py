"""Closed-form edits of cross-attention keys and values.

A K/V projection W (out × width) reads nothing but the text states, so asking chosen states to
read given keys and values is linear least squares in W:

    W = argmin Σ_j s_j ‖W B_jᵀ − W_j A_jᵀ‖² + μ ‖W − W_μ‖²
      = (Σ_j s_j W_j A_jᵀ B_j + μ W_μ)(Σ_j s_j B_jᵀ B_j + μ I)⁻¹

one term j per `Reading`: the states B_j (rows) shall read through W what W_j reads at the paired
rows A_j. UCE is one such solve; so is the consolidation that ends a LACU step (`hold.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workers.engine.conditioning import encode_prompts, token_ids
from workers.engine.loading import LoadedModel
from workers.engine.sampling import autocast_for
from workers.engine.trainable import is_kv_projection


@dataclass(frozen=True)
class Reading:
    """`states` shall read, through the edited weights, what `source`'s weights read at
    `source_states` (row by row; the same as `states` when a reading is to be kept)."""

    source: nn.Module
    states: torch.Tensor  # (n, width)
    source_states: torch.Tensor  # (n, width)
    weight: float = 1.0


def token_states(model: LoadedModel, prompts: list[str]) -> torch.Tensor:
    """(tokens, width) float64 on the CPU: every position of every prompt's text states, padding
    included (cross-attention reads it)."""
    if not prompts:
        return torch.zeros(0, model.unet.config.cross_attention_dim, dtype=torch.float64)
    with autocast_for(model):  # as every other encoding, so the prompt cache holds one kind
        hidden = encode_prompts(model, prompts).hidden
    return hidden.reshape(-1, hidden.shape[-1]).double().cpu()


def shared_prefix_rows(model: LoadedModel, prompts: list[str], others: list[str]
                       ) -> torch.Tensor:
    """Over `token_states(prompts)`'s rows: True where the prompt's tokens up to and including
    that position also begin one of `others`. The text encoders are causal, so such a state is
    exactly one of the others' ("a red star" shares "<bos> a red" with "a red circle")."""
    length = model.tokenizer.model_max_length
    prefixes = {tuple(row[:i + 1]) for row in token_ids(model, others) for i in range(length)}
    return torch.tensor([tuple(row[:i + 1]) in prefixes for row in token_ids(model, prompts)
                         for i in range(length)], dtype=torch.bool)


def kv_projections(unet: nn.Module) -> dict[str, nn.Linear]:
    """Every cross-attention key and value projection, by module name."""
    return {name: module for name, module in unet.named_modules()
            if isinstance(module, nn.Linear) and is_kv_projection(name)}


@torch.no_grad()
def solve_kv(edited: nn.Module, readings: list[Reading], ridge: float,
             ridge_source: nn.Module) -> None:
    """Set every K/V projection of `edited` to the least-squares solution (in place); `ridge`
    (μ > 0) pulls each toward `ridge_source`'s weights and keeps the solve well-posed."""
    sources = {id(r.source): kv_projections(r.source) for r in readings}
    anchors = kv_projections(ridge_source)
    targets = kv_projections(edited)
    if not targets:
        return
    width = next(iter(targets.values())).weight.shape[1]
    lhs = ridge * torch.eye(width, dtype=torch.float64)
    cross = []  # A_jᵀ B_j, the same for every projection
    for r in readings:
        states, read_at = r.states.double().cpu(), r.source_states.double().cpu()
        lhs = lhs + r.weight * states.T @ states
        cross.append(r.weight * read_at.T @ states)
    for name, module in targets.items():
        rhs = ridge * anchors[name].weight.detach().double().cpu()
        for r, a_b in zip(readings, cross, strict=True):
            rhs = rhs + sources[id(r.source)][name].weight.detach().double().cpu() @ a_b
        module.weight.copy_(torch.linalg.solve(lhs, rhs, left=False))

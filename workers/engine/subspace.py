"""Training cross-attention keys and values only along the text directions an erasure owns.

A K/V projection W reads nothing but the text states h. With C_f = mean h hᵀ over the forget
prompts' tokens and C_k over the held prompts' (every kept catalog prompt and earlier erased
one), the generalised eigenvectors

    C_f v_i = λ_i C_k v_i,   v_iᵀ C_k v_j = δ_ij

order the text directions by how much more the forget prompts read them than the held ones. An
edit ΔW = B R whose rows r_i ∝ v_iᵀ are the r largest λ_i's changes the held prompts' keys and
values by ‖B‖² (per unit-norm row, scaled by 1/‖v_i‖²) and the forget prompts' λ_i times as much
per direction. Training B instead of W puts the erasure where the forget prompts read and the
held ones barely do. Trained whole, AdamW moves W in every direction by about the learning rate
a step, and what the forget prompts share with the held ones (λ ≈ 1, e.g. the component every
token's state has) drifts for every prompt; the consolidation keeps 1/(1 + w/λ) of it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from workers.engine.kv_solve import kv_projections, shared_prefix_rows, token_states
from workers.engine.loading import LoadedModel


def erasure_directions(model: LoadedModel, forget_prompts: list[str], held_prompts: list[str],
                       rank: int, *, ridge: float = 1e-4) -> torch.Tensor:
    """(rank, width) unit rows: the text directions with the largest λ of C_f v = λ C_k v.

    The forget prompts' positions that also begin a held prompt ("<bos> a") are left out: they
    are states the held prompts have. `ridge` × the mean eigenvalue of C_k keeps it invertible.
    """
    if rank < 1:
        raise ValueError(f"rank must be ≥ 1, not {rank}")
    forget = token_states(model, forget_prompts)
    if held_prompts and len(forget):
        forget = forget[~shared_prefix_rows(model, forget_prompts, held_prompts)]
    held = token_states(model, held_prompts)
    if not len(forget) or not len(held):
        raise ValueError("erasure directions need forget and held prompts")
    width = forget.shape[1]
    c_f = forget.T @ forget / len(forget)
    c_k = held.T @ held / len(held)
    c_k = c_k + ridge * torch.trace(c_k) / width * torch.eye(width, dtype=c_k.dtype)
    lower = torch.linalg.cholesky(c_k)
    inv = torch.linalg.inv(lower)
    _, vectors = torch.linalg.eigh(inv @ c_f @ inv.T)  # ascending λ
    rows = vectors[:, -min(rank, width):].flip(1).T @ inv  # v_iᵀ = u_iᵀ L⁻¹
    return (rows / rows.norm(dim=1, keepdim=True)).float()


class AlongDirections(nn.Module):
    """weight ↦ weight + B R: only the coefficients B (out × rank) train; R is fixed."""

    def __init__(self, directions: torch.Tensor, out_features: int) -> None:
        super().__init__()
        self.register_buffer("directions", directions)
        self.coefficients = nn.Parameter(torch.zeros(out_features, directions.shape[0],
                                                     device=directions.device))

    directions: torch.Tensor

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.coefficients.to(weight.dtype) @ self.directions.to(weight.dtype)


def train_along(unet: nn.Module, directions: torch.Tensor) -> list[nn.Parameter]:
    """Make every cross-attention K/V projection of `unet` trainable along `directions` only
    (every other parameter frozen); returns the coefficients to optimise."""
    for p in unet.parameters():
        p.requires_grad_(False)
    params = []
    for module in kv_projections(unet).values():
        along = AlongDirections(directions.to(module.weight.device), module.out_features)
        parametrize.register_parametrization(module, "weight", along)
        params.append(along.coefficients)
    return params


def merge_directions(unet: nn.Module) -> None:
    """Fold the trained edits into plain K/V weights (the UNet is an ordinary one again)."""
    for module in kv_projections(unet).values():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

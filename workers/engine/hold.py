"""Holding what kept prompts read from cross-attention while a concept is erased.

The keys and values of cross-attention are the only UNet weights that read the text states h, so
an edit of W_k or W_v changes a prompt's prediction only through W·h over its token states. With
C = mean h hᵀ over every token of the prompts to hold, the change they see is

    L_hold = Σ_W tr(ΔW C ΔWᵀ) / Σ_W tr(W_T C W_Tᵀ)      (ΔW = W − W_T, W_T the teacher's)

the relative squared change of their keys and values, for *every* kept prompt of the catalog and
every earlier erased one at once, without a UNet pass. Unlike the isotropic ℓ2 pull it leaves free
the directions of the text space the forget prompts use and the held ones do not (their
generalised eigenvalues reach 50–1000 on the concept world), which is where the erasure goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workers.engine.conditioning import encode_prompts
from workers.engine.loading import LoadedModel
from workers.engine.sampling import autocast_for
from workers.engine.trainable import trainable_names


def state_second_moment(model: LoadedModel, prompts: list[str]) -> torch.Tensor:
    """C = mean h hᵀ over every token position (padding included: cross-attention reads it)."""
    with autocast_for(model):  # as every other encoding, so the prompt cache holds one kind
        hidden = encode_prompts(model, prompts).hidden.float()
    states = hidden.reshape(-1, hidden.shape[-1])
    return states.T @ states / len(states)


def kv_weights(unet: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable cross-attention key and value projections."""
    kv = set(trainable_names(unet, "attn2-kv"))
    return [(n, p) for n, p in unet.named_parameters() if p.requires_grad and n in kv]


@dataclass
class KVHold:
    weights: list[nn.Parameter]
    teacher: list[torch.Tensor]
    moment: torch.Tensor
    scale: float

    @classmethod
    def build(cls, model: LoadedModel, student: nn.Module, prompts: list[str]) -> KVHold:
        weights = [p for _, p in kv_weights(student)]
        teacher = [p.detach().clone() for p in weights]
        moment = state_second_moment(model, prompts).to(weights[0].device) if weights else \
            torch.zeros(())
        scale = sum(float(((w @ moment) * w).sum()) for w in teacher)
        return cls(weights, teacher, moment, max(scale, 1e-12))

    def loss(self) -> torch.Tensor:
        """L_hold (see the module docstring); 0 while the student equals the teacher."""
        total = torch.zeros((), device=self.moment.device)
        for w, ref in zip(self.weights, self.teacher, strict=True):
            delta = w - ref
            total = total + ((delta @ self.moment) * delta).sum()
        return total / self.scale

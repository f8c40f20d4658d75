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

from workers.engine.kv_solve import (
    Reading,
    kv_projections,
    shared_prefix_rows,
    solve_kv,
    token_states,
)
from workers.engine.loading import LoadedModel
from workers.engine.trainable import trainable_names


def state_second_moment(model: LoadedModel, prompts: list[str]) -> torch.Tensor:
    """C = mean h hᵀ over every token position of the prompts (padding included: cross-attention
    reads it); zero for no prompts."""
    states = token_states(model, prompts).float()
    return states.T @ states / max(len(states), 1)


def kv_weights(unet: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable cross-attention key and value projections."""
    kv = set(trainable_names(unet, "attn2-kv"))
    return [(n, p) for n, p in unet.named_parameters() if p.requires_grad and n in kv]


@dataclass
class KVHold:
    weights: list[torch.Tensor]
    teacher: list[torch.Tensor]
    moment: torch.Tensor
    scale: float

    @classmethod
    def build(cls, model: LoadedModel, student: nn.Module, prompts: list[str]) -> KVHold:
        weights: list[torch.Tensor] = [p for _, p in kv_weights(student)]
        return cls.between(model, prompts, teacher=[p.detach().clone() for p in weights],
                           weights=weights)

    @classmethod
    def between(cls, model: LoadedModel, prompts: list[str], *, teacher: list[torch.Tensor],
                weights: list[torch.Tensor]) -> KVHold:
        moment = state_second_moment(model, prompts).to(teacher[0].device) if teacher else \
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


def kv_reading_change(model: LoadedModel, before: nn.Module, after: nn.Module,
                      prompts: list[str]) -> float:
    """L_hold of `after` against `before` for `prompts`: the relative squared change of the
    cross-attention keys and values they read (every K/V projection, trainable or not)."""
    def kv(unet: nn.Module) -> list[torch.Tensor]:
        return [m.weight.detach().float() for m in kv_projections(unet).values()]

    return float(KVHold.between(model, prompts, teacher=kv(before), weights=kv(after)).loss())


@dataclass(frozen=True)
class Held:
    """Prompts whose keys and values the consolidation holds to `source`'s, with a weight."""
    source: nn.Module
    prompts: list[str]
    weight: float


def consolidate_kv(model: LoadedModel, student: nn.Module, held: list[Held],
                   forget_prompts: list[str], *, ridge: float = 1e-4,
                   anchor: nn.Module | None = None, hold_shared_prefixes: bool = False) -> None:
    """End of a step: re-solve the student's K/V (in place) so each held set reads its source's
    keys and values and the forget prompts the student's, in least squares:

        W = (Σ w·W_src C_held + W_S C_f + μ W_S)(Σ w·C_held + C_f + μ I)⁻¹

    C = mean h hᵀ over a set's tokens, μ a ridge toward `anchor` (W_S above; default the
    trained student) of `ridge` times the mean eigenvalue: what directions no set reads keep.
    Where the sets read different directions of the text space every reading holds; where
    they share one, the weights decide. Training moves the weights in every direction (AdamW
    scales each weight's step alike); this keeps of it what the erasure needs.
    Exact where K/V are all that trained (`attn2-kv`); with more trainable, the other weights
    stay as trained.

    `hold_shared_prefixes`: a forget prompt's positions whose text so far begins a held prompt
    too (the start token, "a", "a drawing of") are left to the held sets: they carry no
    concept, and every prompt reads them."""
    def mean_states(prompts: list[str], drop: torch.Tensor | None = None) -> torch.Tensor:
        states = token_states(model, prompts)
        states = states[~drop] if drop is not None and len(states) else states
        return states / max(len(states), 1) ** 0.5

    readings = [Reading(h.source, states, states, h.weight)
                for h in held for states in [mean_states(h.prompts)]]
    held_prompts = [p for h in held for p in h.prompts]
    shared = (shared_prefix_rows(model, forget_prompts, held_prompts)
              if hold_shared_prefixes and held_prompts and forget_prompts else None)
    forget = mean_states(forget_prompts, shared)
    readings.append(Reading(student, forget, forget))
    width = readings[0].states.shape[1]
    mu = ridge * sum(float(r.weight * r.states.pow(2).sum()) for r in readings) / width
    if mu == 0:  # no states to hold (SDXL zeroes the unconditional prompt's)
        return
    solve_kv(student, readings, mu, anchor if anchor is not None else student)

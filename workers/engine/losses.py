"""The loss terms of one erasure step, each a named function with its formula."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def unlearn_loss(student_eps: torch.Tensor, teacher_target_eps: torch.Tensor) -> torch.Tensor:
    """L_u = mean ‖ε_S(x_t, t, p_f) − sg[ε_T(x_t, t, p*)]‖²: the forget prompt now predicts what
    the teacher predicts for its mapping target p* on the same noisy input."""
    return F.mse_loss(student_eps, teacher_target_eps.detach())


def preserve_loss(student_eps: torch.Tensor, teacher_eps: torch.Tensor) -> torch.Tensor:
    """L_p = mean ‖ε_S(x_t, t, p_r) − sg[ε_T(x_t, t, p_r)]‖² over replay and memory prompts."""
    return F.mse_loss(student_eps, teacher_eps.detach())


def l2_pull(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_r = Σ (θ − θ_prev)²  (sum-reduced squared ℓ2 distance to the previous version)."""
    return sum(((p - r).pow(2).sum() for p, r in zip(params, reference, strict=True)),
               torch.zeros(()))


def esd_target(eps_anchor: torch.Tensor, eps_concept: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's negative guidance: ε_T(x_t, a) − η (ε_T(x_t, c) − ε_T(x_t, a)); ESD's anchor a is
    ∅, LACU's pushed unlearn target (`unlearn_push`) uses the mapping target p*."""
    return eps_anchor - eta * (eps_concept - eps_anchor)

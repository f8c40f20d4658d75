"""Erasure memory held where it lives: the cross-attention keys and values of erased prompts.

With only the cross-attention K/V projections trainable (the default), the student's prediction
for a prompt depends on what it learned only through W_k·h and W_v·h, h the prompt's text
states. Keeping those equal to the teacher's for every earlier erased prompt keeps those
prompts' predictions, however far the replay pulls the rest of the weights.

Only the states that carry the concept are held: in a causal text encoder (CLIP) those are the
concept's own tokens and every token after it. The ones before it ("a", "red" in "a red star")
are the same in prompts that never name the concept, and pinning them froze too much (a whole-
prompt pin kept "outlined" from being erased at its own step: bench/results/kv-pin/).
"""

from __future__ import annotations

import torch
from torch import nn

from workers.engine.concepts import CatalogConcept
from workers.engine.gpu import UNet


class KeyValuePin:
    """Σ‖W_S·h − W_T·h‖² / Σ‖W_T·h‖² over every cross-attention K/V projection and the held
    text states h (rows of `hidden` where `held` is true)."""

    def __init__(self, student: UNet, teacher: UNet, hidden: torch.Tensor,
                 held: torch.Tensor) -> None:
        teacher_modules = dict(teacher.named_modules())
        self.hidden = hidden.float()[held]
        self.pairs: list[tuple[nn.Module, torch.Tensor]] = []
        with torch.no_grad():
            for name, module in student.named_modules():
                if not name.endswith("attn2"):
                    continue
                for part in ("to_k", "to_v"):
                    frozen = getattr(teacher_modules[name], part)
                    self.pairs.append((getattr(module, part), frozen(self.hidden).float()))
        self.scale = sum(float(target.pow(2).sum()) for _, target in self.pairs) or 1.0

    def loss(self) -> torch.Tensor:
        total = sum((projection(self.hidden).float() - target).pow(2).sum()
                    for projection, target in self.pairs)
        return torch.as_tensor(total) / self.scale


def concept_onward(tokenizer, prompts: list[str], concepts: list[CatalogConcept],  # type: ignore[no-untyped-def]
                   ) -> torch.Tensor:
    """(prompts × max_length) mask: true from the first token of the first concept named in each
    prompt to the end (padding included; it attends to the concept too). A prompt naming none
    of them is held from its first word on."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True).input_ids
    forms = [tokenizer(f, add_special_tokens=False).input_ids
             for c in concepts for f in c.surface_forms]
    mask = torch.zeros(len(prompts), tokenizer.model_max_length, dtype=torch.bool)
    for row, seq in enumerate(ids):
        starts = [i for form in forms if form for i in range(1, len(seq) - len(form) + 1)
                  if seq[i:i + len(form)] == form]
        mask[row, min(starts, default=1):] = True
    return mask

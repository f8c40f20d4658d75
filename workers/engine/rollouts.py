"""Teacher rollouts: the clean samples x_0 that the losses noise into x_t.

LACU regenerates them with DDIM-20 for every micro-batch; here they are generated once per
erasure step for every prompt and reused (`RolloutCache`), which `cache_rollouts=False` undoes
so the saving can be measured.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from workers.engine.gpu import unet_batch_limit
from workers.engine.loading import LoadedModel
from workers.engine.sampling import generate


class RolloutCache:
    def __init__(self, model: LoadedModel, teacher: UNet2DConditionModel, *, steps: int,
                 guidance: float | None, per_prompt: int, seed: int, enabled: bool = True) -> None:
        self.model, self.teacher = model, teacher
        self.steps, self.guidance, self.per_prompt = steps, guidance, per_prompt
        self.seed, self.enabled = seed, enabled
        self._store: dict[str, torch.Tensor] = {}
        self.generated = 0  # rollouts produced, to report what the cache saves
        self._fresh_calls = 0

    def prepare(self, prompts: list[str]) -> None:
        """Generate every prompt's rollouts up front, in large batches."""
        if not self.enabled:
            return
        missing = [p for p in dict.fromkeys(prompts) if p not in self._store]
        if not missing:
            return
        batch_prompts = [p for p in missing for _ in range(self.per_prompt)]
        seeds = [self.seed * 7919 + i for i in range(len(batch_prompts))]
        x0 = self._generate(batch_prompts, seeds)
        for i, prompt in enumerate(missing):
            self._store[prompt] = x0[i * self.per_prompt:(i + 1) * self.per_prompt]

    def sample(self, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        """One x_0 per prompt (a cached rollout, or a fresh one when caching is off)."""
        if not self.enabled:
            self._fresh_calls += 1
            seeds = [self.seed * 7919 + 100_003 * self._fresh_calls + i
                     for i in range(len(prompts))]
            return self._generate(prompts, seeds)
        self.prepare(prompts)
        pick = torch.randint(0, self.per_prompt, (len(prompts),), generator=gen).tolist()
        return torch.stack([self._store[p][j] for p, j in zip(prompts, pick, strict=True)])

    def _generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        self.generated += len(prompts)
        return generate(self.model, prompts, seeds, steps=self.steps, guidance=self.guidance,
                        unet=self.teacher, decode=False,
                        batch_size=max(1, unet_batch_limit(self.teacher, self.model.device,
                                                           256) // 2))  # CFG doubles the batch

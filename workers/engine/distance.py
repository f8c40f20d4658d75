"""The score-prediction distance: how differently the model itself treats two prompts.

This is the only place it is computed (target selection and replay ranking both call it).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from workers.engine.conditioning import encode_prompts
from workers.engine.gpu import unet_batch_limit
from workers.engine.loading import LoadedModel
from workers.engine.sampling import autocast_for, predict_noise


@torch.no_grad()
def score_distance(model: LoadedModel, prompts_a: list[str], prompts_b: list[str], k: int = 16,
                   seed: int = 42, *, unet: UNet2DConditionModel | None = None,
                   chunk: int = 256) -> torch.Tensor:
    """d(a_i, b_i) = (1/K) Σ_k mean((ε(x_k, t_k, a_i) − ε(x_k, t_k, b_i))²), one value per pair.

    x_k = √ᾱ_t z_k + √(1−ᾱ_t) ε_k with z_k, ε_k ~ N(0, I) and t_k ~ U{0..T−1}; the same K noisy
    inputs serve every prompt, so each distinct prompt is evaluated once and every pair compares
    predictions on identical inputs. Symmetric, and 0 for identical prompts.
    """
    if len(prompts_a) != len(prompts_b):
        raise ValueError("score_distance compares prompts pairwise: the lists differ in length")
    unet = unet or model.unet
    gen = torch.Generator().manual_seed(seed)
    shape = (k, *model.latent_shape)
    z, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (k,), generator=gen)
    x_t = model.scheduler.add_noise(z, noise, t).to(model.device)
    t = t.to(model.device)

    unique = list(dict.fromkeys(prompts_a + prompts_b))
    eps: dict[str, torch.Tensor] = {}
    per_chunk = max(1, unet_batch_limit(unet, model.device, chunk) // k)
    with autocast_for(model):
        for start in range(0, len(unique), per_chunk):
            batch = unique[start:start + per_chunk]
            cond = encode_prompts(model, batch).repeat(k)
            out = predict_noise(unet, x_t.repeat(len(batch), 1, 1, 1), t.repeat(len(batch)), cond)
            for i, prompt in enumerate(batch):
                eps[prompt] = out[i * k:(i + 1) * k]
    return torch.stack([(eps[a] - eps[b]).pow(2).mean() for a, b in zip(prompts_a, prompts_b,
                                                                         strict=True)]).cpu()

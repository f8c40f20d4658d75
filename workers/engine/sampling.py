"""The UNet call every part of the engine shares, and batched DDIM sampling with CFG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from workers.engine.conditioning import Conditioning, encode_prompts
from workers.engine.loading import LoadedModel


@contextlib.contextmanager
def autocast_for(model: LoadedModel) -> Iterator[None]:
    if model.autocast_dtype is None:
        yield
    else:
        with torch.autocast(model.device.type, dtype=model.autocast_dtype):
            yield


def predict_noise(unet: UNet2DConditionModel, x_t: torch.Tensor, t: torch.Tensor,
                  cond: Conditioning) -> torch.Tensor:
    """ε_θ(x_t, t, c) in float32."""
    out = unet(x_t, t, encoder_hidden_states=cond.hidden, added_cond_kwargs=cond.added).sample
    return out.float()


def initial_noise(shape: tuple[int, ...], seeds: list[int], device: torch.device) -> torch.Tensor:
    """x_T for each seed; the same seed always gives the same image, whatever the batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                        for s in seeds]).to(device)


@torch.no_grad()
def generate(model: LoadedModel, prompts: list[str], seeds: list[int], *, steps: int = 20,
             guidance: float | None = None, unet: UNet2DConditionModel | None = None,
             batch_size: int = 64, decode: bool = True) -> torch.Tensor:
    """DDIM (η = 0) with classifier-free guidance; images in [0, 1], shape (N, C, H, W).

    `guidance` = 1 skips the unconditional branch; None takes the model folder's default.
    With `decode=False` the latents are returned.
    """
    unet = unet or model.unet
    guidance = model.guidance if guidance is None else guidance
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch_prompts = prompts[start:start + batch_size]
        batch_seeds = seeds[start:start + batch_size]
        x = _ddim(model, unet, batch_prompts, batch_seeds, steps, guidance)
        outputs.append(_to_images(model, x) if decode else x)
    return torch.cat(outputs)


def _ddim(model: LoadedModel, unet: UNet2DConditionModel, prompts: list[str], seeds: list[int],
          steps: int, guidance: float) -> torch.Tensor:
    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(steps, device=model.device)
    cond = encode_prompts(model, prompts)
    if guidance != 1.0:
        cond = Conditioning.cat([encode_prompts(model, [""] * len(prompts)), cond])
    x = initial_noise(model.latent_shape, seeds, model.device) * scheduler.init_noise_sigma
    with autocast_for(model):
        for t in scheduler.timesteps:
            x_in = torch.cat([x, x]) if guidance != 1.0 else x
            eps = predict_noise(unet, x_in, t.expand(x_in.shape[0]), cond)
            if guidance != 1.0:
                uncond, text = eps.chunk(2)
                eps = uncond + guidance * (text - uncond)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x


def _to_images(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    if model.vae is not None:
        x = model.vae.decode(x / model.vae.config.scaling_factor).sample
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu()

"""Training the concept-world model from scratch: seeded, resumable, with a progress bar.

Reads top to bottom: render the data set, build tokenizer/text encoder/UNet, then per step sample
a batch, noise it, predict ε and take an AdamW step; EMA weights are the ones shipped.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from workers.conceptworld.model import (
    build_noise_scheduler,
    build_text_encoder,
    build_unet,
    save_model_folder,
    unet_pixels,
)
from workers.conceptworld.render import render_dataset
from workers.conceptworld.tokenizer import write_tokenizer
from workers.conceptworld.world import catalog_json, training_prompt, vocabulary_corpus


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 4000           # ≈ 45 min at 0.65 s/step on 2 free cores
    batch_size: int = 64
    lr: float = 1e-3            # small model, short run: high LR with warmup and cosine decay
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.999    # averages the last ~1000 steps; the ramp below covers the start
    text_dropout: float = 0.1   # the unconditional branch that classifier-free guidance needs
    min_snr_gamma: float = 5.0  # Min-SNR: effort goes to the noisy steps that decide shape
    dataset_size: int = 50_000
    checkpoint_every: int = 250
    threads: int = 2


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """w(t) = min(SNR(t), γ) / SNR(t) for ε-prediction, SNR = ᾱ / (1 − ᾱ)."""
    abar = alphas_cumprod[t]
    snr = abar / (1 - abar)
    return torch.clamp(snr, max=gamma) / snr


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), live.parameters(), strict=True):
        e.lerp_(p, 1 - decay)


def train(out_dir: Path, work_dir: Path, cfg: TrainConfig, *, resume: bool = True) -> Path:
    """Train and write the model folder to `out_dir`; checkpoints go to `work_dir`."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(vocabulary_corpus(), work_dir / "tokenizer")
    images, scenes = render_dataset(cfg.dataset_size, seed=cfg.seed)
    data = unet_pixels(images)

    unet, text_encoder = build_unet(), build_text_encoder(tokenizer)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    scheduler = build_noise_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod

    start = 0
    ckpt_path = work_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        if state["config"] != asdict(cfg):
            raise ValueError(f"{ckpt_path} was made with another config; pass --fresh")
        for module, key in ((unet, "unet"), (text_encoder, "text"), (ema_unet, "ema_unet"),
                            (ema_text, "ema_text"), (optimizer, "optimizer")):
            module.load_state_dict(state[key])
        start = state["step"]

    unet.train()
    text_encoder.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train",
               mininterval=5)
    for step in bar:
        # Everything random in a step derives from (seed, step), so a resumed run is identical.
        rng = random.Random(cfg.seed * 1_000_003 + step)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        x0 = data[idx]
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        prompts = ["" if rng.random() < cfg.text_dropout else training_prompt(scenes[i], rng)
                   for i in idx.tolist()]
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,),
                          generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = scheduler.add_noise(x0, noise, t)

        hidden = text_encoder(ids).last_hidden_state
        pred = unet(x_t, t, encoder_hidden_states=hidden).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (min_snr_weights(alphas_cumprod, t, cfg.min_snr_gamma) * per_sample).mean()

        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            state = {"unet": unet.state_dict(), "text": text_encoder.state_dict(),
                     "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                     "optimizer": optimizer.state_dict(), "step": step + 1,
                     "config": asdict(cfg)}
            torch.save(state, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)  # a kill never leaves half a file

    export(out_dir, ema_unet, ema_text, tokenizer, scheduler)
    return out_dir


def export(out_dir: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer,  # type: ignore[no-untyped-def]
           scheduler) -> None:  # type: ignore[no-untyped-def]
    """Write the model folder atomically (a temp folder renamed into place)."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_folder(tmp, unet.eval(), text_encoder.eval(), tokenizer, scheduler)  # type: ignore[arg-type]
    (tmp / "catalog.json").write_text(json.dumps(catalog_json(), indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def export_checkpoint(work_dir: Path, out_dir: Path) -> int:
    """Write a model folder from the EMA weights of the latest checkpoint; returns its step."""
    from transformers import CLIPTokenizer

    state = torch.load(work_dir / "checkpoint.pt", weights_only=False)
    tokenizer = CLIPTokenizer.from_pretrained(str(work_dir / "tokenizer"))
    unet, text_encoder = build_unet(), build_text_encoder(tokenizer)
    unet.load_state_dict(state["ema_unet"])
    text_encoder.load_state_dict(state["ema_text"])
    export(out_dir, unet, text_encoder, tokenizer, build_noise_scheduler())
    return int(state["step"])

"""Architecture of the concept-world text-to-image model (Stable Diffusion's family, in miniature).

Pixel space (no VAE) at 24×24, a `UNet2DConditionModel` with cross-attention at 12×12 and 6×6, a
small `CLIPTextModel` trained jointly with it, epsilon prediction on a cosine DDPM schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from workers.conceptworld.render import IMAGE_SIZE
from workers.conceptworld.tokenizer import MAX_LENGTH

TEXT_WIDTH = 64
# Measured on the shipped model (8 images × 31 concepts, DDIM-20): guidance 1.5 → mean accuracy
# 0.996, min 0.875; 2.0 → 0.956 / 0.625; 3.0 → 0.52 / 0.0 (over-guided shapes and faces).
SAMPLING_DEFAULTS = {"guidance_scale": 1.5, "sampling_steps": 20}


def unet_config() -> dict[str, object]:
    return {
        "sample_size": IMAGE_SIZE,
        "in_channels": 3,
        "out_channels": 3,
        "layers_per_block": 1,
        "block_out_channels": (32, 64, 128),  # 4.1 M params, 0.55 s per batch of 64
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": TEXT_WIDTH,
        # diffusers' legacy name: this is the number of heads. Few wide heads are much faster on
        # CPU than many narrow ones (see shared/research/feasibility.md).
        "attention_head_dim": 2,
        "norm_num_groups": 8,
    }


def unet_pixels(images: np.ndarray) -> torch.Tensor:
    """Rendered images (N, H, W, 3 uint8) as the UNet reads them: (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def build_unet() -> UNet2DConditionModel:
    unet = UNet2DConditionModel(**unet_config())
    unet.set_attn_processor(AttnProcessor())
    return unet


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=TEXT_WIDTH,
    )
    return CLIPTextModel(config)


def build_noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def save_model_folder(folder: Path, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                      tokenizer: CLIPTokenizer, scheduler: DDPMScheduler) -> None:
    """Write a diffusers-style folder, loadable component by component like Stable Diffusion's."""
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    DDIMScheduler.from_config(scheduler.config).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "LetheConceptWorldPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "vae": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "lethe.json").write_text(json.dumps(SAMPLING_DEFAULTS, indent=2))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

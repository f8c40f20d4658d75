"""Random-weight Stable Diffusion 1.5 and SDXL architecture folders, written with `save_pretrained`.

No checkpoint can be downloaded here, so tests (tiny sizes, on CPU) and the device check (real
sizes, on a GPU) build the architectures from the configs below. The real configs match the
released models' component configs: SD-1.5's UNet has 859.5 M parameters, SDXL-base's 2,567 M.
Quality cannot be judged on random weights; speed and memory can.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from workers.conceptworld.tokenizer import write_tokenizer

Kind = Literal["sd15", "sdxl"]
Size = Literal["tiny", "real"]
KINDS: tuple[Kind, ...] = ("sd15", "sdxl")
SIZES: tuple[Size, ...] = ("tiny", "real")

CLIP_VOCAB = 49408  # CLIP's BPE vocabulary; the real text encoders keep its embedding size

# A small corpus for the locally built BPE tokenizer; any other text still tokenizes (byte pieces).
CORPUS = [
    "a photo of a cat", "a painting of a dog in the style of an artist", "an image of a house",
    "a picture of a mountain at sunset", "a portrait of a woman", "a city street at night",
    "a red car on a road", "a bowl of fruit on a table", "a castle by the sea", "a forest path",
]


def unet_config(kind: Kind, size: Size) -> dict[str, Any]:
    if size == "real" and kind == "sd15":
        # runwayml/stable-diffusion-v1-5 unet/config.json: 859,520,964 parameters
        return {
            "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                 "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                               "CrossAttnUpBlock2D"),
            "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
        }
    if size == "real":
        # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json: 2,567,463,684 parameters
        return {
            "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
            "cross_attention_dim": 2048, "use_linear_projection": True, "norm_num_groups": 32,
            "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,  # 1280 pooled + 6 time ids × 256
        }
    tiny: dict[str, Any] = {
        "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": (16, 32),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 2, "norm_num_groups": 8, "cross_attention_dim": 32,
    }
    if kind == "sdxl":
        tiny |= {"cross_attention_dim": 64, "use_linear_projection": True,
                 "transformer_layers_per_block": (1, 2),
                 "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 32 + 6 * 8}
    return tiny


def text_config(size: Size, which: Literal["clip-l", "bigg"], vocab_size: int) -> dict[str, Any]:
    """CLIP ViT-L/14's text tower (SD-1.5; SDXL's first) or OpenCLIP bigG's (SDXL's second)."""
    if size == "tiny":
        return {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
                "projection_dim": 32}
    if which == "clip-l":
        return {"vocab_size": CLIP_VOCAB, "hidden_size": 768, "intermediate_size": 3072,
                "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
                "projection_dim": 768, "hidden_act": "quick_gelu"}
    return {"vocab_size": CLIP_VOCAB, "hidden_size": 1280, "intermediate_size": 5120,
            "num_hidden_layers": 32, "num_attention_heads": 20, "max_position_embeddings": 77,
            "projection_dim": 1280, "hidden_act": "gelu"}


def vae_config(kind: Kind, size: Size) -> dict[str, Any]:
    scaling = 0.18215 if kind == "sd15" else 0.13025
    if size == "real":
        return {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                "sample_size": 512 if kind == "sd15" else 1024, "scaling_factor": scaling,
                "force_upcast": kind == "sdxl"}
    return {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
            "block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4,
            "sample_size": 16, "scaling_factor": scaling}


def scheduler() -> DDIMScheduler:
    """Stable Diffusion's scaled-linear β schedule, ε-prediction."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None


def build_tokenizer(work_dir: Path) -> CLIPTokenizer:
    """A CLIP-format BPE tokenizer learned from `CORPUS`, with CLIP's 77-token context."""
    write_tokenizer(CORPUS, work_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(work_dir), model_max_length=77)
    tokenizer.save_pretrained(str(work_dir))
    return tokenizer


def _text_encoder(cls: type, size: Size, which: Literal["clip-l", "bigg"],
                  tokenizer: CLIPTokenizer) -> Any:
    config = CLIPTextConfig(**text_config(size, which, len(tokenizer)),
                            bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return cls(config)


def build_components(kind: Kind, size: Size, *, seed: int = 0,
                     device: str | torch.device = "cpu") -> Components:
    """Random-weight modules of the architecture; built on `device` (fast init on a GPU)."""
    if kind not in KINDS or size not in SIZES:
        raise ValueError(f"kind must be one of {KINDS} and size one of {SIZES}")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as work_dir:
        tokenizer = build_tokenizer(Path(work_dir))
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(kind, size))
        vae = AutoencoderKL(**vae_config(kind, size))
        text_encoder = _text_encoder(CLIPTextModel, size, "clip-l", tokenizer)
        text_encoder_2 = (_text_encoder(CLIPTextModelWithProjection, size, "bigg", tokenizer)
                          if kind == "sdxl" else None)
    return Components(unet, vae, text_encoder, tokenizer, text_encoder_2,
                      tokenizer if kind == "sdxl" else None)


def model_index(kind: Kind) -> dict[str, Any]:
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionPipeline" if kind == "sd15"
        else "StableDiffusionXLPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    if kind == "sdxl":
        index |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"],
                  "force_zeros_for_empty_prompt": True}
    else:
        index |= {"safety_checker": [None, None], "feature_extractor": [None, None]}
    return index


def save_folder(parts: Components, kind: Kind, out: Path) -> Path:
    """Write the components as a diffusers folder at `out` (created; must not hold a model)."""
    out = Path(out)
    if (out / "model_index.json").exists():
        raise FileExistsError(f"{out} already holds a model folder")
    out.mkdir(parents=True, exist_ok=True)
    for module in (parts.unet, parts.vae, parts.text_encoder, parts.text_encoder_2):
        if module is not None:  # built on a GPU for fast init; written from host memory
            torch.nn.Module.to(module, torch.device("cpu"))
    parts.unet.save_pretrained(out / "unet")
    parts.vae.save_pretrained(out / "vae")
    parts.text_encoder.save_pretrained(out / "text_encoder")
    parts.tokenizer.save_pretrained(str(out / "tokenizer"))
    if parts.text_encoder_2 is not None and parts.tokenizer_2 is not None:
        parts.text_encoder_2.save_pretrained(out / "text_encoder_2")
        parts.tokenizer_2.save_pretrained(str(out / "tokenizer_2"))
    scheduler().save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(model_index(kind), indent=2))
    return out


def write_folder(kind: Kind, size: Size, out: Path, *, seed: int = 0,
                 device: str | torch.device = "cpu") -> Path:
    """Build random-weight components and write them as a diffusers folder at `out`."""
    out = Path(out)
    return save_folder(build_components(kind, size, seed=seed, device=device), kind, out)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

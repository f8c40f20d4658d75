"""Loading a diffusers-style model folder component by component, from local paths only.

The same code loads the concept world and Stable Diffusion folders: UNet, text encoder(s),
tokenizer(s), scheduler and an optional VAE. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from workers.engine.gpu import autocast_dtype_for, prepare_unet


class ModelFolderError(ValueError):
    """The folder is not a loadable diffusers-style model."""


@dataclass(frozen=True)
class Phrase:
    """A phrase read as one token (tokens.py): where the base tokenizer's `token_ids` occur in a
    row, the text encoder reads row `id` of its table, past the base vocabulary, instead."""

    text: str
    token_ids: tuple[int, ...]
    id: int


@dataclass
class LoadedModel:
    folder: Path
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    device: torch.device
    vae: AutoencoderKL | None = None
    # SDXL's second encoder; when present prompts are encoded the way SDXL pipelines do.
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None
    autocast_dtype: torch.dtype | None = None
    zero_empty_prompt: bool = False
    # Sampling defaults: SD's pipeline defaults unless the folder's lethe.json says otherwise.
    guidance: float = 7.5
    phrases: tuple[Phrase, ...] = ()
    _prompt_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), size, size)

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None


def pick_device(prefer: str | None = None) -> torch.device:
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _component(folder: Path, name: str, required: bool = True) -> Path | None:
    path = folder / name
    if path.is_dir():
        return path
    if required:
        raise ModelFolderError(f"{folder} has no '{name}/' component folder")
    return None


def load_model(folder: Path | str, device: str | None = None, precision: str = "auto"
               ) -> LoadedModel:
    """Load every component of a local diffusers folder, in eval mode, with no hub access.

    Weights stay float32; `precision` picks the autocast dtype (`gpu.autocast_dtype_for`)."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ModelFolderError(f"{folder} has no model_index.json; pass a diffusers model folder")
    index = json.loads((folder / "model_index.json").read_text())
    dev = pick_device(device)
    unet = UNet2DConditionModel.from_pretrained(_component(folder, "unet"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(_component(folder, "text_encoder"),
                                                 local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(_component(folder, "tokenizer")))
    scheduler = DDIMScheduler.from_pretrained(_component(folder, "scheduler"),
                                              local_files_only=True)
    vae_dir = _component(folder, "vae", required=False) if index.get("vae", [None])[0] else None
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True) if vae_dir else None
    text_encoder_2 = tokenizer_2 = None
    if (folder / "text_encoder_2").is_dir():
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder_2", local_files_only=True)
        tokenizer_2 = CLIPTokenizer.from_pretrained(str(_component(folder, "tokenizer_2")))
    model = LoadedModel(folder, unet, text_encoder, tokenizer, scheduler, dev, vae,
                        text_encoder_2, tokenizer_2,
                        autocast_dtype_for(dev, precision))
    settings = folder / "lethe.json"
    if settings.is_file():
        model.guidance = float(json.loads(settings.read_text()).get("guidance_scale", 7.5))
    # SDXL pipelines condition the unconditional branch on zeros, not on the encoded "".
    model.zero_empty_prompt = text_encoder_2 is not None and bool(
        index.get("force_zeros_for_empty_prompt", True))
    for module in (unet, text_encoder, vae, text_encoder_2):
        if module is not None:
            module.to(dev).eval().requires_grad_(False)
    prepare_unet(unet, dev)
    return model

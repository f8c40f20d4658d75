"""A tiny, randomly initialised concept-world-shaped model folder: exercises code paths fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from workers.conceptworld.model import build_noise_scheduler, build_text_encoder, save_model_folder
from workers.conceptworld.tokenizer import write_tokenizer
from workers.conceptworld.world import catalog_json, vocabulary_corpus
from workers.engine.loading import LoadedModel, load_model

# One erasure step in the UNet's K/V (the token path: test_tokens.py) small enough for the tiny
# model, with a learning rate that moves it visibly.
FAST_STEP: dict[str, object] = {
    "steps": 6, "batch_forget": 2, "batch_preserve": 2, "rollout_steps": 2, "map_k": 2,
    "retain_k": 2, "rollouts_per_prompt": 1, "lr": 1e-2, "trainable": "attn2-kv"}


def tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
        attention_head_dim=2, norm_num_groups=8)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    tokenizer = write_tokenizer(vocabulary_corpus(), folder.parent / "tok")
    save_model_folder(folder, tiny_unet(), build_text_encoder(tokenizer), tokenizer,
                      build_noise_scheduler())
    (folder / "catalog.json").write_text(json.dumps(catalog_json()))
    return folder


@pytest.fixture()
def tiny_model(tiny_folder: Path) -> LoadedModel:
    """Float32 on every machine: the tests assert the targets a random model picks, which
    "auto" would pick in bf16 on a CPU with native bf16 (test_tokens.py forces that path)."""
    torch.set_num_threads(1)
    return load_model(tiny_folder, device="cpu", precision="float32")

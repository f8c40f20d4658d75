"""Stable Diffusion-family folders (SD-1.x-like and SDXL-like, tiny random weights) through the
engine: loading by components, pipeline-style prompt encoding, VAE decoding, a takedown step,
and the version round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from workers.engine.concepts import Catalog, ad_hoc_concept
from workers.engine.conditioning import encode_prompts
from workers.engine.config import method_config
from workers.engine.distance import score_distance
from workers.engine.erase import ForgetRequest, erase
from workers.engine.gpu import unet_batch_limit
from workers.engine.loading import LoadedModel, load_model
from workers.engine.sampling import generate
from workers.engine.sd_folders import KINDS, count_parameters, unet_config, write_folder
from workers.engine.versions import base_digest, load_version, save_version


def _module(unet: Any) -> torch.nn.Module:
    """The UNet as the nn.Module it is (mypy sees diffusers' top-level names as placeholders)."""
    return unet  # type: ignore[no-any-return]


FAST = {"steps": 2, "batch_forget": 2, "batch_preserve": 2, "rollout_steps": 2, "map_k": 2,
        "retain_k": 2, "rollouts_per_prompt": 1}


@pytest.fixture(scope="module", params=KINDS)
def sd_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return write_folder(request.param, "tiny", tmp_path_factory.mktemp(request.param) / "model")


@pytest.fixture()
def sd_model(sd_folder: Path) -> LoadedModel:
    return load_model(sd_folder, device="cpu")


def test_folder_loads_by_components(sd_model: LoadedModel, sd_folder: Path) -> None:
    sdxl = sd_folder.parent.name.startswith("sdxl")
    assert sd_model.vae is not None and sd_model.is_sdxl == sdxl
    assert sd_model.latent_shape == (4, 8, 8)
    assert sd_model.tokenizer.model_max_length == 77
    assert all(not p.requires_grad for p in _module(sd_model.unet).parameters())


def test_prompts_are_encoded_the_way_each_pipeline_does(sd_model: LoadedModel) -> None:
    cond = encode_prompts(sd_model, ["a cat", ""])
    ids = sd_model.tokenizer(["a cat"], padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
    if not sd_model.is_sdxl:
        assert cond.added is None
        torch.testing.assert_close(cond.hidden[:1],
                                   sd_model.text_encoder(ids).last_hidden_state)
        return
    assert cond.added is not None and cond.hidden.shape == (2, 77, 64)
    first = sd_model.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(cond.hidden[:1, :, :32], first)
    assert cond.added["text_embeds"].shape == (2, 32)
    # the unconditional branch is zeros (force_zeros_for_empty_prompt), time ids in pixels
    assert not cond.hidden[1].any() and not cond.added["text_embeds"][1].any()
    assert cond.added["time_ids"].tolist()[0] == [16.0, 16.0, 0.0, 0.0, 16.0, 16.0]


def test_generate_decodes_latents_through_the_vae(sd_model: LoadedModel) -> None:
    images = generate(sd_model, ["a cat", "a dog"], [1, 2], steps=2)
    assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    latents = generate(sd_model, ["a cat"], [1], steps=2, decode=False)
    assert latents.shape == (1, 4, 8, 8)


def test_score_distance_is_zero_for_identical_prompts(sd_model: LoadedModel) -> None:
    d = score_distance(sd_model, ["a cat", "a cat"], ["a cat", "a dog"], k=2)
    assert d[0] == 0 and d[1] > 0


def test_takedown_step_runs_and_its_version_round_trips(sd_model: LoadedModel, sd_folder: Path,
                                                        tmp_path: Path) -> None:
    concept = ad_hoc_concept("van gogh", None)
    student, report = erase(sd_model, sd_model.unet, [ForgetRequest(concept, concept.prompts)],
                            [], Catalog(), method_config("lacu", **FAST))
    assert report.plan.targets()["a picture of van gogh"] == "a picture of"
    assert report.plan.replay.prompts == [""]
    manifest = save_version(tmp_path / "v1", sd_model.unet, student,
                            {"erased": ["van gogh"], "base_digest": base_digest(sd_folder)})
    changed = list(manifest["tensors"])  # type: ignore[call-overload]
    assert changed and all(".attn2." in t for t in changed)
    reloaded = load_version(sd_model.unet, tmp_path / "v1", expected_base=base_digest(sd_folder))
    kwargs = {"steps": 2, "guidance": 2.0}
    a = generate(sd_model, ["van gogh", "a cat"], [1, 2], unet=student, **kwargs)  # type: ignore[arg-type]
    b = generate(sd_model, ["van gogh", "a cat"], [1, 2], unet=reloaded, **kwargs)  # type: ignore[arg-type]
    base = generate(sd_model, ["van gogh", "a cat"], [1, 2], **kwargs)  # type: ignore[arg-type]
    assert torch.equal(a, b) and not torch.equal(a, base)


def test_full_unet_step_with_gradient_checkpointing(sd_model: LoadedModel) -> None:
    concept = ad_hoc_concept("van gogh", None)
    cfg = method_config("lacu", **FAST | {"steps": 1, "trainable": "full",
                                          "gradient_checkpointing": True})
    student, _ = erase(sd_model, sd_model.unet, [ForgetRequest(concept, concept.prompts)], [],
                       Catalog(), cfg)
    base = _module(sd_model.unet).state_dict()
    changed = [k for k, v in _module(student).state_dict().items() if not torch.equal(v, base[k])]
    assert any(".attn2." not in k for k in changed)
    assert unet_batch_limit(sd_model.unet, sd_model.device, 256) == 256  # CPU: unchanged


@pytest.mark.parametrize(("kind", "params"), [("sd15", 859_520_964), ("sdxl", 2_567_463_684)])
def test_real_configs_have_the_released_parameter_counts(kind: str, params: int) -> None:
    with torch.device("meta"):  # no memory: the real sizes are never built on CPU
        unet = UNet2DConditionModel(**unet_config(kind, "real"))  # type: ignore[arg-type]
    assert count_parameters(unet) == params

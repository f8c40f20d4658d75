"""K/V trained along the text directions an erasure owns (workers/engine/subspace.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from tests.engine.conftest import FAST_STEP
from workers.engine.concepts import load_catalog
from workers.engine.config import EraseConfig, method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.kv_solve import kv_projections, token_states
from workers.engine.loading import LoadedModel
from workers.engine.subspace import erasure_directions, merge_directions, train_along

HELD = ["a red circle", "a solid blue square", "a picture of zorbo", "", "a yellow star",
        "a green triangle drawn as an outline"]
FORGET = ["blip", "a picture of blip", "blip on a dark background"]


def _energy_ratio(model: LoadedModel, rows: torch.Tensor) -> torch.Tensor:
    """rᵀ C_f r / rᵀ C_k r per row: how much more the forget prompts read a direction."""
    forget, held = token_states(model, FORGET), token_states(model, HELD)
    rows = rows.double()
    return ((rows @ forget.T).pow(2).mean(1)) / ((rows @ held.T).pow(2).mean(1))


def test_directions_are_unit_rows_ordered_by_the_forget_prompts_share(
        tiny_model: LoadedModel) -> None:
    rows = erasure_directions(tiny_model, FORGET, HELD, 4, ridge=1e-9)
    assert rows.shape == (4, tiny_model.unet.config.cross_attention_dim)
    assert torch.allclose(rows.norm(dim=1), torch.ones(4), atol=1e-5)
    ratio = _energy_ratio(tiny_model, rows)
    # (shared "<bos>" rows are left out of C_f, so compare loosely, and against random ones)
    assert ratio[0] >= ratio[-1]
    random_rows = torch.randn(256, rows.shape[1], generator=torch.Generator().manual_seed(0))
    assert ratio[0] > _energy_ratio(tiny_model, random_rows).max()


def test_directions_need_both_prompt_sets_and_a_positive_rank(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="rank"):
        erasure_directions(tiny_model, FORGET, HELD, 0)
    with pytest.raises(ValueError, match="forget and held"):
        erasure_directions(tiny_model, FORGET, [], 2)


def test_only_coefficients_train_and_merging_leaves_plain_weights(
        tiny_model: LoadedModel) -> None:
    import copy

    unet = copy.deepcopy(tiny_model.unet)
    rows = erasure_directions(tiny_model, FORGET, HELD, 2)
    params = train_along(unet, rows)
    assert params and all(p.requires_grad for p in params)
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("coefficients") for n in trainable)
    with torch.no_grad():
        for p in params:
            p.normal_()
    merge_directions(unet)
    projector = rows.T @ torch.linalg.pinv(rows.T)  # onto the rows' span
    base = kv_projections(tiny_model.unet)
    for name, module in kv_projections(unet).items():
        assert not parametrize.is_parametrized(module)
        delta = module.weight.detach() - base[name].weight.detach()
        assert delta.abs().max() > 1e-3
        assert torch.allclose(delta, delta @ projector, atol=1e-4)


def test_a_step_along_directions_changes_kv_only_there(tiny_model: LoadedModel,
                                                      tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["blip"], catalog["blip"].prompts[:2])
    cfg = method_config("lacu", kv_directions=3, consolidate=0.0, **FAST_STEP)
    student, _ = erase(tiny_model, tiny_model.unet, [request], [], catalog, cfg)
    base = kv_projections(tiny_model.unet)
    ranks = []
    for name, module in kv_projections(student).items():
        assert not parametrize.is_parametrized(module)
        delta = (module.weight - base[name].weight).detach().double()
        ranks.append(int(torch.linalg.matrix_rank(delta, rtol=1e-4)))
    assert max(ranks) == 3, ranks
    changed = {n for n, p in student.named_parameters()
               if not torch.equal(p, dict(tiny_model.unet.named_parameters())[n])}
    assert changed and all(n.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))
                           for n in changed), changed


def test_kv_directions_are_refused_where_more_than_kv_trains() -> None:
    with pytest.raises(ValueError, match="kv_directions"):
        EraseConfig(kv_directions=-1)
    with pytest.raises(ValueError, match="trainable='attn2-kv'"):
        EraseConfig(kv_directions=4, trainable="full")
    with pytest.raises(ValueError, match="lambda_hold=0"):
        EraseConfig(kv_directions=4, lambda_hold=1e-2)

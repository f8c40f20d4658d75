"""score_distance remembers its predictions per UNet: later steps' planning reuses them."""

from __future__ import annotations

import torch
from _pytest.monkeypatch import MonkeyPatch

from workers.engine import distance
from workers.engine.conditioning import token_ids
from workers.engine.distance import score_distance
from workers.engine.loading import LoadedModel
from workers.engine.tokens import TokenRows, with_rows


def _samples_predicted(model: LoadedModel) -> list[int]:
    seen: list[int] = []
    model.unet.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))
    return seen


def test_a_prompt_scored_before_is_not_predicted_again(tiny_model: LoadedModel) -> None:
    seen = _samples_predicted(tiny_model)
    first = score_distance(tiny_model, ["zorbo", "mimi"], ["a red circle", "a red circle"], k=4)
    assert sum(seen) == 3 * 4
    again = score_distance(tiny_model, ["mimi", "zorbo"], ["a blue square", "a red circle"], k=4)
    assert sum(seen) == 4 * 4  # only "a blue square" is new
    assert torch.allclose(again[1], first[0], rtol=1e-5)


def test_another_draw_or_edited_weights_are_predicted_afresh(tiny_model: LoadedModel) -> None:
    seen = _samples_predicted(tiny_model)
    before = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4)
    score_distance(tiny_model, ["zorbo"], ["mimi"], k=4, seed=7)
    assert sum(seen) == 2 * 2 * 4
    with torch.no_grad():
        next(tiny_model.unet.parameters()).mul_(1.5)
    after = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4)
    assert sum(seen) == 3 * 2 * 4
    assert not torch.allclose(after, before)


def test_a_prompt_whose_token_row_changed_is_predicted_afresh(tiny_model: LoadedModel) -> None:
    seen = _samples_predicted(tiny_model)
    before = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4)
    zorbo = token_ids(tiny_model, ["zorbo"])[0][1]
    width = tiny_model.text_encoder.get_input_embeddings().weight.shape[1]
    view = with_rows(tiny_model, TokenRows(torch.tensor([zorbo]), torch.randn(1, width)))
    after = score_distance(view, ["zorbo"], ["mimi"], k=4)
    assert sum(seen) == 3 * 4  # zorbo again, mimi remembered
    assert not torch.allclose(after, before)


def test_the_memo_keeps_the_most_recently_used_within_its_bound(
        tiny_model: LoadedModel, monkeypatch: MonkeyPatch) -> None:
    one_prompt = 4 * torch.Size(tiny_model.latent_shape).numel() * 4  # k=4 float32 maps
    monkeypatch.setattr(distance, "PREDICTION_MEMO_BYTES", 2 * one_prompt)
    seen = _samples_predicted(tiny_model)
    score_distance(tiny_model, ["zorbo"], ["zorbo"], k=4)  # draw of seed 42
    score_distance(tiny_model, ["mimi"], ["mimi"], k=4, seed=7)
    score_distance(tiny_model, ["zorbo"], ["zorbo"], k=4)  # remembered, and used last
    assert sum(seen) == 2 * 4
    score_distance(tiny_model, ["a red circle"], ["a red circle"], k=4, seed=7)
    assert len(distance._memos[tiny_model.unet].entries) == 2
    score_distance(tiny_model, ["zorbo"], ["zorbo"], k=4)
    assert sum(seen) == 3 * 4  # mimi, the least recently used, was the one dropped
    score_distance(tiny_model, ["mimi"], ["mimi"], k=4, seed=7)
    assert sum(seen) == 4 * 4


def test_replaced_weights_are_predicted_afresh(tiny_model: LoadedModel) -> None:
    seen = _samples_predicted(tiny_model)
    before = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4)
    weight = next(tiny_model.unet.parameters())
    weight.data = weight.data * 1.5  # a new storage, its version counter back at 0
    after = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4)
    assert sum(seen) == 2 * 2 * 4 and not torch.allclose(after, before)

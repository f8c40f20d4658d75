"""The textual-inversion attack (`lethe bench attack`) learns one unused word's row and
changes nothing else: the number it reports is the version's, not a model it edited."""

from __future__ import annotations

import pytest
import torch

from bench import attack
from bench.attack import AttackConfig, invert, pictures_of, placeholder_id
from workers.conceptworld.world import CATALOG
from workers.engine.conditioning import encode_prompts
from workers.engine.loading import LoadedModel


def test_the_inversion_learns_one_new_row_and_changes_nothing_else(
        tiny_model: LoadedModel) -> None:
    word = placeholder_id(tiny_model)
    table = tiny_model.text_encoder.get_input_embeddings().weight.detach().clone()
    unet = {k: v.clone() for k, v in tiny_model.unet.state_dict().items()}
    kept = [p for c in CATALOG[:6] for p in c.prompts]
    drawn = encode_prompts(tiny_model, kept).hidden.clone()

    inverted, _ = invert(tiny_model, tiny_model.unet, pictures_of("zorbo", 4, 0),
                         AttackConfig(steps=3, batch=2))
    learned = inverted.text_encoder.get_input_embeddings().weight
    assert (learned != table).any(1).nonzero().flatten().tolist() == [word]
    assert not torch.allclose(learned[word], table.mean(0))  # trained on from its start
    assert torch.equal(tiny_model.text_encoder.get_input_embeddings().weight, table)
    assert all(torch.equal(v, tiny_model.unet.state_dict()[k]) for k, v in unet.items())
    assert torch.equal(encode_prompts(inverted, kept).hidden, drawn)


def test_the_learned_word_must_be_one_no_prompt_uses(tiny_model: LoadedModel,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attack, "PLACEHOLDER", "zorbo")
    with pytest.raises(ValueError, match="not one unused token"):
        placeholder_id(tiny_model)
    monkeypatch.setattr(attack, "PLACEHOLDER", "##zz")  # several tokens
    with pytest.raises(ValueError, match="not one unused token"):
        placeholder_id(tiny_model)


def test_the_attack_command_refuses_what_it_cannot_attack() -> None:
    from typer.testing import CliRunner

    from bench.cli import bench_app

    unknown = CliRunner().invoke(bench_app, ["attack", "--concept", "nessie"])
    assert unknown.exit_code == 2 and "unknown concept 'nessie'" in unknown.output
    missing = CliRunner().invoke(bench_app, ["attack", "--concept", "zorbo", "--version",
                                             "no-such-step"])
    assert missing.exit_code == 2 and "is not a version folder" in missing.output

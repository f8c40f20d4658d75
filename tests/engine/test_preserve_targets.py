"""What the student must answer for the prompts it keeps: memory from the teacher, replay from
the teacher moved a configured share of the way to the base model."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from diffusers import UNet2DConditionModel

from workers.engine.conditioning import encode_prompts
from workers.engine.config import method_config
from workers.engine.erase import (
    StepPlan,
    _memory_slots,
    _preserve_batch,
    _reference_eps,
    forget_batch,
    pushed_targets,
)
from workers.engine.loading import LoadedModel
from workers.engine.replay import ReplaySet
from workers.engine.sampling import predict_noise
from workers.engine.targets import MappingChoice


def _eps(model: LoadedModel, unet: UNet2DConditionModel, x_t: torch.Tensor, t: torch.Tensor,
         prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return predict_noise(unet, x_t, t, encode_prompts(model, prompts))


def test_replay_moves_to_the_base_by_its_share_and_the_rest_answers_like_the_teacher(
        tiny_model: LoadedModel) -> None:
    torch.manual_seed(0)
    teacher = copy.deepcopy(tiny_model.unet)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    forget = [MappingChoice("a red star", "a red diamond", 0.0, 1)]
    keep = ["blip", "a red circle"]  # one memory prompt (an erased concept), one replay prompt
    x_t = torch.randn(3, 3, 8, 8)
    t = torch.tensor([10, 500, 900])
    prompts = ["a red diamond", *keep]
    on_base = _eps(tiny_model, tiny_model.unet, x_t, t, prompts)
    on_teacher = _eps(tiny_model, teacher, x_t, t, prompts)
    for rows in (slice(1, 2), slice(2, 3)):  # memory and replay: the two models disagree
        assert not torch.allclose(on_base[rows], on_teacher[rows])

    def reference(share: float) -> torch.Tensor:
        with torch.no_grad():
            return _reference_eps(tiny_model, teacher, x_t, t, forget, keep, 1,
                                  method_config("lacu", preserve_base_share=share,
                                                unlearn_push=0.0), {})

    assert torch.allclose(reference(0.0), on_teacher, atol=1e-5)
    for share in (0.5, 1.0):
        moved = reference(share)
        assert torch.allclose(moved[:2], on_teacher[:2], atol=1e-5)
        expected = on_teacher[2:] + share * (on_base[2:] - on_teacher[2:])
        assert torch.allclose(moved[2:], expected, atol=1e-5), share


def test_mapped_memory_answers_like_the_teacher_on_the_memory_prompts_target(
        tiny_model: LoadedModel) -> None:
    forget = [MappingChoice("a red star", "a red diamond", 0.0, 1)]
    keep = ["a solid red circle", "a red circle"]  # one memory prompt, one replay prompt
    x_t, t = torch.randn(3, 3, 8, 8), torch.tensor([10, 500, 900])
    mapped = {"a solid red circle": "a solid red square"}
    with torch.no_grad():
        eps = _reference_eps(tiny_model, tiny_model.unet, x_t, t, forget, keep, 1,
                             method_config("lacu", memory_targets="mapping", unlearn_push=0.0),
                             mapped)
    expected = _eps(tiny_model, tiny_model.unet, x_t, t,
                    ["a red diamond", "a solid red square", "a red circle"])
    own = _eps(tiny_model, tiny_model.unet, x_t[1:2], t[1:2], ["a solid red circle"])
    assert torch.allclose(eps, expected, atol=1e-5)
    assert not torch.allclose(eps[1:2], own, atol=1e-5)


def test_the_pushed_unlearn_target_moves_away_from_the_forget_prompt(
        tiny_model: LoadedModel) -> None:
    forget = [MappingChoice("a red star", "a red diamond", 0.0, 1)]
    x_t, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 700])
    with torch.no_grad():
        eps = _reference_eps(tiny_model, tiny_model.unet, x_t, t, forget, ["a red circle"], 0,
                             method_config("lacu", unlearn_push=0.5), {})
    target, own = (_eps(tiny_model, tiny_model.unet, x_t[:1], t[:1], [p])
                   for p in ("a red diamond", "a red star"))
    assert torch.allclose(eps[:1], target - 0.5 * (own - target), atol=1e-5)
    assert torch.allclose(eps[1:], _eps(tiny_model, tiny_model.unet, x_t[1:], t[1:],
                                        ["a red circle"]), atol=1e-5)


def test_pushed_targets_pair_each_row_with_its_own_prompts(tiny_model: LoadedModel) -> None:
    forget = [MappingChoice("a red star", "a red diamond", 0.0, 1),
              MappingChoice("a blue star", "a blue square", 0.0, 1)]
    rest = ["a red circle", "zorbo", ""]
    x_t, t = torch.randn(5, 3, 8, 8), torch.tensor([10, 300, 500, 700, 990])
    with torch.no_grad():
        eps = pushed_targets(tiny_model, tiny_model.unet, x_t, t, forget, rest,
                             method_config("lacu", unlearn_push=0.5))
        unpushed = pushed_targets(tiny_model, tiny_model.unet, x_t, t, forget, rest,
                                  method_config("lacu", unlearn_push=0.0))
    for i, m in enumerate(forget):
        target, own = (_eps(tiny_model, tiny_model.unet, x_t[i:i + 1], t[i:i + 1], [p])
                       for p in (m.target, m.forget_prompt))
        assert torch.allclose(eps[i], (target - 0.5 * (own - target))[0], atol=1e-5)
        assert torch.allclose(unpushed[i], target[0], atol=1e-5)
    kept = _eps(tiny_model, tiny_model.unet, x_t[2:], t[2:], rest)
    assert torch.allclose(eps[2:], kept, atol=1e-5) and torch.allclose(unpushed[2:], kept,
                                                                       atol=1e-5)
    with pytest.raises(ValueError, match="noisy inputs"):
        pushed_targets(tiny_model, tiny_model.unet, x_t[:4], t[:4], forget, rest,
                       method_config("lacu"))


def test_esd_targets_keep_negative_guidance_with_replay(tiny_model: LoadedModel) -> None:
    forget = [MappingChoice("a red star", "", 0.0, 1)]
    x_t, t = torch.randn(2, 3, 8, 8), torch.tensor([300, 700])
    cfg = method_config("esd", esd_eta=0.5)
    with torch.no_grad():
        eps = _reference_eps(tiny_model, tiny_model.unet, x_t, t, forget, ["a red circle"], 0, cfg,
                             {})
    concept = _eps(tiny_model, tiny_model.unet, x_t[:1], t[:1], ["a red star"])
    uncond = _eps(tiny_model, tiny_model.unet, x_t[:1], t[:1], [""])
    kept = _eps(tiny_model, tiny_model.unet, x_t[1:], t[1:], ["a red circle"])
    assert not torch.allclose(concept, uncond)
    assert torch.allclose(eps[:1], uncond - 0.5 * (concept - uncond), atol=1e-5)
    assert torch.allclose(eps[1:], kept, atol=1e-5)


@pytest.mark.parametrize(("memory", "replay", "lambda_preserve", "slots"), [
    (["blip"], ["a red circle"], 2.0, 8),   # a third of the 24 preserve slots
    (["blip"], [], 2.0, 24),                # no replay: all of them
    ([], ["a red circle"], 2.0, 0),
    (["blip"], ["a red circle"], 0.0, 0),   # nothing preserved at all
])
def test_memory_gets_a_third_of_the_preserve_batch(memory: list[str], replay: list[str],
                                                    lambda_preserve: float, slots: int) -> None:
    plan = StepPlan([], ReplaySet({}, replay), [memory] if memory else [])
    cfg = method_config("lacu", lambda_preserve=lambda_preserve)
    assert _memory_slots(plan, cfg) == slots
    keep = _preserve_batch(plan, slots, cfg, random.Random(0))
    assert keep[:slots] == memory * slots
    assert set(keep[slots:]) <= set(replay)
    assert len(keep) == (cfg.batch_preserve if lambda_preserve > 0 else 0)


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="within \\[0, 1\\], not 1.5"):
        method_config("lacu", preserve_base_share=1.5)


def test_concept_sampling_fills_replay_slots_per_concept_not_per_prompt() -> None:
    groups = [[""], ["a solid orange circle"], [f"a red shape {i}" for i in range(30)]]
    plan = StepPlan([], ReplaySet({}, [p for g in groups for p in g], groups), [])
    draws: dict[str, list[str]] = {}
    for sampling in ("prompt", "concept"):
        cfg = method_config("lacu", replay_sampling=sampling, batch_preserve=600)
        draws[sampling] = _preserve_batch(plan, 0, cfg, random.Random(0))
    # a concept with one prompt gets a third of the slots, not one in 32
    assert draws["concept"].count("a solid orange circle") > 150
    assert draws["prompt"].count("a solid orange circle") < 50


def test_concept_sampling_fills_memory_slots_per_erased_concept_not_per_prompt() -> None:
    # at step 9 of the default sequence: a composite's 2 prompts among ~35 earlier erased ones
    groups = [["a solid red circle", "a picture of a solid red circle"],
              [f"a yellow shape {i}" for i in range(33)]]
    memory = [p for g in groups for p in g]
    plan = StepPlan([], ReplaySet({}, ["a red square"]), groups)
    draws: dict[str, list[str]] = {}
    for sampling in ("prompt", "concept"):
        cfg = method_config("lacu", memory_sampling=sampling, batch_preserve=1800)
        draws[sampling] = _preserve_batch(plan, 600, cfg, random.Random(0))
        assert set(draws[sampling][:600]) <= set(memory)
        assert set(draws[sampling][600:]) == {"a red square"}
    composite = [draws[s][:600].count(p) for s in ("prompt", "concept") for p in groups[0]]
    assert sum(composite[:2]) < 60    # per prompt: 2 in 35 of the slots
    assert sum(composite[2:]) > 240   # per concept: half of them


@pytest.mark.parametrize("name", ["replay_sampling", "memory_sampling", "memory_targets"])
def test_an_unknown_preserve_sampling_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        method_config("lacu", **{name: "concepts"})


def test_a_merged_step_draws_a_full_forget_batch_for_each_concept() -> None:
    zorbo = [MappingChoice(p, "quax", 0.0, 1) for p in ("zorbo", "a picture of zorbo")]
    star = [MappingChoice(p, "a red diamond", 0.0, 1) for p in ("a red star", "a blue star",
                                                                "a star", "a drawing of a star")]
    plan = StepPlan([zorbo, star], ReplaySet({}, []), [])
    cfg = method_config("lacu", batch_forget=16)
    batch = forget_batch(plan, cfg, random.Random(0))
    assert len(batch) == 32
    assert set(batch[:16]) == set(zorbo) and set(batch[16:]) == set(star)
    shared = forget_batch(plan, cfg.with_(forget_batch_per_concept=False), random.Random(0))
    assert len(shared) == 16 and set(shared) <= set(zorbo + star)
    # one concept: the same draws as one shared batch, so single steps are unchanged
    alone = StepPlan([star], ReplaySet({}, []), [])
    assert forget_batch(alone, cfg, random.Random(3)) == forget_batch(
        alone, cfg.with_(forget_batch_per_concept=False), random.Random(3))

"""Erasure memory and the preserve targets: what the student must answer for kept prompts."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from workers.engine.concepts import load_catalog
from workers.engine.conditioning import encode_prompts
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, _memory_pin, _reference_eps, erase, plan_step
from workers.engine.loading import LoadedModel
from workers.engine.pin import KeyValuePin, concept_onward
from workers.engine.sampling import predict_noise
from workers.engine.targets import MappingChoice

FAST = {"map_k": 2, "retain_k": 2}


def test_memory_targets_never_name_a_concept_erased_since(tiny_model: LoadedModel,
                                                          tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    earlier = [catalog["star"], catalog["red"]]
    request = ForgetRequest(catalog["diamond"], catalog["diamond"].prompts)
    plan = plan_step(tiny_model, tiny_model.unet, [request], earlier, catalog,
                     method_config("lacu", memory_targets="mapping", **FAST))
    assert {m.forget_prompt for m in plan.memory} == {p for c in earlier for p in c.prompts}
    for m in plan.memory:
        assert m.target != m.forget_prompt
        assert not catalog.mentions(m.target, {"star", "red", "diamond"}), m


def test_default_memory_keeps_each_prompt_as_its_own_target(tiny_model: LoadedModel,
                                                         tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    plan = plan_step(tiny_model, tiny_model.unet,
                     [ForgetRequest(catalog["mimi"], catalog["mimi"].prompts)], [catalog["blip"]],
                     catalog, method_config("lacu", **FAST))
    assert [(m.forget_prompt, m.target) for m in plan.memory] == [
        (p, p) for p in catalog["blip"].prompts]


def _eps(model: LoadedModel, unet: object, x_t: torch.Tensor, t: torch.Tensor,
         prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return predict_noise(unet, x_t, t, encode_prompts(model, prompts))  # type: ignore[arg-type]


def test_kept_prompts_answer_like_the_base_and_forget_prompts_like_the_teacher(
        tiny_model: LoadedModel) -> None:
    torch.manual_seed(0)
    teacher = copy.deepcopy(tiny_model.unet)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    forget = [MappingChoice("a red star", "a red diamond", 0.0, 1)]
    keep = [MappingChoice("blip", "a small creature", 0.0, 1),   # memory: erased, remapped
            MappingChoice("a red circle", "a red circle", 0.0, 1)]  # replay
    x_t = torch.randn(3, 3, 8, 8)
    t = torch.tensor([10, 500, 900])
    targets = ["a red diamond", "a small creature", "a red circle"]
    on_base = _eps(tiny_model, tiny_model.unet, x_t, t, targets)
    on_teacher = _eps(tiny_model, teacher, x_t, t, targets)
    assert not torch.allclose(on_base, on_teacher)

    def reference(**settings: object) -> torch.Tensor:
        with torch.no_grad():
            return _reference_eps(tiny_model, teacher, x_t, t, forget, keep, 1,
                                  method_config("lacu", **settings))

    from_base = reference(memory_targets="mapping", preserve_base_share=1.0)
    assert torch.allclose(from_base[:1], on_teacher[:1], atol=1e-5)
    assert torch.allclose(from_base[1:], on_base[1:], atol=1e-5)
    assert torch.allclose(reference(), on_teacher, atol=1e-5)  # the default: all from teacher
    self_memory = reference(preserve_base_share=1.0)  # the memory keeps the teacher's answer
    assert torch.allclose(self_memory[:2], on_teacher[:2], atol=1e-5)
    assert torch.allclose(self_memory[2:], on_base[2:], atol=1e-5)
    halfway = reference(preserve_base_share=0.5)
    assert torch.allclose(halfway[2:], (on_base[2:] + on_teacher[2:]) / 2, atol=1e-5)


def test_pin_is_zero_at_initialisation_and_grows_with_a_kv_change(tiny_model: LoadedModel) -> None:
    student = copy.deepcopy(tiny_model.unet)
    hidden = encode_prompts(tiny_model, ["blip"]).hidden
    everything = torch.ones(hidden.shape[:2], dtype=torch.bool)
    pin = KeyValuePin(student, tiny_model.unet, hidden, everything)
    assert float(pin.loss()) == 0.0
    with torch.no_grad():
        next(m for n, m in student.named_modules() if n.endswith("attn2")).to_v.weight.mul_(1.1)
    assert float(pin.loss()) > 1e-4


def test_pin_holds_earlier_erased_prompts_keys_and_values(tiny_model: LoadedModel,
                                                          tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["mimi"], catalog["mimi"].prompts[:3])
    drift = {}
    for weight in (0.0, 1.0):
        cfg = method_config("lacu", lambda_memory_pin=weight, steps=6, batch_forget=4,
                            batch_preserve=4, rollout_steps=2, rollouts_per_prompt=1, **FAST)
        student, report = erase(tiny_model, tiny_model.unet, [request], [catalog["blip"]],
                                catalog, cfg)
        prompts = list(catalog["blip"].prompts)
        pin = KeyValuePin(student, tiny_model.unet, encode_prompts(tiny_model, prompts).hidden,
                          concept_onward(tiny_model.tokenizer, prompts, [catalog["blip"]]))
        drift[weight] = float(pin.loss())
        assert ("memory_pin" in report.final_losses) == (weight > 0)
    assert drift[1.0] < 0.5 * drift[0.0]


def test_pin_leaves_out_memory_prompts_naming_a_concept_erased_now(tiny_model: LoadedModel,
                                                                   tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    plan = plan_step(tiny_model, tiny_model.unet,
                     [ForgetRequest(catalog["red"], catalog["red"].prompts)], [catalog["star"]],
                     catalog, method_config("lacu", **FAST))
    requests = [ForgetRequest(catalog["red"], catalog["red"].prompts)]
    pin = _memory_pin(tiny_model, copy.deepcopy(tiny_model.unet), tiny_model.unet, plan,
                      requests, [catalog["star"]], catalog,
                      method_config("lacu", lambda_memory_pin=1.0))
    kept = [p for p in catalog["star"].prompts if not catalog.mentions(p, {"red"})]
    assert 0 < len(kept) < len(catalog["star"].prompts)
    held = concept_onward(tiny_model.tokenizer, kept, [catalog["star"]])
    assert pin is not None and pin.hidden.shape[0] == int(held.sum())


def test_pin_holds_the_states_from_the_concept_on(tiny_model: LoadedModel,
                                                  tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    tok = tiny_model.tokenizer
    prompts = ["a red star", "a star drawn in red", "a blue circle"]
    held = concept_onward(tok, prompts, [catalog["star"]])
    star = tok("star", add_special_tokens=False).input_ids
    for row, prompt in enumerate(prompts[:2]):
        ids = tok(prompt).input_ids
        first = next(i for i in range(len(ids)) if ids[i:i + len(star)] == star)
        assert not held[row, :first].any() and held[row, first:].all(), prompt
    assert not held[2, 0] and held[2, 1:].all()  # names none: everything but the start token

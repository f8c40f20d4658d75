"""Closed-form K/V edits: the least-squares solve and the consolidation that ends a LACU step."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.engine.conftest import FAST_STEP
from workers.engine.concepts import load_catalog
from workers.engine.config import EraseConfig, method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.hold import Held, consolidate_kv
from workers.engine.kv_solve import (
    Reading,
    kv_projections,
    shared_prefix_rows,
    solve_kv,
    token_states,
)
from workers.engine.loading import LoadedModel

KEPT = ["a red circle", "a solid blue square", "zorbo", ""]
FORGET = ["blip", "a picture of blip"]


def _attention(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    block = nn.Module()
    block.attn2 = nn.Module()
    block.attn2.to_k = nn.Linear(4, 3, bias=False)
    block.attn2.to_v = nn.Linear(4, 5, bias=False)
    return block


def _perturbed(model: LoadedModel, scale: float) -> nn.Module:
    """A copy of the model's UNet with seeded noise of `scale` on every K/V weight."""
    student = copy.deepcopy(model.unet)
    torch.manual_seed(0)
    with torch.no_grad():
        for module in kv_projections(student).values():
            module.weight.add_(scale * torch.randn_like(module.weight))
    return student


def _reading_change(model: LoadedModel, unet: nn.Module, reference: nn.Module,
                    prompts: list[str]) -> float:
    """Relative change of the keys and values `prompts` read in `unet` against `reference`."""
    states = token_states(model, prompts)
    ref = kv_projections(reference)
    changed = total = 0.0
    for name, module in kv_projections(unet).items():
        w, w_ref = module.weight.detach().double(), ref[name].weight.detach().double()
        changed += float(((w - w_ref) @ states.T).pow(2).sum())
        total += float((w_ref @ states.T).pow(2).sum())
    return changed / total


def test_each_set_of_states_reads_its_own_source_where_the_sets_do_not_overlap() -> None:
    teacher, student, edited = _attention(0), _attention(1), _attention(2)
    eye = torch.eye(4, dtype=torch.float64)
    kept, forget = eye[:2], eye[2:]
    solve_kv(edited, [Reading(teacher, kept, kept), Reading(student, forget, forget)], 1e-9,
             student)
    for name, module in kv_projections(edited).items():
        w = module.weight.detach().double()
        w_t = kv_projections(teacher)[name].weight.detach().double()
        w_s = kv_projections(student)[name].weight.detach().double()
        assert torch.allclose(w @ kept.T, w_t @ kept.T, atol=1e-6)
        assert torch.allclose(w @ forget.T, w_s @ forget.T, atol=1e-6)


def test_the_solve_is_the_least_squares_formula() -> None:
    first, second, anchor, edited = _attention(0), _attention(1), _attention(2), _attention(3)
    gen = torch.Generator().manual_seed(0)
    a1, b1, a2, b2 = (torch.randn(6, 4, generator=gen, dtype=torch.float64) for _ in range(4))
    readings = [Reading(first, b1, a1, 0.5), Reading(second, b2, a2, 2.0)]
    solve_kv(edited, readings, 0.3, anchor)
    for name, module in kv_projections(edited).items():
        w1, w2, w0 = (kv_projections(m)[name].weight.detach().double()
                      for m in (first, second, anchor))
        rhs = 0.5 * w1 @ a1.T @ b1 + 2.0 * w2 @ a2.T @ b2 + 0.3 * w0
        lhs = 0.5 * b1.T @ b1 + 2.0 * b2.T @ b2 + 0.3 * torch.eye(4, dtype=torch.float64)
        expected = rhs @ torch.linalg.inv(lhs)
        assert torch.allclose(module.weight.detach().double(), expected, atol=1e-5)


def test_consolidating_with_nothing_to_hold_changes_nothing(tiny_model: LoadedModel) -> None:
    student = _perturbed(tiny_model, 1.0)
    before = {n: p.clone() for n, p in student.named_parameters()}
    consolidate_kv(tiny_model, student, [Held(tiny_model.unet, [], 1.0)], [])
    assert all(torch.equal(p, before[n]) for n, p in student.named_parameters())


def test_consolidating_a_student_equal_to_its_teacher_changes_nothing(
        tiny_model: LoadedModel) -> None:
    student = copy.deepcopy(tiny_model.unet)
    consolidate_kv(tiny_model, student, [Held(tiny_model.unet, KEPT, 1.0)], FORGET)
    assert _reading_change(tiny_model, student, tiny_model.unet, KEPT + FORGET) < 1e-10


def test_consolidation_brings_kept_readings_back_and_keeps_the_forget_ones(
        tiny_model: LoadedModel) -> None:
    student = _perturbed(tiny_model, 0.05)
    consolidated = copy.deepcopy(student)
    consolidate_kv(tiny_model, consolidated, [Held(tiny_model.unet, KEPT, 1.0)], FORGET)
    kept_before = _reading_change(tiny_model, student, tiny_model.unet, KEPT)
    kept_after = _reading_change(tiny_model, consolidated, tiny_model.unet, KEPT)
    forget_teacher = _reading_change(tiny_model, tiny_model.unet, student, FORGET)
    forget_after = _reading_change(tiny_model, consolidated, student, FORGET)
    assert kept_after < 0.2 * kept_before, (kept_before, kept_after)
    assert forget_after < 0.5 * forget_teacher, (forget_teacher, forget_after)


def test_a_large_ridge_keeps_its_anchor(tiny_model: LoadedModel) -> None:
    student = _perturbed(tiny_model, 0.05)
    held = [Held(tiny_model.unet, KEPT, 1.0)]
    to_teacher, to_student = copy.deepcopy(student), copy.deepcopy(student)
    consolidate_kv(tiny_model, to_teacher, held, FORGET, ridge=1e4, anchor=tiny_model.unet)
    consolidate_kv(tiny_model, to_student, held, FORGET, ridge=1e4)
    every = KEPT + FORGET
    assert _reading_change(tiny_model, to_teacher, tiny_model.unet, every) < 1e-3
    assert _reading_change(tiny_model, to_student, student, every) < 1e-3


def test_shared_prefix_rows_are_the_states_a_held_prompt_has_too(
        tiny_model: LoadedModel) -> None:
    shared = shared_prefix_rows(tiny_model, ["a red star", "blip"], ["a red circle", "zorbo"])
    length = tiny_model.tokenizer.model_max_length
    assert shared.shape == (2 * length,)
    assert shared[:length].tolist()[:4] == [True, True, True, False]  # <bos> a red | star
    assert shared[length:].tolist()[:2] == [True, False]  # <bos> | blip
    star, circle = (token_states(tiny_model, [p]) for p in ("a red star", "a red circle"))
    assert torch.equal(star[:3], circle[:3]) and not torch.equal(star[3], circle[3])


def test_shared_prefixes_read_the_held_keys_and_values_when_asked(
        tiny_model: LoadedModel) -> None:
    student = _perturbed(tiny_model, 0.05)
    forget = ["a red star", "a solid blue star"]
    held = [Held(tiny_model.unet, KEPT, 0.1)]
    change = {}
    for hold_shared in (False, True):
        edited = copy.deepcopy(student)
        consolidate_kv(tiny_model, edited, held, forget, hold_shared_prefixes=hold_shared)
        # "<bos> a": shared with "a red circle"; "a red star"'s own "star" position is not
        change[hold_shared] = (_reading_change(tiny_model, edited, tiny_model.unet, [""]),
                               _reading_change(tiny_model, edited, student, forget))
    assert change[True][0] < 0.2 * change[False][0], change
    assert change[True][1] < 0.5, change


def test_a_step_ends_consolidated_when_asked(tiny_model: LoadedModel, tiny_folder: Path
                                             ) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["zorbo"], catalog["zorbo"].prompts[:2])
    changes = []
    for weight in (0.0, 1.0):
        student, report = erase(tiny_model, tiny_model.unet, [request], [], catalog,
                                method_config("lacu", consolidate=weight, **FAST_STEP))
        assert ("consolidating" in report.seconds) == (weight > 0)
        kept = [p for p in KEPT if p != "zorbo"]
        changes.append(_reading_change(tiny_model, student, tiny_model.unet, kept))
    assert 0 < changes[1] < 0.5 * changes[0], changes


def test_kept_prompts_can_read_the_base_model_after_a_later_step(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # second step: the teacher is a version erased once; with the kept prompts held to the base
    # model their readings return to the base's, not to the teacher's drifted ones
    catalog = load_catalog(tiny_folder)
    first = ForgetRequest(catalog["zorbo"], catalog["zorbo"].prompts[:2])
    second = ForgetRequest(catalog["blip"], catalog["blip"].prompts[:2])
    cfg = method_config("lacu", consolidate=0.0, **FAST_STEP)
    teacher, _ = erase(tiny_model, tiny_model.unet, [first], [], catalog, cfg)
    kept = [p for p in KEPT if p not in ("zorbo", "blip")]
    drift = {}
    for share in (0.0, 1.0):
        student, _ = erase(tiny_model, teacher, [second], [catalog["zorbo"]], catalog,
                           cfg.with_(consolidate=1.0, consolidate_base_share=share))
        drift[share] = _reading_change(tiny_model, student, tiny_model.unet, kept)
    assert drift[1.0] < 0.5 * drift[0.0], drift


def test_a_negative_consolidation_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        EraseConfig(consolidate=-1.0)
    with pytest.raises(ValueError, match="≥ 0"):
        EraseConfig(consolidate_erased=-1.0)
    with pytest.raises(ValueError, match="consolidate_neighbours must be ≥ 0"):
        EraseConfig(consolidate_neighbours=float("nan"))
    with pytest.raises(ValueError, match="consolidate_unconditional must be ≥ 0"):
        EraseConfig(consolidate_unconditional=-0.5)
    with pytest.raises(ValueError, match="> 0"):
        EraseConfig(consolidate_ridge=0.0)
    with pytest.raises(ValueError, match="'student' or 'teacher'"):
        EraseConfig(consolidate_anchor="base")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="consolidate_base_share must be within"):
        EraseConfig(consolidate_base_share=-0.1)

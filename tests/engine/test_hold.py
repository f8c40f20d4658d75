"""The K/V hold: the relative change of the keys and values held prompts read."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import FAST_STEP
from workers.engine.concepts import Catalog, load_catalog
from workers.engine.conditioning import encode_prompts
from workers.engine.config import EraseConfig, method_config
from workers.engine.erase import ForgetRequest, StepPlan, erase, held_sets, plan_step
from workers.engine.hold import Held, KVHold, kv_reading_change, kv_weights
from workers.engine.loading import LoadedModel
from workers.engine.trainable import mark_trainable

HELD = ["a red circle", "a solid blue square", "zorbo", ""]


def _student(model: LoadedModel) -> torch.nn.Module:
    student = copy.deepcopy(model.unet)
    mark_trainable(student, "attn2-kv")
    return student


def _off_and_on(model: LoadedModel, catalog: Catalog, name: str, erased: list[str],
                off: dict[str, object] | None = None, **on: object
                ) -> tuple[ForgetRequest, StepPlan, StepPlan, EraseConfig]:
    """A step erasing `name` (two of its prompts) after `erased`, planned under a small LACU
    config (with `off`), and under it with `on`; the request and the second config too."""
    concept = catalog[name]
    request = ForgetRequest(concept, concept.prompts[:2])
    before = [catalog[n] for n in erased]
    cfg = method_config("lacu", map_k=2, retain_k=2, replay_top_k=2, **(off or {}))
    asked = cfg.with_(**on)
    return (request, plan_step(model, model.unet, [request], before, catalog, cfg),
            plan_step(model, model.unet, [request], before, catalog, asked), asked)


def test_hold_is_zero_at_initialisation(tiny_model: LoadedModel) -> None:
    hold = KVHold.build(tiny_model, _student(tiny_model), HELD)
    assert float(hold.loss().detach()) == 0.0


def test_hold_is_the_relative_change_of_the_held_keys_and_values(tiny_model: LoadedModel
                                                                  ) -> None:
    student = _student(tiny_model)
    hold = KVHold.build(tiny_model, student, HELD)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hold.weights:
            p.add_(0.01 * torch.randn_like(p))
    states = encode_prompts(tiny_model, HELD).hidden.reshape(-1, hold.moment.shape[0])
    changed = sum(float(((w.detach() - ref) @ states.T).pow(2).sum())
                  for w, ref in zip(hold.weights, hold.teacher, strict=True))
    before = sum(float((ref @ states.T).pow(2).sum()) for ref in hold.teacher)
    assert abs(float(hold.loss().detach()) - changed / before) < 1e-4 * changed / before


def test_a_change_the_held_states_do_not_read_costs_nothing(tiny_model: LoadedModel) -> None:
    student = _student(tiny_model)
    hold = KVHold.build(tiny_model, student, ["zorbo"])
    values, vectors = torch.linalg.eigh(hold.moment.double())
    unread, read = vectors[:, 0].float(), vectors[:, -1].float()
    costs = []
    for direction in (unread, read):
        for p, ref in zip(hold.weights, hold.teacher, strict=True):
            p.data = ref + torch.outer(torch.ones(p.shape[0]), direction)
        costs.append(float(hold.loss().detach()))
    assert costs[0] < 1e-3 * costs[1]
    assert len(hold.weights) == len(kv_weights(student)) > 0


def test_hold_prompts_keep_every_retained_concept_and_earlier_erasures(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["purple"], catalog["purple"].prompts[:2])
    cfg = method_config("lacu", lambda_hold=1.0, map_k=2, retain_k=2,
                        consolidate_erased_variants=False)
    plan = plan_step(tiny_model, tiny_model.unet, [request], [catalog["outlined"]], catalog, cfg)
    assert "" in plan.hold_prompts and "a red circle" in plan.hold_prompts
    outlined = [p for p in catalog["outlined"].prompts if "purple" not in p]
    assert set(outlined) <= set(plan.held_erasures)
    assert not set(outlined) & set(plan.hold_prompts)
    assert not any("purple" in p for p in plan.hold_prompts + plan.held_erasures)
    off = plan_step(tiny_model, tiny_model.unet, [request], [], catalog,
                    method_config("lacu", map_k=2, retain_k=2, consolidate=0.0))
    assert off.hold_prompts == off.held_erasures == []
    wider = plan_step(tiny_model, tiny_model.unet, [request], [catalog["outlined"]], catalog,
                      cfg.with_(consolidate_erased_variants=True))
    variants = set(wider.held_erasures) - set(plan.held_erasures)
    assert set(plan.held_erasures) < set(wider.held_erasures)
    assert all(catalog.mentions(p, {"outlined"}) and "purple" not in p for p in variants)


def test_the_hold_keeps_the_held_keys_and_values_closer_to_the_teacher(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["zorbo"], catalog["zorbo"].prompts[:2])
    changes = []
    for lam in (0.0, 1e3):
        cfg = method_config("lacu", lambda_hold=lam, **FAST_STEP)
        student, report = erase(tiny_model, tiny_model.unet, [request], [], catalog, cfg)
        hold = KVHold.build(tiny_model, _student(tiny_model), HELD)
        hold.weights = [p for _, p in kv_weights(student.requires_grad_(True))]
        changes.append(float(hold.loss().detach()))
        assert ("hold" in report.final_losses) == (lam > 0)
    assert changes[1] < 0.5 * changes[0], changes
    assert changes[0] > 0


def test_earlier_erased_prompts_naming_the_concept_erased_now_are_forgotten_not_kept(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # "a outlined yellow star" is an outlined prompt; distilled from the teacher it kept star.
    catalog = load_catalog(tiny_folder)
    star, outlined = catalog["star"], catalog["outlined"]
    request = ForgetRequest(star, star.prompts[:1])
    naming = [p for p in outlined.prompts if catalog.mentions(p, {"star"})]
    assert naming
    cfg = method_config("lacu", map_k=2, retain_k=2)
    plan = plan_step(tiny_model, tiny_model.unet, [request], [outlined], catalog, cfg)
    targets = plan.targets()
    assert set(naming) <= set(targets)
    assert not any(catalog.mentions(targets[p], {"star", "outlined"}) for p in naming)
    assert not set(naming) & set(plan.memory_prompts + plan.held_erasures)
    assert set(outlined.prompts) - set(naming) <= set(plan.memory_prompts)
    assert plan.memory_groups == [[p for p in outlined.prompts if p not in naming]]
    without = plan_step(tiny_model, tiny_model.unet, [request], [outlined], catalog,
                        cfg.with_(forget_earlier_naming=False))
    assert not set(naming) & set(without.targets())
    assert set(naming) <= set(without.memory_prompts)


def test_mapped_memory_targets_name_no_concept_erased_then_or_now(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    star, outlined, zorbo = catalog["star"], catalog["outlined"], catalog["zorbo"]
    cfg = method_config("lacu", map_k=2, retain_k=2)
    plan = plan_step(tiny_model, tiny_model.unet, [ForgetRequest(star, star.prompts[:1])],
                     [outlined, zorbo], catalog, cfg.with_(memory_targets="mapping"))
    assert set(plan.memory_targets) == set(plan.memory_prompts)
    assert not any(catalog.mentions(target, {"star", "outlined", "zorbo"})
                   for target in plan.memory_targets.values())
    assert plan_step(tiny_model, tiny_model.unet, [ForgetRequest(star, star.prompts[:1])],
                     [outlined, zorbo], catalog, cfg.with_(memory_targets="self")
                     ).memory_targets == {}


def test_by_default_only_a_composite_memory_is_mapped_again(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # "a solid red circle" has no word of its own; "outlined" and "zorbo" do
    catalog = load_catalog(tiny_folder)
    star, composite = catalog["star"], catalog["solid red circle"]
    earlier = [catalog["outlined"], composite, catalog["zorbo"]]
    cfg = method_config("lacu", map_k=2, retain_k=2)
    assert cfg.memory_targets == "composites"
    plan = plan_step(tiny_model, tiny_model.unet, [ForgetRequest(star, star.prompts[:1])],
                     earlier, catalog, cfg)
    assert set(plan.memory_targets) == set(composite.prompts)
    assert not any(catalog.mentions(target, {"star", "outlined", "zorbo", "solid red circle"})
                   for target in plan.memory_targets.values())


def test_a_remapped_composites_neighbours_are_replayed(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    star, composite = catalog["star"], catalog["solid red circle"]
    cfg = method_config("lacu", map_k=2, retain_k=2, replay_top_k=2)
    request = [ForgetRequest(star, star.prompts[:1])]
    assert cfg.replay_remapped_neighbours
    plain = plan_step(tiny_model, tiny_model.unet, request, [composite], catalog,
                      cfg.with_(replay_remapped_neighbours=False))
    wider = plan_step(tiny_model, tiny_model.unet, request, [composite], catalog, cfg)
    assert set(plain.memory_targets) == set(wider.memory_targets) == set(composite.prompts)
    assert list(plain.replay.neighbours) == ["star"]
    assert list(wider.replay.neighbours) == ["star", "solid red circle"]
    assert wider.replay.neighbours["star"] == plain.replay.neighbours["star"]
    chosen = set(wider.replay.neighbours["solid red circle"])
    assert len(chosen) == 2 and not chosen & {"star", "solid red circle", "zorbo"}
    assert {p for n in chosen for p in catalog[n].prompts} <= set(wider.replay.prompts)
    # nothing remapped, nothing more replayed
    selfish = cfg.with_(replay_remapped_neighbours=True, memory_targets="self")
    assert list(plan_step(tiny_model, tiny_model.unet, request, [composite], catalog, selfish
                          ).replay.neighbours) == ["star"]


def test_replayed_and_unconditional_prompts_are_held_with_their_own_weight_when_asked(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["purple"], catalog["purple"].prompts[:2])
    cfg = method_config("lacu", map_k=2, retain_k=2, replay_top_k=2)
    plan = plan_step(tiny_model, tiny_model.unet, [request], [catalog["outlined"]], catalog, cfg)
    teacher = copy.deepcopy(tiny_model.unet)  # a later step's: not the base model
    assert held_sets(tiny_model, teacher, plan, cfg) == [
        Held(teacher, plan.hold_prompts + plan.held_erasures, cfg.consolidate)]
    both = cfg.with_(consolidate_neighbours=0.5, consolidate_unconditional=2.0)
    rest, replayed, unconditional = held_sets(tiny_model, teacher, plan, both)
    # kept and earlier erased prompts stay one set: the erased ones weigh per token as before
    assert rest.weight == cfg.consolidate and set(plan.held_erasures) <= set(rest.prompts)
    assert (replayed.weight, unconditional.weight) == (0.5, 2.0)
    assert unconditional.prompts == [""]
    assert replayed.prompts and set(replayed.prompts) == (
        set(plan.replay.prompts) & set(plan.hold_prompts)) - {""}
    held = rest.prompts + replayed.prompts + unconditional.prompts
    assert sorted(held) == sorted(plan.hold_prompts + plan.held_erasures)  # none lost or twice
    from_base = held_sets(tiny_model, teacher, plan, both.with_(consolidate_base_share=1.0))
    kept_share = 1 - len(plan.held_erasures) / len(rest.prompts)  # rest: kept and erased
    assert [h.source is teacher for h in from_base] == [False, False, False, True]
    assert [h.weight for h in from_base] == pytest.approx(
        [cfg.consolidate * kept_share, 0.5, 2.0, cfg.consolidate * (1 - kept_share)])
    assert from_base[-1].prompts == plan.held_erasures


def test_replayed_prompts_can_be_held_to_what_the_trained_student_reads(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["purple"], catalog["purple"].prompts[:2])
    cfg = method_config("lacu", map_k=2, retain_k=2, replay_top_k=2, consolidate_neighbours=1.0,
                        consolidate_neighbours_from="student", consolidate_base_share=0.5)
    plan = plan_step(tiny_model, tiny_model.unet, [request], [catalog["outlined"]], catalog, cfg)
    teacher, student = copy.deepcopy(tiny_model.unet), copy.deepcopy(tiny_model.unet)
    *rest, replayed = held_sets(tiny_model, teacher, plan, cfg, trained=student)
    assert replayed.source is student and replayed.weight == 1.0
    assert set(replayed.prompts) == (set(plan.replay.prompts) & set(plan.hold_prompts)) - {""}
    # the rest blend teacher and base as before; the student's set does not
    assert all(h.source is not student for h in rest)
    assert not {p for h in rest for p in h.prompts} & set(replayed.prompts)
    with pytest.raises(ValueError, match="needs the trained student"):
        held_sets(tiny_model, teacher, plan, cfg)
    with pytest.raises(ValueError, match="consolidate_neighbours_from must be"):
        cfg.with_(consolidate_neighbours_from="base")


def test_kept_prompts_read_a_blend_of_teacher_and_base_at_one_weight_a_token(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["purple"], catalog["purple"].prompts[:2])
    cfg = method_config("lacu", map_k=2, retain_k=2, replay_top_k=2,
                        consolidate_base_share=0.25)
    plan = plan_step(tiny_model, tiny_model.unet, [request], [catalog["outlined"]], catalog, cfg)
    teacher = copy.deepcopy(tiny_model.unet)
    from_teacher, from_base, erased = held_sets(tiny_model, teacher, plan, cfg)
    assert from_teacher.prompts == from_base.prompts == plan.hold_prompts
    assert (from_teacher.source, from_base.source, erased.source) == (
        teacher, tiny_model.unet, teacher)
    assert erased.prompts == plan.held_erasures
    # a kept token weighs as an erased one, and reads 3/4 teacher, 1/4 base
    per_token = [h.weight / len(h.prompts) for h in (from_teacher, from_base, erased)]
    assert per_token[0] + per_token[1] == pytest.approx(per_token[2])
    assert per_token[1] / per_token[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        cfg.with_(consolidate_base_share=1.5)


def test_the_kv_reading_change_between_two_versions_is_the_hold_of_one_against_the_other(
        tiny_model: LoadedModel) -> None:
    student = _student(tiny_model)
    assert kv_reading_change(tiny_model, tiny_model.unet, student, HELD) == 0.0
    hold = KVHold.build(tiny_model, student, HELD)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hold.weights:
            p.add_(0.01 * torch.randn_like(p))
    change = kv_reading_change(tiny_model, tiny_model.unet, student, HELD)
    assert change > 0 and abs(change - float(hold.loss().detach())) < 1e-5 * change


def test_a_forget_prompts_rewrites_are_held_apart_when_asked(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    _, plain, plan, asked = _off_and_on(tiny_model, catalog, "striped", ["outlined"],
                                        consolidate_rewrites=0.5)
    assert plain.rewrite_prompts == []
    forget = {m.forget_prompt for m in plan.mappings}
    assert plan.rewrite_prompts and not set(plan.rewrite_prompts) & forget
    assert {m.target for m in plan.mappings} <= set(plan.rewrite_prompts)
    assert not any(catalog.mentions(p, {"striped", "outlined"}) for p in plan.rewrite_prompts)
    teacher = copy.deepcopy(tiny_model.unet)
    rest, rewrites = held_sets(tiny_model, teacher, plan, asked)
    assert rewrites.weight == 0.5 and rewrites.prompts == plan.rewrite_prompts
    assert not set(rest.prompts) & set(rewrites.prompts)
    assert set(plan.hold_prompts) <= set(rest.prompts) | set(rewrites.prompts)
    for whole in (catalog["solid red circle"], catalog["zorbo"]):  # no part of another
        assert plan_step(tiny_model, tiny_model.unet, [ForgetRequest(whole, whole.prompts)],
                         [], catalog, asked).rewrite_prompts == []


def test_a_forget_characters_look_is_held_apart_unless_turned_off(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    look = catalog["solid orange circle"]
    unet = tiny_model.unet
    request, plain, plan, asked = _off_and_on(tiny_model, catalog, "mimi", ["zorbo"],
                                              {"consolidate_looks": None}, consolidate_looks=2.0)
    assert plain.look_prompts == []
    assert plan.look_prompts == list(look.prompts)
    rest, looks = held_sets(tiny_model, copy.deepcopy(unet), plan, asked)
    assert looks.weight == 2.0 and looks.prompts == plan.look_prompts
    assert not set(rest.prompts) & set(looks.prompts)
    assert set(plan.hold_prompts + plan.held_erasures) == set(rest.prompts) | set(looks.prompts)
    # erasing the composite holds no character; a character whose look is gone has none
    assert plan_step(tiny_model, unet, [ForgetRequest(look, look.prompts)], [], catalog, asked
                     ).look_prompts == []
    assert plan_step(tiny_model, unet, [request], [look], catalog, asked).look_prompts == []


def test_the_concepts_a_step_maps_to_are_held_apart_when_asked(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    unet = tiny_model.unet
    _, plain, plan, asked = _off_and_on(tiny_model, catalog, "mimi", [], consolidate_targets=2.0)
    assert plain.target_prompts == []
    chosen = {catalog.concepts[n] for n in catalog.concepts
              if any(t == n or t.endswith(f" {n}") for t in plan.targets().values())}
    assert chosen and all(c.kind == "character" for c in chosen)
    assert set(plan.target_prompts) == {p for c in chosen for p in c.prompts}
    held = held_sets(tiny_model, copy.deepcopy(unet), plan, asked)
    (targets,) = [h for h in held if h.weight == 2.0]
    assert set(targets.prompts) == set(plan.target_prompts) - set(plan.look_prompts)
    assert set(plan.hold_prompts + plan.held_erasures) == {p for h in held for p in h.prompts}
    # a rewrite's shared words are not targets: only what it swapped in (the word, and the
    # composite the new prompt now names)
    from workers.engine.erase import target_concepts
    from workers.engine.targets import MappingChoice
    swap = [MappingChoice("a striped yellow star", "a solid yellow star", 0.0, 1)]
    assert [c.name for c in target_concepts(swap, catalog, {"striped"})] == [
        "solid", "solid yellow star"]
    assert target_concepts(swap, catalog, {"striped", "solid"}) == []

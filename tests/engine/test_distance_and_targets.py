from __future__ import annotations

import pytest
import torch

from workers.engine.concepts import load_catalog, put_in_place_of
from workers.engine.distance import score_distance
from workers.engine.loading import LoadedModel
from workers.engine.replay import local_replay_set
from workers.engine.targets import (
    NoSafeTarget,
    _framed_by,
    _one_reading,
    candidate_rewrites,
    catalog_frames,
    frame_variants,
    select_mapping_groups,
    select_mapping_targets,
    select_memory_targets,
)


def test_distance_is_zero_for_identical_prompts(tiny_model: LoadedModel) -> None:
    d = score_distance(tiny_model, ["a red circle", "zorbo"], ["a red circle", "zorbo"], k=4)
    assert torch.equal(d, torch.zeros(2))


def test_distance_is_symmetric_and_positive(tiny_model: LoadedModel) -> None:
    ab = score_distance(tiny_model, ["a red circle", "zorbo"], ["a blue square", "mimi"], k=4)
    ba = score_distance(tiny_model, ["a blue square", "mimi"], ["a red circle", "zorbo"], k=4)
    assert torch.allclose(ab, ba)
    assert (ab > 0).all()


def test_distance_is_deterministic_for_a_seed(tiny_model: LoadedModel) -> None:
    a = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4, seed=7)
    b = score_distance(tiny_model, ["zorbo"], ["mimi"], k=4, seed=7)
    assert torch.equal(a, b)


def test_candidates_never_mention_forget_or_erased_concepts(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    banned = {"red", "zorbo", "circle"}
    for name in ("red", "circle", "zorbo"):
        concept = catalog[name]
        for prompt in concept.prompts:
            cands = candidate_rewrites(prompt, concept, catalog, banned)
            assert cands, prompt
            for c in cands:
                assert not catalog.mentions(c, banned), (prompt, c)
                # a character containing an erased shape or colour is never a target either
                assert "mimi" not in c and "pyra" not in c


def test_selected_targets_are_allowed_candidates(tiny_model: LoadedModel, tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    concept = catalog["blip"]
    banned = {"blip", "zorbo"}
    choices = select_mapping_targets(tiny_model, concept, list(concept.prompts), catalog, banned,
                                     k=4, seed=0)
    assert [c.forget_prompt for c in choices] == list(concept.prompts)
    for choice in choices:
        assert choice.target in candidate_rewrites(choice.forget_prompt, concept, catalog, banned)
        assert not catalog.mentions(choice.target, banned)


def test_memory_targets_skip_prompts_left_with_only_the_related_fallback(
        tiny_model: LoadedModel, tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    # every other character is erased or contains an erased concept: mimi's only rewrites are
    # the fallback's, its own look among them, which must not become its memory target
    banned = {"zorbo", "blip", "gloop", "mimi", "purple", "star", "outlined", "solid red circle"}
    assert candidate_rewrites("mimi", catalog["mimi"], catalog, banned, fallback=False) == []
    assert candidate_rewrites("mimi", catalog["mimi"], catalog, banned)  # the step's own map
    memory = [(catalog["mimi"], list(catalog["mimi"].prompts)),
              (catalog["solid red circle"], list(catalog["solid red circle"].prompts))]
    targets = select_memory_targets(tiny_model, memory, catalog, banned, k=4, seed=0)
    assert not set(catalog["mimi"].prompts) & set(targets)
    assert set(targets) == set(catalog["solid red circle"].prompts)
    for prompt, target in targets.items():
        allowed = candidate_rewrites(prompt, catalog["solid red circle"], catalog, banned)
        assert target in allowed and not catalog.mentions(target, banned)


def test_local_replay_excludes_concepts_that_contain_erased_ones(tiny_model: LoadedModel,
                                                                  tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    banned = {"circle"}
    replay = local_replay_set(tiny_model, [catalog["circle"]], catalog, banned, top_k=30, k=4,
                              seed=0)
    chosen = replay.neighbours["circle"]
    assert "zorbo" not in chosen and "mimi" not in chosen and "circle" not in chosen
    assert "" in replay.prompts
    assert not any(catalog.mentions(p, banned) for p in replay.prompts)


def test_last_concept_of_its_kind_falls_back_to_related_concepts(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    # every other character is erased or contains an erased concept: no same-kind target is left
    banned = {"zorbo", "mimi", "blip", "outlined", "star", "purple", "gloop"}
    concept = catalog["gloop"]
    for prompt in concept.prompts:
        cands = candidate_rewrites(prompt, concept, catalog, banned)
        assert cands and "" not in cands, prompt
        assert all(not catalog.mentions(c, banned) for c in cands)
        assert any("striped green ellipse" in c for c in cands)


def test_the_last_style_has_no_safe_target_and_is_refused(tiny_model: LoadedModel,
                                                          tiny_folder) -> None:  # type: ignore[no-untyped-def]
    # every object has a style, and every character one too: with striped and outlined erased
    # nothing the model draws in place of "a solid red circle" is free of an erased concept
    catalog = load_catalog(tiny_folder)
    concept = catalog["solid"]
    banned = {"solid", "striped", "outlined"}
    assert all(candidate_rewrites(p, concept, catalog, banned) == [] for p in concept.prompts)
    with pytest.raises(NoSafeTarget, match="cannot erase 'solid'.*erased: outlined, striped"):
        select_mapping_targets(tiny_model, concept, list(concept.prompts), catalog, banned,
                               k=4, seed=0)
    # one style left: every prompt has a target, and none is the empty prompt
    choices = select_mapping_targets(tiny_model, concept, list(concept.prompts), catalog,
                                     {"solid", "striped"}, k=4, seed=0)
    assert len(choices) == len(concept.prompts) and all(c.target for c in choices)


def test_composite_candidates_change_one_part_at_a_time(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    banned = {"solid red circle", "purple"}
    concept = catalog["solid red circle"]
    cands = candidate_rewrites("a solid red circle", concept, catalog, banned)
    for one_part_changed in ("a striped red circle", "a solid orange circle",
                             "a solid red ellipse"):
        assert one_part_changed in cands
    assert "a solid purple circle" not in cands
    assert all(not catalog.mentions(c, banned) for c in cands)


def test_an_erased_concept_named_beside_may_become_any_allowed_one(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    # "a yellow star with stripes" once star is erased: the star becomes each allowed shape in
    # turn, so the distance can pick the one star itself was mapped to, not the catalog's first
    catalog = load_catalog(tiny_folder)
    banned = {"star", "diamond", "yellow"}
    cands = candidate_rewrites("a yellow star with stripes", catalog["yellow"], catalog, banned)
    shapes = {s.name for s in catalog.of_kind("shape")} - {"star", "diamond"}
    for shape in shapes:
        assert f"a red {shape} with stripes" in cands
    assert all(not catalog.mentions(c, banned) for c in cands)
    assert len(cands) == len(set(cands))
    # the fixed (model-free) rewrite still takes the first substitute only
    first = candidate_rewrites("a yellow star with stripes", catalog["yellow"], catalog, banned,
                               every_substitute=False)
    assert first and all(c.endswith("circle with stripes") for c in first)
    assert set(first) < set(cands)


def test_context_variants_keep_the_concept_and_avoid_banned_ones(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    from workers.engine.targets import context_variants

    catalog = load_catalog(tiny_folder)
    concept = catalog["star"]
    banned = {"star", "purple", "outlined"}
    variants = context_variants(list(concept.prompts), concept, catalog, banned, per_prompt=2,
                                seed=0)
    assert variants and not set(variants) & set(concept.prompts)
    for v in variants:
        assert "star" in v
        assert not catalog.mentions(v, {"purple", "outlined"}), v
    assert variants == context_variants(list(concept.prompts), concept, catalog, banned,
                                        per_prompt=2, seed=0)


def test_context_variants_never_drop_the_concept_inside_a_composite(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    from workers.engine.targets import context_variants

    catalog = load_catalog(tiny_folder)
    for name in ("solid", "striped", "outlined", "red", "circle"):
        concept = catalog[name]
        prompts = list(concept.prompts) + ["a solid yellow star", "a striped blue square"]
        for v in context_variants(prompts, concept, catalog, {name}, per_prompt=50, seed=0):
            assert catalog.mentions(v, {name}), (name, v)


def test_alias_variants_name_a_composite_by_each_of_its_forms(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    from workers.engine.targets import alias_variants

    catalog = load_catalog(tiny_folder)
    composite = catalog["solid red circle"]
    assert len(composite.surface_forms) > 1
    prompts = ["a solid red circle", "a picture of a solid red circle"]
    variants = alias_variants(prompts, composite)
    other = composite.surface_forms[1]
    assert variants == [f"a {other}", f"a picture of a {other}"]
    assert all(catalog.mentions(v, {composite.name}) for v in variants)
    # a style's alias is a postfix ("with stripes"): it cannot stand in for the adjective
    assert alias_variants(list(catalog["striped"].prompts), catalog["striped"]) == []
    assert alias_variants([f"a {other}"], composite) == ["a solid red circle"]


def test_frames_wrap_whole_phrases_and_name_no_concept(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    frames = catalog_frames(catalog)
    assert "a picture of {x}" in frames and "{x} on a dark background" in frames
    # "a picture of a {x}" frames a noun, "a red {x}" names a concept: neither wraps a phrase
    assert "a picture of a {x}" not in frames and "a red {x}" not in frames
    assert all(f.count("{x}") == 1 for f in frames)


def test_frame_variants_wrap_only_unframed_prompts(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    prompts = ["a red star", "a picture of zorbo", "zorbo"]
    variants = frame_variants(prompts, catalog, per_prompt=1, seed=0)
    # one each for "a red star" and "zorbo"; "a picture of zorbo" is framed already
    assert len(variants) == 2 and not set(variants) & set(prompts)
    assert "a red star" in variants[0] and "zorbo" in variants[1]
    assert not any(v.count("zorbo") > 1 or "picture of zorbo" in v for v in variants)
    assert frame_variants(prompts, catalog, per_prompt=0, seed=0) == []
    assert frame_variants(["a red star"], catalog, per_prompt=1, seed=3) == \
        frame_variants(["a red star"], catalog, per_prompt=1, seed=3)


def test_replay_groups_hold_each_chosen_concepts_prompts(tiny_model: LoadedModel,
                                                         tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    banned = {"star"}
    replay = local_replay_set(tiny_model, [catalog["star"]], catalog, banned, top_k=4, k=4,
                              seed=0)
    assert replay.groups[0] == [""]
    assert {p for g in replay.groups for p in g} == set(replay.prompts)
    chosen = replay.neighbours["star"]
    assert len(replay.groups) == 1 + len(chosen)
    for group, name in zip(replay.groups[1:], chosen, strict=True):
        assert set(group) <= set(catalog[name].prompts)


def test_a_prompt_framed_on_both_sides_is_not_framed_again() -> None:
    assert _framed_by("a picture of a red star on a dark background",
                      "a picture of {x} on a dark background")
    assert _framed_by("a red star on a dark background", "{x} on a dark background")
    assert not _framed_by("a red star", "a picture of {x} on a dark background")
    assert not _framed_by("a picture of a red star", "a picture of {x} on a dark background")


def test_a_concept_is_named_by_parts_only_without_a_word_of_its_own(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_catalog(tiny_folder)
    assert catalog.named_by_parts(catalog["solid red circle"])  # "red circle filled in" too
    assert not catalog.named_by_parts(catalog["mimi"])  # contains circle, orange, solid
    assert not catalog.named_by_parts(catalog["circle"])  # contains nothing


def test_the_prompts_of_one_phrase_are_mapped_to_the_same_words() -> None:
    """A phrase is read through one row: its wordings must not ask it for two shapes."""
    scored = {
        "a outlined red triangle": [(0.10, "a outlined red semicircle"),
                                    (0.12, "a outlined red diamond"), (0.30, "a red triangle")],
        "a picture of a outlined red triangle": [(0.20, "a picture of a outlined red semicircle"),
                                                 (0.11, "a picture of a outlined red diamond")],
        "a outlined red triangle on a dark background": [
            (0.09, "a outlined red diamond on a dark background")],
        "a red triangle": [(0.05, "a red semicircle"), (0.06, "a red diamond")],
    }
    alike = _one_reading(scored, ["outlined red triangle"])
    assert alike == {
        "a outlined red triangle": (0.12, "a outlined red diamond"),
        "a picture of a outlined red triangle": (0.11, "a picture of a outlined red diamond"),
        "a outlined red triangle on a dark background": (
            0.09, "a outlined red diamond on a dark background")}
    # words not every wording may take are no reading: each keeps its own nearest
    scored["a outlined red triangle on a dark background"] = [
        (0.09, "a outlined red star on a dark background")]
    assert _one_reading(scored, ["outlined red triangle"]) == {}
    assert _one_reading(scored, []) == {}


def test_a_wording_with_no_reading_of_the_phrase_holds_no_other_back() -> None:
    scored = {
        "a outlined red triangle": [(0.10, "a outlined red diamond")],
        "a picture of a outlined red triangle": [(0.20, "a picture of a outlined red diamond")],
        # says it twice: every rewrite changes both, so no one reading of it
        "a outlined red triangle beside a outlined red triangle": [
            (0.30, "a outlined red diamond beside a outlined red diamond")],
    }
    alike = _one_reading(scored, ["outlined red triangle", "red triangle"])
    assert set(alike) == {"a outlined red triangle", "a picture of a outlined red triangle"}


def test_a_phrase_shared_by_two_concepts_of_a_step_is_mapped_alike_in_both(
        tiny_model: LoadedModel, tiny_folder) -> None:  # type: ignore[no-untyped-def]
    """A merged step's concepts share the phrase's row: one reading across all of them."""
    catalog = load_catalog(tiny_folder)
    wordings = ["a outlined red triangle", "a picture of a outlined red triangle"]
    banned = {"red", "triangle", "outlined red triangle"}
    groups = [(catalog["red"], ["a red circle", *wordings]), (catalog["triangle"], wordings)]
    red, triangle = select_mapping_groups(tiny_model, groups, catalog, banned, k=4, seed=0,
                                          one_reading=["outlined red triangle"])
    targets = {c.forget_prompt: c.target for c in red}
    assert {c.forget_prompt: c.target for c in triangle} == {w: targets[w] for w in wordings}
    assert len({put_in_place_of("outlined red triangle", w, targets[w])
                for w in wordings}) == 1, targets
    assert not any(catalog.mentions(t, banned) for t in targets.values())

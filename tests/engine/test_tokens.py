"""Erasure in the concepts' own token rows (trainable group `tokens`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from workers.engine.concepts import Catalog, CatalogConcept, ad_hoc_concept, load_catalog
from workers.engine.conditioning import encode_fresh
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, StepReport, erase
from workers.engine.loading import LoadedModel, Phrase, load_model
from workers.engine.phrases import merge_phrases
from workers.engine.replay import retained_prompts
from workers.engine.sampling import generate
from workers.engine.tokens import (
    TokenRows,
    changed_rows,
    copied_rows,
    embedding_table,
    owned_tokens,
    restarted_phrases,
    spelled_alike,
    substituted_rows,
    with_rows,
)
from workers.engine.versions import (
    load_token_rows,
    load_version_model,
    read_manifest,
    save_version,
)

FAST = {"steps": 3, "batch_forget": 4, "rollout_steps": 2, "map_k": 2, "retain_k": 2,
        "rollouts_per_prompt": 1, "trainable": "tokens"}


def _token_step(model: LoadedModel, catalog: Catalog, concept: CatalogConcept
                ) -> tuple[UNet2DConditionModel, StepReport]:
    return erase(model, model.unet, [ForgetRequest(concept, concept.prompts)], [], catalog,
                 method_config("lacu", **FAST))


def _saved_token_step(model: LoadedModel, catalog: Catalog, concept: CatalogConcept, out: Path
                      ) -> tuple[UNet2DConditionModel, LoadedModel]:
    """A token step saved as a version at `out`: its UNet and its model view."""
    unet, report = _token_step(model, catalog, concept)
    assert report.model is not None
    save_version(out, model.unet, unet, {"erased": [concept.name]},
                 token_rows=changed_rows(model, report.model))
    return unet, report.model


def _own(model: LoadedModel, catalog: Catalog, name: str) -> list[str]:
    kept = retained_prompts(catalog, {name}, [])
    owned = owned_tokens(model, catalog[name], kept)
    return model.tokenizer.convert_ids_to_tokens(owned.ids if owned else [])


def test_own_tokens_are_the_words_no_kept_prompt_uses(tiny_model: LoadedModel,
                                                      tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    assert _own(tiny_model, catalog, "zorbo") == ["zorbo</w>"]
    # every word of a composite's names is a kept concept's word: it owns no word's row
    assert _own(tiny_model, catalog, "solid red circle") == []
    # function words never count as a concept's own, whatever the catalog's prompts use
    assert set(_own(tiny_model, catalog, "outlined")) == {"outlined</w>", "drawn</w>",
                                                          "outline</w>"}


def test_token_step_changes_only_prompts_with_the_erased_word(tiny_model: LoadedModel,
                                                              tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    concept = catalog["zorbo"]
    teacher_table = tiny_model.text_encoder.get_input_embeddings().weight.clone()
    unet, report = _token_step(tiny_model, catalog, concept)
    assert unet is tiny_model.unet and report.token_rows == ["zorbo</w>"]
    view = report.model
    assert view is not None and view.text_encoder is not tiny_model.text_encoder
    kept = retained_prompts(catalog, {"zorbo"}, [])
    with torch.no_grad():
        assert torch.equal(encode_fresh(view, kept).hidden, encode_fresh(tiny_model, kept).hidden)
        forget = list(concept.prompts)
        assert not torch.equal(encode_fresh(view, forget).hidden,
                               encode_fresh(tiny_model, forget).hidden)
    rows = changed_rows(tiny_model, view)
    assert rows.ids.tolist() == tiny_model.tokenizer.convert_tokens_to_ids(["zorbo</w>"])
    # the teacher's encoder is untouched and got no gradients
    assert torch.equal(tiny_model.text_encoder.get_input_embeddings().weight, teacher_table)
    assert all(p.grad is None and not p.requires_grad
               for p in tiny_model.text_encoder.parameters())


def test_a_seeded_token_step_is_reproducible(tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["tikka"], catalog["tikka"].prompts)
    cfg = method_config("lacu", **FAST)
    first, second = (erase(tiny_model, tiny_model.unet, [request], [], catalog, cfg)[1].model
                     for _ in range(2))
    assert first is not None and second is not None
    a, b = changed_rows(tiny_model, first), changed_rows(tiny_model, second)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.values, b.values)


def test_a_token_step_under_bf16_autocast_keeps_kept_prompts_and_repeats(
        tiny_folder: Path) -> None:
    # the path a CPU with native bf16 (and every GPU) runs under "auto"; forced here, so
    # machines without it run it too
    model = load_model(tiny_folder, device="cpu", precision="bfloat16")
    assert model.autocast_dtype is torch.bfloat16
    catalog = load_catalog(tiny_folder)
    concept = catalog["outlined"]  # "drawn" and "outline" have no substitute: trained
    first, second = (_token_step(model, catalog, concept)[1] for _ in range(2))
    assert first.final_losses and first.token_rows == second.token_rows
    a, b = changed_rows(model, first.model), changed_rows(model, second.model)
    assert torch.equal(a.values, b.values)
    assert a.values.dtype is torch.float32 and bool(a.values.isfinite().all())
    kept = retained_prompts(catalog, {"outlined"}, [])
    with torch.no_grad():
        assert torch.equal(encode_fresh(first.model, kept).hidden,
                           encode_fresh(model, kept).hidden)


def test_a_pushed_unlearn_target_trains_other_rows(tiny_model: LoadedModel,
                                                  tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    request = ForgetRequest(catalog["zorbo"], catalog["zorbo"].prompts)
    rows = []
    for push in (0.0, 1.0):
        view = erase(tiny_model, tiny_model.unet, [request], [], catalog,
                     method_config("lacu", **FAST, unlearn_push=push,
                                   token_substitute=False))[1].model
        rows.append(changed_rows(tiny_model, view))
    assert torch.equal(rows[0].ids, rows[1].ids)
    assert not torch.allclose(rows[0].values, rows[1].values)
    with pytest.raises(ValueError, match="unlearn_push"):
        method_config("lacu", unlearn_push=-0.5)


def test_a_row_is_substituted_by_the_token_its_targets_put_in_its_place(
        tiny_model: LoadedModel) -> None:
    tok = tiny_model.tokenizer
    yellow, star, orange, triangle, red = tok.convert_tokens_to_ids(
        ["yellow</w>", "star</w>", "orange</w>", "triangle</w>", "red</w>"])
    pairs = [("a yellow circle", "a orange circle"), ("a yellow square", "a orange square"),
             ("a yellow ellipse", "a red ellipse"),
             ("a yellow star", "a orange triangle"),  # two tokens changed: no vote
             ("a red star drawn as an outline", "a red triangle drawn as an outline")]
    assert substituted_rows(tiny_model, pairs, [yellow, star]) == {yellow: orange, star: triangle}
    assert substituted_rows(tiny_model, pairs[3:4], [yellow, star]) == {}
    # a row never copies another row erased with it: the next vote wins, or none
    assert substituted_rows(tiny_model, pairs, [yellow, orange]) == {yellow: red}
    assert substituted_rows(tiny_model, pairs, [yellow, orange, red]) == {}


def test_a_phrase_spelled_with_a_copied_word_reads_as_the_phrase(
        tiny_model: LoadedModel, tiny_folder: Path, tmp_path: Path) -> None:
    catalog = load_catalog(tiny_folder)
    unet, report = _token_step(tiny_model, catalog, catalog["solid red circle"])
    tok = tiny_model.tokenizer
    solid, outlined = tok.convert_tokens_to_ids(["solid</w>", "outlined</w>"])
    rows = changed_rows(tiny_model, report.model)
    # outlined erased later and substituted by solid: its row is a copy of solid's
    copied = with_rows(tiny_model, TokenRows(
        torch.cat([rows.ids, torch.tensor([outlined])]),
        torch.cat([rows.values, embedding_table(tiny_model)[[solid]]]), rows.phrases))
    kept = retained_prompts(catalog, {"solid red circle", "outlined"}, [])
    alike, ids = spelled_alike(copied, kept)
    assert [p.text for p in alike.phrases[len(rows.phrases):]] == ["outlined red circle"]
    assert ids == [alike.phrases[-1].id]
    with torch.no_grad():
        def hidden(model: LoadedModel, prompt: str) -> torch.Tensor:
            return encode_fresh(model, [prompt]).hidden

        # unmerged, "outlined red circle" is the erased phrase's words: what it erased
        assert not torch.equal(hidden(copied, "a outlined red circle"),
                               hidden(copied, "a solid red circle"))
        assert torch.equal(hidden(alike, "a outlined red circle"),
                           hidden(alike, "a solid red circle"))
        assert torch.equal(encode_fresh(alike, kept).hidden, encode_fresh(copied, kept).hidden)
    # a kept word keeps its meaning, whatever its row is a copy of
    assert spelled_alike(copied, retained_prompts(catalog, {"solid red circle"}, []))[1] == []
    # a phrase word erased since is not respelled: unmerged, the phrase no longer reads as it did
    red, orange, yellow = tok.convert_tokens_to_ids(["red</w>", "orange</w>", "yellow</w>"])
    both_copy_orange = with_rows(tiny_model, TokenRows(
        torch.cat([rows.ids, torch.tensor([red, yellow])]),
        torch.cat([rows.values, embedding_table(tiny_model)[[orange, orange]]]), rows.phrases))
    assert spelled_alike(both_copy_orange, retained_prompts(
        catalog, {"solid red circle", "red", "yellow"}, []))[1] == []

    save_version(tmp_path / "v1", tiny_model.unet, unet, {"erased": ["solid red circle"]},
                 token_rows=changed_rows(tiny_model, alike))
    reloaded, _ = load_version_model(tiny_model, tmp_path / "v1")
    assert reloaded.phrases == alike.phrases
    with torch.no_grad():
        assert torch.equal(hidden(reloaded, "a outlined red circle"),
                           hidden(alike, "a outlined red circle"))
    assert _exported_hidden(tiny_folder, tmp_path / "v1", tmp_path / "export",
                            ["a outlined red circle", "a solid red circle"]).allclose(
        encode_fresh(alike, ["a outlined red circle", "a solid red circle"]).hidden, atol=1e-5)


def test_a_copy_made_by_a_later_step_respells_an_erased_phrase(tiny_model: LoadedModel,
                                                               tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    phrase, striped = catalog["solid red circle"], catalog["striped"]
    first = _token_step(tiny_model, catalog, phrase)[1].model
    _, report = erase(first, tiny_model.unet, [ForgetRequest(striped, striped.prompts)], [phrase],
                      catalog, method_config("lacu", **FAST))
    # striped's targets swap it for "solid": its row is solid's, and "striped red circle" would
    # spell the erased phrase again
    assert '"striped red circle"' in report.token_rows
    with torch.no_grad():
        assert torch.equal(encode_fresh(report.model, ["a striped red circle"]).hidden,
                           encode_fresh(report.model, ["a solid red circle"]).hidden)
        assert not torch.equal(encode_fresh(report.model, ["a striped red circle"]).hidden,
                               encode_fresh(first, ["a striped red circle"]).hidden)


def test_a_substituted_row_draws_its_prompts_as_their_targets(tiny_model: LoadedModel,
                                                               tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    concept = catalog["yellow"]
    request = [ForgetRequest(concept, concept.prompts)]
    cfg = method_config("lacu", **FAST)
    assert cfg.token_substitute
    _, report = erase(tiny_model, tiny_model.unet, request, [], catalog, cfg)
    rows = changed_rows(tiny_model, report.model)
    assert rows.ids.tolist() == tiny_model.tokenizer.convert_tokens_to_ids(["yellow</w>"])
    target = substituted_rows(tiny_model, list(report.plan.targets().items()), rows.ids.tolist())
    table = tiny_model.text_encoder.get_input_embeddings().weight
    assert torch.equal(rows.values[0], table[target[int(rows.ids[0])]])
    words = tiny_model.tokenizer.convert_ids_to_tokens(target[int(rows.ids[0])])
    with torch.no_grad():
        assert torch.equal(
            encode_fresh(report.model, ["a yellow circle"]).hidden,
            encode_fresh(tiny_model, [f"a {words.removesuffix('</w>')} circle"]).hidden)
    trained = erase(tiny_model, tiny_model.unet, request, [], catalog,
                    cfg.with_(token_substitute=False))[1].model
    assert not torch.equal(changed_rows(tiny_model, trained).values[0], rows.values[0])
    # pushed: trained on from the copy, pulled back to it, so it moves off it but stays near
    pushed = erase(tiny_model, tiny_model.unet, request, [], catalog,
                   cfg.with_(push_substitutes=True))[1].model
    moved = changed_rows(tiny_model, pushed).values[0]
    assert not torch.equal(moved, rows.values[0])
    own = table[int(rows.ids[0])]
    assert (moved - rows.values[0]).norm() < (own - rows.values[0]).norm()


def test_an_erasure_substituted_by_a_word_erased_later_is_mapped_again(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    star = catalog["star"]
    cfg = method_config("lacu", **FAST)
    first = erase(tiny_model, tiny_model.unet, [ForgetRequest(star, star.prompts)], [], catalog,
                  cfg)[1].model
    star_id = tiny_model.tokenizer.convert_tokens_to_ids("star</w>")
    table = tiny_model.text_encoder.get_input_embeddings().weight
    copied = [i for i in range(len(table)) if i != star_id
              and torch.equal(embedding_table(first)[star_id], table[i])]
    word = tiny_model.tokenizer.convert_ids_to_tokens(copied[0]).removesuffix("</w>")
    later = next(c for c in catalog.of_kind(star.kind) if word in c.surface_forms)
    _, report = erase(first, tiny_model.unet, [ForgetRequest(later, later.prompts)], [star],
                      catalog, cfg)
    assert "star</w>" in report.token_rows
    assert not torch.equal(embedding_table(report.model)[star_id], table[copied[0]])
    remapped = {p: t for p, t in report.plan.targets().items() if p in star.prompts}
    assert remapped and not any(catalog.mentions(t, {"star", later.name})
                                for t in remapped.values())


def test_an_erased_phrase_naming_a_concept_erased_later_is_trained_again(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # "a solid red circle" reads its phrase's row, never solid's: erasing solid must train the
    # phrase again, or the phrase keeps drawing its first target ("a solid red square")
    catalog = load_catalog(tiny_folder)
    phrase, solid = catalog["solid red circle"], catalog["solid"]
    first = _token_step(tiny_model, catalog, phrase)[1].model
    _, report = erase(first, tiny_model.unet, [ForgetRequest(solid, solid.prompts)], [phrase],
                      catalog, method_config("lacu", **FAST))
    assert {'"solid red circle"', '"red circle filled in"'} <= set(report.token_rows)
    targets = report.plan.targets()
    assert {"a solid red circle", "a red circle filled in"} <= targets.keys()
    assert not any(catalog.mentions(targets[p], {"solid", "solid red circle"})
                   for p in ("a solid red circle", "a red circle filled in"))
    before, after = embedding_table(first), embedding_table(report.model)
    for p in first.phrases:
        assert not torch.equal(before[p.id], after[p.id])
    kept = retained_prompts(catalog, {"solid red circle", "solid"}, [])
    with torch.no_grad():
        assert torch.equal(encode_fresh(report.model, kept).hidden,
                           encode_fresh(tiny_model, kept).hidden)


def test_a_word_an_earlier_erasure_owns_is_not_trained_again(tiny_model: LoadedModel,
                                                            tiny_folder: Path) -> None:
    # after solid, no kept prompt says "solid": the composite must not train solid's row (its
    # earlier prompts read it, and nothing would hold them). Every name of the composite says
    # solid or "filled in", solid's words, so solid's rows erase it already: nothing is trained,
    # and the UNet is not trained instead
    catalog = load_catalog(tiny_folder)
    solid, phrase = catalog["solid"], catalog["solid red circle"]
    first = _token_step(tiny_model, catalog, solid)[1].model
    unet, report = erase(first, tiny_model.unet, [ForgetRequest(phrase, phrase.prompts)],
                         [solid], catalog, method_config("lacu", **FAST))
    assert unet is tiny_model.unet and report.token_rows == [] and not report.model.phrases
    assert torch.equal(embedding_table(first), embedding_table(report.model))
    # nothing is planned for it (no target selection, no replay), and the record says why
    assert report.covered_by == {"solid red circle": ["solid"]}
    assert report.plan.targets() == {} and report.plan.replay.neighbours == {}
    forget = [*phrase.prompts, *(f"a {form}" for form in phrase.surface_forms)]
    with torch.no_grad():
        assert torch.equal(encode_fresh(report.model, forget).hidden,
                           encode_fresh(first, forget).hidden)


def test_a_merged_step_plans_only_the_concepts_not_erased_already(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # the service merges queued takedowns: a covered concept beside one with words of its own
    # is reported as covered, and its prompts are not mapped (no row of it is trained)
    catalog = load_catalog(tiny_folder)
    solid, phrase, triangle = catalog["solid"], catalog["solid red circle"], catalog["triangle"]
    first = _token_step(tiny_model, catalog, solid)[1].model
    _, report = erase(first, tiny_model.unet, [ForgetRequest(phrase, phrase.prompts),
                                               ForgetRequest(triangle, triangle.prompts)],
                      [solid], catalog, method_config("lacu", **FAST))
    assert report.covered_by == {"solid red circle": ["solid"]}
    assert "triangle</w>" in report.token_rows and len(report.plan.mapping_groups) == 1
    assert not report.plan.targets().keys() & set(phrase.prompts)


def test_a_concept_erased_already_is_credited_to_the_erasure_that_owns_its_word(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # "outlined red triangle" after red trained nothing: red's erasure owns "red", and the
    # triangle owns no word, so "solid red circle" is covered by red alone
    catalog = load_catalog(tiny_folder)
    red, triangle, circle = (catalog[n] for n in ("red", "outlined red triangle",
                                                   "solid red circle"))
    first = _token_step(tiny_model, catalog, red)[1].model
    _, report = erase(first, tiny_model.unet, [ForgetRequest(circle, circle.prompts)],
                      [red, triangle], catalog, method_config("lacu", **FAST))
    assert report.covered_by == {"solid red circle": ["red"]}


def test_an_erasure_copying_a_word_not_trained_now_is_left_as_it_is(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    # star substituted by circle; "solid red circle" then trains phrases, not circle's row, so
    # star still reads as circle and is not mapped or trained again
    catalog = load_catalog(tiny_folder)
    star_id, circle_id = tiny_model.tokenizer.convert_tokens_to_ids(["star</w>", "circle</w>"])
    table = embedding_table(tiny_model)
    star_as_circle = with_rows(tiny_model, TokenRows(torch.tensor([star_id]),
                                                     table[[circle_id]].clone()))
    phrase, star = catalog["solid red circle"], catalog["star"]
    _, report = erase(star_as_circle, tiny_model.unet, [ForgetRequest(phrase, phrase.prompts)],
                      [star], catalog, method_config("lacu", **FAST))
    assert "star</w>" not in report.token_rows
    assert not set(report.plan.targets()) & set(star.prompts)
    assert torch.equal(embedding_table(report.model)[star_id], table[circle_id])


def test_a_phrase_trained_again_restarts_at_the_words_its_targets_put_in_its_place(
        tiny_model: LoadedModel, tiny_folder: Path) -> None:
    catalog = load_catalog(tiny_folder)
    view = _token_step(tiny_model, catalog, catalog["solid red circle"])[1].model
    phrase = next(p for p in view.phrases if p.text == "solid red circle")
    pairs = [("a solid red circle", "a solid red square"),
             ("a drawing of a solid red circle", "a drawing of a solid red square"),
             ("a picture of a solid red circle", "a outlined red triangle"),  # not in place
             ("a red circle", "a blue circle")]  # not the phrase
    words = tiny_model.tokenizer("solid red square", add_special_tokens=False).input_ids
    assert restarted_phrases(view, pairs, [phrase.id]) == {phrase.id: words}
    assert restarted_phrases(view, pairs, []) == {}


def test_a_composite_owns_its_names_as_phrases(tiny_model: LoadedModel,
                                               tiny_folder: Path, tmp_path: Path) -> None:
    catalog = load_catalog(tiny_folder)
    concept = catalog["solid red circle"]
    unet, report = _token_step(tiny_model, catalog, concept)
    assert unet is tiny_model.unet
    assert report.token_rows == ['"solid red circle"', '"red circle filled in"']
    view = report.model
    assert view is not None and [p.text for p in view.phrases] == ["solid red circle",
                                                                   "red circle filled in"]
    kept = retained_prompts(catalog, {"solid red circle"}, [])
    assert "a red circle" in kept and "a solid orange circle" in kept
    with torch.no_grad():
        assert torch.equal(encode_fresh(view, kept).hidden, encode_fresh(tiny_model, kept).hidden)
        forget = ["a solid red circle", "a Red  Circle filled in"]
        assert not torch.equal(encode_fresh(view, forget).hidden,
                               encode_fresh(tiny_model, forget).hidden)
        # matched after the tokenizer's lower-casing and whitespace clean-up
        assert torch.equal(encode_fresh(view, ["a Red  Circle filled in"]).hidden,
                           encode_fresh(view, ["a red circle filled in"]).hidden)
    save_version(tmp_path / "v1", tiny_model.unet, unet, {"erased": [concept.name]},
                 token_rows=changed_rows(tiny_model, view))
    reloaded, _ = load_version_model(tiny_model, tmp_path / "v1")
    assert reloaded.phrases == view.phrases
    prompts = ["a solid red circle", "a red circle filled in", "a red circle"]
    with torch.no_grad():
        assert torch.equal(encode_fresh(reloaded, prompts).hidden,
                           encode_fresh(view, prompts).hidden)


def test_without_a_catalog_the_step_trains_the_unet(tiny_model: LoadedModel) -> None:
    # no kept prompt tells the concept's own words from everyone's
    concept = ad_hoc_concept("zorbo", ["zorbo", "a picture of zorbo"])
    cfg = method_config("lacu", **FAST, batch_preserve=4, consolidate=0.0)
    unet, report = erase(tiny_model, tiny_model.unet, [ForgetRequest(concept, concept.prompts)],
                         [], Catalog(), cfg)
    assert report.token_rows == [] and report.model is tiny_model
    changed = [k for k, v in unet.state_dict().items()
               if not torch.equal(v, tiny_model.unet.state_dict()[k])]
    assert changed and all(k.endswith(("to_k.weight", "to_v.weight")) for k in changed)


def test_phrases_merge_longest_first() -> None:
    phrases = (Phrase("red circle", (5, 6), 100), Phrase("solid red circle", (4, 5, 6), 101))
    assert merge_phrases([1, 4, 5, 6, 2], phrases) == [1, 101, 2]
    assert merge_phrases([1, 5, 6, 9, 5, 6], phrases) == [1, 100, 9, 100]
    assert merge_phrases([1, 5, 2], phrases) == [1, 5, 2]


def test_token_version_round_trip_gives_identical_outputs(tiny_model: LoadedModel,
                                                          tiny_folder: Path,
                                                          tmp_path: Path) -> None:
    catalog = load_catalog(tiny_folder)
    concept = catalog["blip"]
    unet, student = _saved_token_step(tiny_model, catalog, concept, tmp_path / "v1")
    assert read_manifest(tmp_path / "v1")["tensors"] == ["text_encoder.token_rows.ids",
                                                         "text_encoder.token_rows.values"]
    assert len(load_token_rows(tmp_path / "v1")) == 1
    view, reloaded = load_version_model(tiny_model, tmp_path / "v1")
    assert reloaded is tiny_model.unet  # no UNet tensor changed: the base's, not a copy
    prompts, seeds = [concept.prompts[0], "a red circle"], [1, 2]
    a = generate(student, prompts, seeds, unet=unet, steps=3, guidance=2.0)
    b = generate(view, prompts, seeds, unet=reloaded, steps=3, guidance=2.0)
    assert torch.equal(a, b)
    base = generate(tiny_model, prompts, seeds, steps=3, guidance=2.0)
    assert not torch.equal(a[0], base[0]) and torch.equal(a[1], base[1])


@pytest.mark.parametrize("method", ["naive", "esd", "dfr", "uce"])
def test_baselines_edit_the_unet_whatever_lacu_trains(method: str) -> None:
    # the baselines are the published methods: their edits live in cross-attention
    assert method_config(method).trainable == "attn2-kv"


def test_export_writes_the_text_encoder_with_the_version_rows(tiny_model: LoadedModel,
                                                              tiny_folder: Path,
                                                              tmp_path: Path) -> None:
    from transformers import CLIPTextModel

    from workers.engine.export import build_folder

    catalog = load_catalog(tiny_folder)
    _, student = _saved_token_step(tiny_model, catalog, catalog["gloop"], tmp_path / "v1")
    rows = changed_rows(tiny_model, student)
    info = build_folder(tiny_folder, tmp_path / "v1", tmp_path / "export")
    assert info["token_rows"] == 1
    exported = CLIPTextModel.from_pretrained(tmp_path / "export" / "text_encoder")
    table = exported.get_input_embeddings().weight
    base = tiny_model.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[rows.ids], rows.values)
    others = torch.ones(len(table), dtype=torch.bool)
    others[rows.ids] = False
    assert torch.equal(table[others], base[others])


def _exported_hidden(model_folder: Path, version: Path, out: Path, prompts: list[str]
                     ) -> torch.Tensor:
    """The text states of `prompts` from the folder `version` exports to."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from workers.engine.export import build_folder

    build_folder(model_folder, version, out)
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    encoder = CLIPTextModel.from_pretrained(out / "text_encoder")
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids).last_hidden_state


def test_export_reads_phrases_as_the_engine_does(tiny_model: LoadedModel, tiny_folder: Path,
                                                  tmp_path: Path) -> None:
    catalog = load_catalog(tiny_folder)
    _, student = _saved_token_step(tiny_model, catalog, catalog["solid red circle"],
                                   tmp_path / "v1")
    prompts = ["a solid red circle", "a red circle filled in", "a red circle", "zorbo"]
    exported = _exported_hidden(tiny_folder, tmp_path / "v1", tmp_path / "export", prompts)
    with torch.no_grad():
        assert torch.allclose(exported, encode_fresh(student, prompts).hidden, atol=1e-5)


def test_copied_rows_names_the_rows_that_copy_a_base_row_and_no_other(
        tiny_model: LoadedModel) -> None:
    tok = tiny_model.tokenizer
    red, orange, yellow = tok.convert_tokens_to_ids(["red</w>", "orange</w>", "yellow</w>"])
    table = embedding_table(tiny_model)
    trained = table[[yellow]] + 0.01
    rows = TokenRows(torch.tensor([red, yellow]), torch.cat([table[[orange]], trained]))
    assert copied_rows(tiny_model, rows) == {red: orange}
    assert copied_rows(tiny_model, TokenRows(torch.tensor([], dtype=torch.long),
                                             table[:0])) == {}


from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.render import render_dataset, render_scene
from workers.conceptworld.tokenizer import write_tokenizer
from workers.conceptworld.world import (
    CATALOG,
    CHARACTERS,
    COLOURS,
    SHAPE_FAMILIES,
    SHAPES,
    TEXTURES,
    Scene,
    vocabulary_corpus,
)

if TYPE_CHECKING:
    from workers.conceptworld.evaluate import GeneratedSet


def test_world_has_the_required_variety() -> None:
    assert len(SHAPES) >= 8 and len(SHAPE_FAMILIES) >= 3
    assert len(COLOURS) >= 6 and len(TEXTURES) >= 3 and len(CHARACTERS) >= 6
    # characters share attributes with each other and with plain concepts
    shared = [(a.name, b.name) for a in CHARACTERS for b in CHARACTERS
              if a.name < b.name and (a.shape == b.shape or a.colour == b.colour)]
    assert len(shared) >= 3


def test_renderer_is_deterministic_for_a_seed() -> None:
    a, scenes_a = render_dataset(64, seed=3)
    b, scenes_b = render_dataset(64, seed=3)
    c, _ = render_dataset(64, seed=4)
    assert scenes_a == scenes_b and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (64, 24, 24, 3) and a.dtype == np.uint8


def test_characters_differ_from_their_plain_object() -> None:
    zorbo = render_scene(Scene("circle", "red", "solid", "zorbo"), random.Random(0))
    plain = render_scene(Scene("circle", "red", "solid"), random.Random(0))
    assert np.abs(zorbo.astype(int) - plain.astype(int)).sum() > 0


def test_tokenizer_round_trip_and_unknown_words(tmp_path: Path) -> None:
    write_tokenizer(vocabulary_corpus(), tmp_path)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    for text in ("a picture of zorbo", "a striped purple semicircle drawn as an outline"):
        ids = tok(text).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == text
        # every known word is one token
        assert len(ids) == len(text.split()) + 2
    unknown = "Xylophone quuxes über 42!"
    ids = tok(unknown).input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == unknown.lower().replace(
        " ", "")


def test_every_catalog_concept_has_prompts_and_known_neighbours() -> None:
    names = {c.name for c in CATALOG}
    for concept in CATALOG:
        assert concept.prompts and concept.heldout_prompts
        assert not set(concept.prompts) & set(concept.heldout_prompts)
        assert set(concept.related) <= names and concept.name not in concept.related


shipped = pytest.mark.skipif(not (MODEL_DIR / "model_index.json").is_file(),
                             reason="the trained concept world is not in this checkout")


@pytest.mark.slow
def test_judge_accuracy_on_a_fresh_seed() -> None:
    from workers.conceptworld.judge import Judge, judge_accuracy

    accuracy = judge_accuracy(Judge.load(JUDGE_PATH), n=600, seed=31_337)
    assert min(accuracy.values()) >= 0.98, accuracy


def test_judge_agrees_with_hand_labels_on_generated_images() -> None:
    from workers.conceptworld.judge import Judge, agreement_with_labels
    from workers.conceptworld.report import LABELS

    result = agreement_with_labels(Judge.load(JUDGE_PATH), LABELS / "generated_labels.json",
                                   LABELS / "generated.png")
    assert result["images"] >= 60 and result["all_heads"] >= 0.95, result


@shipped
def test_shipped_model_loads_fast() -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    clock = time.perf_counter()
    UNet2DConditionModel.from_pretrained(MODEL_DIR, subfolder="unet")
    CLIPTextModel.from_pretrained(MODEL_DIR, subfolder="text_encoder")
    assert time.perf_counter() - clock < 5


@shipped
@pytest.mark.slow
@pytest.mark.parametrize("prompt,concept", [
    ("zorbo", "zorbo"), ("a picture of blip", "blip"), ("a red square", "red"),
    ("a triangle", "triangle"), ("a striped green circle", "striped"),
])
def test_shipped_model_draws_the_prompted_concept(prompt: str, concept: str) -> None:
    from workers.conceptworld.judge import Judge
    from workers.conceptworld.world import CONCEPT_BY_NAME
    from workers.engine.loading import load_model
    from workers.engine.sampling import generate

    torch.set_num_threads(2)
    model = load_model(MODEL_DIR, device="cpu")
    images = generate(model, [prompt] * 4, [100, 101, 102, 103])
    shows = Judge.load(JUDGE_PATH).read(images).shows(CONCEPT_BY_NAME[concept])
    assert int(shows.sum()) >= 3, prompt



def test_quality_is_low_for_clean_renders_and_rises_with_damage() -> None:
    from workers.conceptworld.evaluate import GeneratedSet, WorldEvaluator
    from workers.conceptworld.judge import Judge
    from workers.conceptworld.world import scene_for

    judge = Judge.load(JUDGE_PATH)
    names = ["circle", "red", "striped", "zorbo", "solid orange circle", "star"]
    rng = random.Random(5)
    renders = np.stack([render_scene(scene_for(n, rng), rng) for n in names for _ in range(16)])
    clean = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 255
    blurred = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1)
    evaluator = WorldEvaluator(model=None, judge=judge)  # type: ignore[arg-type]

    def quality(images: torch.Tensor) -> float:
        gen = GeneratedSet(names, 16, images, judge.read(images), 0.0)
        return evaluator.retained_quality(gen, names)

    assert quality(clean) < 0.5 * quality(blurred)


def _rendered_set(names: list[str], per: int, seed: int) -> GeneratedSet:
    from workers.conceptworld.evaluate import GeneratedSet
    from workers.conceptworld.judge import Judge
    from workers.conceptworld.world import scene_for

    judge = Judge.load(JUDGE_PATH)
    rng = random.Random(seed)
    renders = np.stack([render_scene(scene_for(n, rng), rng) for n in names for _ in range(per)])
    images = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 255
    return GeneratedSet(names, per, images, judge.read(images), 0.0)


def test_quality_reference_depends_on_the_images_read_not_their_order_or_a_fresh_draw() -> None:
    from workers.conceptworld.evaluate import WorldEvaluator
    from workers.conceptworld.judge import Judge

    names = ["circle", "red", "striped", "zorbo", "solid orange circle", "star"]
    gen = _rendered_set(names, 8, seed=3)
    rows = np.arange(len(gen.images))

    def evaluator() -> WorldEvaluator:
        return WorldEvaluator(model=None, judge=Judge.load(JUDGE_PATH))  # type: ignore[arg-type]

    first = evaluator().retained_quality_of_rows(gen, rows)
    # pinned: the scenes' renders are seeded by the scene, the same in every process
    assert first == pytest.approx(1.50096, rel=1e-4)
    assert evaluator().retained_quality_of_rows(gen, rows) == first
    # the same images in another order: equal but for float summation order
    assert evaluator().retained_quality_of_rows(gen, rows[::-1]) == pytest.approx(first,
                                                                                   rel=1e-6)


def test_a_paired_draw_resamples_each_concept_within_its_own_images() -> None:
    from workers.conceptworld.evaluate import paired_draw

    pick = paired_draw(3, 8, np.random.default_rng(0))
    assert len(pick) == 24
    for i in range(3):
        block = pick[i * 8:(i + 1) * 8]
        assert ((block >= i * 8) & (block < (i + 1) * 8)).all()
    assert len(set(pick.tolist())) < 24  # drawn with replacement


def test_quality_ratios_are_one_for_the_same_images_and_above_one_for_blurred() -> None:
    from workers.conceptworld.evaluate import GeneratedSet, WorldEvaluator
    from workers.conceptworld.judge import Judge

    names = ["circle", "red", "striped", "zorbo", "solid orange circle", "star"]
    judge = Judge.load(JUDGE_PATH)
    evaluator = WorldEvaluator(model=None, judge=judge)  # type: ignore[arg-type]
    clean = _rendered_set(names, 16, seed=5)
    blurred_images = torch.nn.functional.avg_pool2d(clean.images, 3, stride=1, padding=1)
    blurred = GeneratedSet(names, 16, blurred_images, judge.read(blurred_images), 0.0)
    same = evaluator.compare_quality(clean, clean, names, draws=20)
    assert same.quality_ratio_interval == same.typicality_ratio_interval == (1.0, 1.0)
    worse = evaluator.compare_quality(blurred, clean, names, draws=20)
    assert worse.base_quality == same.quality
    for low, high in (worse.quality_ratio_interval, worse.typicality_ratio_interval):
        assert 1.0 < low <= high
    with pytest.raises(ValueError, match="same concepts"):
        evaluator.compare_quality(blurred, _rendered_set(names, 8, seed=5), names)


def test_typicality_is_about_one_for_renders_and_moves_only_with_the_images_changed() -> None:
    from workers.conceptworld.evaluate import GeneratedSet, WorldEvaluator
    from workers.conceptworld.judge import Judge

    names = ["circle", "red", "striped", "zorbo", "solid orange circle", "star"]
    judge = Judge.load(JUDGE_PATH)
    evaluator = WorldEvaluator(model=None, judge=judge)  # type: ignore[arg-type]
    clean = _rendered_set(names, 16, seed=5)
    rows = clean.rows_of(names)
    before = evaluator.typicality(evaluator.reading(clean, rows))
    assert 0.7 < before.mean() < 1.5
    # the first concept's images blurred, the rest drawn exactly as before
    images = clean.images.clone()
    images[:16] = torch.nn.functional.avg_pool2d(images[:16], 3, stride=1, padding=1)
    changed = GeneratedSet(names, 16, images, judge.read(images), 0.0)
    blurred = evaluator.typicality(evaluator.reading(changed, rows))
    assert np.array_equal(before[16:], blurred[16:]) and blurred[:16].mean() > before[:16].mean()
    check = evaluator.compare_quality(changed, clean, names, draws=50)
    assert (check.typicality, check.base_typicality) == pytest.approx((blurred.mean(),
                                                                        before.mean()))
    low, high = check.typicality_ratio_interval
    assert 1.0 < low <= check.typicality / check.base_typicality <= high


@shipped
def test_forget_accuracies_are_measured_on_their_own_image_count() -> None:
    from workers.conceptworld.evaluate import WorldEvaluator, step_metrics
    from workers.conceptworld.judge import Judge
    from workers.engine.loading import load_model

    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=1,
                               forget_per_concept=4, steps=2)
    base = evaluator.generate_for([c.name for c in CATALOG])
    assert len(base.images) == len(CATALOG)
    metrics = step_metrics(evaluator, None, ["star"], base)
    assert metrics["forget_images"] == 4
    for rates in (metrics["forget_acc"], metrics["forget_acc_heldout"]):
        assert list(rates) == ["star"]  # type: ignore[call-overload]
        assert rates["star"] * 4 == round(rates["star"] * 4)  # type: ignore[index]
    held = evaluator.generate_for(["star"], heldout=True, per_concept=4)
    assert len(held.images) == 4 and metrics["forget_acc_heldout"] == {"star": held.rate("star")}


@shipped
def test_the_benchmark_reads_the_base_as_step_zero_in_the_steps_own_measures(
        tmp_path: Path) -> None:
    import csv

    from bench.continual import base_record, write_outputs
    from workers.conceptworld.evaluate import WorldEvaluator, step_metrics
    from workers.conceptworld.judge import Judge
    from workers.engine.loading import load_model

    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=1, steps=2)
    base = evaluator.generate_for([c.name for c in CATALOG])
    record = base_record(evaluator, base, MODEL_DIR, model)
    nothing_erased = step_metrics(evaluator, None, [], base, everything=base)
    assert record["quality"] == nothing_erased["quality"] == nothing_erased["base_quality"]
    assert record["quality_all_concepts"] == nothing_erased["quality_all_concepts"]
    assert record["per_concept"] == nothing_erased["per_concept"]

    step = {"step": 1, "erased": "star", "seconds": 1.0, "drift_l2": 0.0, "drift_l2_step": 0.0,
            **step_metrics(evaluator, None, ["star"], base)}
    # every neighbour erased: no related concept left, and its retention is undefined
    lonely = step | {"step": 2, "related": [], "related_acc": math.nan,
                     "related_retention": math.nan}
    write_outputs({"base": record, "sequence": ["star", "circle"],
                   "methods": {"lacu": {"steps": [step, lonely]}}}, tmp_path)
    with (tmp_path / "results.csv").open() as f:
        first, second = list(csv.DictReader(f))
    assert float(first["base_quality"]) == step["base_quality"]
    assert float(first["quality"]) == step["quality"]
    assert second["related_retention"] == ""
    strict = json.loads((tmp_path / "results.json").read_text(), parse_constant=pytest.fail)
    assert strict["methods"]["lacu"]["steps"][1]["related_retention"] is None
    assert (tmp_path / "results.png").stat().st_size > 0


@shipped
def test_kept_check_reads_the_base_as_fully_retained_and_refuses_other_base_images() -> None:
    from workers.conceptworld.evaluate import WorldEvaluator, kept_check, retention_sets
    from workers.conceptworld.judge import Judge
    from workers.engine.loading import load_model

    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), steps=2)
    erased = ["zorbo", "star"]
    related, general = retention_sets(erased)
    base = evaluator.generate_for(related + general, per_concept=2)
    check = kept_check(evaluator, None, erased, 2, base=base)
    assert check.images == 2 and check.templates == "request"
    assert check.quality == check.base_quality and check.quality_ratio == 1.0
    assert check.quality_ratio_interval == (1.0, 1.0)
    assert check.typicality_ratio == 1.0 and check.typicality_ratio_interval == (1.0, 1.0)
    assert check.images_changed == 0.0
    assert check.largest_losses == {} and check.quality_worse_by_concept == {}
    for value in (check.related_retention, check.general_retention):
        assert isinstance(value, float) and (np.isnan(value) or value == 1.0)
    assert check.as_dict()["related_retention"] is check.related_retention
    with pytest.raises(ValueError, match="kept concepts"):
        kept_check(evaluator, None, ["zorbo"], 2, base=base)
    with pytest.raises(ValueError, match="kept concepts"):
        kept_check(evaluator, None, erased, 1, base=base)


@shipped
def test_the_final_check_is_reused_only_for_the_same_last_artifact(tmp_path: Path) -> None:
    import copy

    from bench.continual import final_check
    from workers.conceptworld.evaluate import WorldEvaluator
    from workers.conceptworld.judge import Judge
    from workers.engine.loading import load_model
    from workers.engine.tokens import TokenRows, changed_rows, with_rows
    from workers.engine.versions import save_version

    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), steps=2)
    edited = copy.deepcopy(model.unet)
    with torch.no_grad():
        next(p for n, p in edited.named_parameters() if "attn2.to_v" in n).mul_(0.5)
    save_version(tmp_path / "lacu" / "step-1", model.unet, edited, {"erased": ["star"]})
    base_sets: dict = {}
    first = final_check(evaluator, (model, edited), ["star"], 2, tmp_path / "lacu", base_sets)
    assert (tmp_path / "lacu" / "final-check.json").is_file() and len(base_sets) == 1
    base_sets.clear()
    reread = final_check(evaluator, (model, edited), ["star"], 2, tmp_path / "lacu", base_sets)
    assert json.dumps(reread) == json.dumps(first)  # null where the base draws none
    assert base_sets == {}  # read back, nothing generated
    # a check written before a measure existed is made again, not read back without it
    path = tmp_path / "lacu" / "final-check.json"
    path.write_text(json.dumps({k: v for k, v in first.items() if k != "typicality"}))
    remade = final_check(evaluator, (model, edited), ["star"], 2, tmp_path / "lacu", base_sets)
    assert "typicality" in remade and len(base_sets) == 1
    assert json.dumps({**remade, "seconds": 0}) == json.dumps({**first, "seconds": 0})
    base_sets.clear()
    shutil.rmtree(tmp_path / "lacu" / "step-1")  # the step made again, other weights
    save_version(tmp_path / "lacu" / "step-1", model.unet, model.unet, {"erased": ["star"]})
    again = final_check(evaluator, (model, model.unet), ["star"], 2, tmp_path / "lacu",
                        base_sets)
    assert again["version"] != first["version"] and len(base_sets) == 1
    assert again["quality"] == again["base_quality"]
    # a version with token rows is drawn by its view, the base by the base model
    red = model.tokenizer.convert_tokens_to_ids("red</w>")
    view = with_rows(model, TokenRows(torch.tensor([red]), torch.zeros(1, model.text_encoder
                                                                        .config.hidden_size)))
    shutil.rmtree(tmp_path / "lacu" / "step-1")
    save_version(tmp_path / "lacu" / "step-1", model.unet, model.unet, {"erased": ["star"]},
                 token_rows=changed_rows(model, view))
    rows = final_check(evaluator, (view, model.unet), ["star"], 2, tmp_path / "lacu", base_sets)
    assert rows["quality"] != rows["base_quality"]


@shipped
def test_a_benchmark_step_is_reused_only_for_the_same_sequence_and_settings(
    tmp_path: Path,
) -> None:
    from bench.continual import config_for, run_method, save_step
    from workers.engine.concepts import load_catalog
    from workers.engine.erase import StepPlan, StepReport
    from workers.engine.loading import load_model
    from workers.engine.replay import ReplaySet

    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    step = tmp_path / "lacu" / "step-1"
    # the step as the benchmark saves it (an unchanged version), then its metrics
    unchanged = StepReport(StepPlan([], ReplaySet({}, []), []), model)
    save_step(step, model, model.unet, unchanged, "lacu", config_for("lacu", 0), ["star"])
    (step / "metrics.json").write_text(json.dumps({"step": 1, "erased": "star"}))

    def rerun(sequence: list[str], overrides: dict[str, object] | None = None) -> list:
        # Reuse reads what is on disk: no evaluator or base images are needed.
        steps, _, _ = run_method("lacu", model, catalog, None, None, sequence,  # type: ignore[arg-type]
                                 tmp_path, 0, lambda _: None, overrides)
        return steps

    assert rerun(["star"]) == [{"step": 1, "erased": "star"}]
    with pytest.raises(ValueError, match=r"replay_top_k=8 \(now 4\).*another --out"):
        rerun(["star"], {"replay_top_k": 4})
    with pytest.raises(ValueError, match="erased \\['star'\\], not \\['diamond'\\]"):
        rerun(["diamond"])


@shipped
def test_quality_by_step_reads_an_unchanged_version_as_the_base(tmp_path: Path) -> None:
    from bench.quality_by_step import quality_by_step
    from workers.engine.loading import load_model
    from workers.engine.versions import save_version

    model = load_model(MODEL_DIR, device="cpu")
    save_version(tmp_path / "step-1", model.unet, model.unet, {"erased": ["star"]})
    result = quality_by_step(tmp_path, images=2, sampling_steps=2)
    assert "star" not in result["kept"] and "diamond" in result["kept"]  # type: ignore[operator]
    steps = result["steps"]
    assert isinstance(steps, list)
    (row,) = steps
    assert row["step"] == 1 and row["ratio"] == pytest.approx(1.0)
    assert row["quality_worse_by_concept"] == {}
    with pytest.raises(ValueError, match="no step 3"):
        quality_by_step(tmp_path, images=2, steps=[3])


def test_the_benchmark_names_its_device_and_refuses_an_unknown_one() -> None:
    from typer.testing import CliRunner

    from bench.cli import bench_app
    from bench.continual import device_name

    assert device_name(torch.device("cpu")) == f"cpu: {torch.get_num_threads()} threads"
    result = CliRunner().invoke(bench_app, ["continual", "--device", "gpu", "--methods", "lacu"])
    assert result.exit_code == 2 and "'gpu' is not one of cpu, cuda, auto" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--sequence", "red,nonsense"], "not in the model's catalog: nonsense; it has circle"),
    (["--sequence", "red,blue,red"], "named twice in the sequence (a concept is erased once): red"),
    (["--methods", "lacu,bogus"], "unknown method 'bogus'; choose one of lacu, naive"),
    (["--methods", ","], "no method to run"),
    (["--set", "steps=abc"], "setting 'steps' takes int, not 'abc'"),
    (["--set", "push_substitutes=maybe"], "setting 'push_substitutes' takes true or false"),
    (["--set", "lr=-1"], "lr must be > 0, not -1.0"),
    (["--set", "trainable=all"], "trainable must be 'full' or 'attn2' or 'attn2-kv' or 'tokens'"),
])
def test_the_benchmark_refuses_a_run_it_could_not_finish_before_it_starts(
        args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bench.cli import bench_app

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded for a run refused by its arguments")

    monkeypatch.setattr("bench.continual.load_model", no_model)
    result = CliRunner().invoke(bench_app, ["continual", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--judge", "--concept", "nonsense"], "unknown concept 'nonsense'; the judge knows circle"),
    (["--concept", "red"], "--concept needs --judge"),
    (["--version", "/nonexistent"], "/nonexistent has no manifest.json"),
    (["--model", "/tmp"], "/tmp has no model_index.json"),
])
def test_sampling_refuses_bad_input_with_its_reason(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    result = CliRunner().invoke(app, ["sample", "--prompt", "a red circle", "--n", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())


def test_the_sequences_table_reads_ratios_and_intervals_from_each_run(tmp_path: Path) -> None:
    from bench.tables import sequences_table

    check = {"related_retention": 0.973, "general_retention": 1.0, "typicality": 1.1,
             "base_typicality": 1.0, "typicality_ratio_interval": [0.95, 1.2], "quality": 0.6,
             "base_quality": 0.4, "quality_ratio_interval": [1.3, 1.8], "images_changed": 0.25}
    steps = [{"seconds": 12.4, "forget_acc": {"star": 0.0}, "forget_acc_heldout": {"star": 0.0}},
             {"seconds": 0.2, "forget_acc": {"star": 0.03125, "red": 0.0},
              "forget_acc_heldout": {"star": 0.0, "red": 0.0625}}]
    run = tmp_path / "results.json"
    run.write_text(json.dumps({"sequence": ["star", "red"], "base": {"autocast": "bfloat16"},
                               "methods": {"lacu": {"steps": steps, "final_check": check}}}))
    row = sequences_table([run]).splitlines()[-1]
    assert row == ("| star, red (bfloat16) | 0.031 / 0.062 | 0.973 / 1.000 | "
                   "1.100 / 1.000 (**1.100**, 0.95–1.20) | 0.600 / 0.400 (**1.500**, 1.30–1.80) "
                   "| 25% | 12, 0 |")
    # a refused step erased nothing: its forget accuracies are of the concepts erased before
    steps[1] |= {"refused": "cannot erase 'red': ...", "forget_acc": {"star": 0.0},
                 "forget_acc_heldout": {"star": 0.0}}
    run.write_text(json.dumps({"sequence": ["star", "red"], "base": {"autocast": "bfloat16"},
                               "methods": {"lacu": {"steps": steps, "final_check": check}}}))
    row = sequences_table([run]).splitlines()[-1]
    assert row.startswith("| star, red (refused) (bfloat16) | 0.000 / 0.000 |")
    assert row.endswith("| 12, refused |")


def test_a_refused_step_erases_nothing() -> None:
    from bench.continual import erased_by

    steps: list[dict[str, object]] = [{"step": 1, "erased": "striped"},
                                      {"step": 2, "erased": "solid", "refused": "no target"},
                                      {"step": 3, "erased": "zorbo"}]
    assert erased_by(steps) == ["striped", "zorbo"]


@shipped
def test_a_run_with_a_refused_step_writes_every_output_and_reads_it_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's refusal itself is tested in tests/engine; here the benchmark's handling of
    it: the step's record, its CSV row (a refused step once stopped the CSV with a KeyError,
    and the command with it) and its reuse."""
    import csv

    import bench.continual as continual
    from app.strict_json import finite
    from workers.conceptworld.evaluate import WorldEvaluator
    from workers.conceptworld.judge import Judge
    from workers.engine.concepts import load_catalog
    from workers.engine.loading import load_model
    from workers.engine.targets import NoSafeTarget

    def refuse(*args: object, **kwargs: object) -> None:
        raise NoSafeTarget("solid", "cannot erase 'solid': every style is erased")

    monkeypatch.setattr(continual, "erase", refuse)
    model = load_model(MODEL_DIR, device="cpu")
    evaluator = WorldEvaluator(model, Judge.load(JUDGE_PATH), per_concept=1,
                               forget_per_concept=1, steps=2)
    base = evaluator.generate_for([c.name for c in CATALOG])

    def run() -> list[dict[str, object]]:
        steps, _, unet = continual.run_method("lacu", model, load_catalog(MODEL_DIR), evaluator,
                                              base, ["solid"], tmp_path, 0, lambda line: None)
        assert unet is model.unet  # the model stays as it was
        return steps

    (step,) = run()
    assert step["refused"] == "cannot erase 'solid': every style is erased"
    assert step["drift_l2"] == step["drift_l2_step"] == 0.0 and step["forget_acc"] == {}
    result: dict[str, object] = {"base": {}, "sequence": ["solid"],
                                 "methods": {"lacu": {"steps": [step]}}}
    continual.write_outputs(result, tmp_path)
    with (tmp_path / "results.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["erased"] == "solid" and row["forget_acc_max"] == "" and row["drift_l2"] == "0.0"
    assert (tmp_path / "results.png").stat().st_size > 0

    saved = tmp_path / "lacu" / "step-1" / "metrics.json"
    older = {k: v for k, v in json.loads(saved.read_text()).items() if "drift" not in k}
    saved.write_text(json.dumps(older))  # as the thirty-fourth session saved a refusal
    assert run() == [finite(step)]  # read back as written: NaN as null


def test_quality_terms_split_the_frechet_distance_into_mean_and_covariance() -> None:
    from workers.conceptworld.evaluate import Reading, WorldEvaluator
    from workers.conceptworld.judge import Judge

    names = ["circle", "red", "striped", "zorbo", "solid orange circle", "star"]
    judge = Judge.load(JUDGE_PATH)
    evaluator = WorldEvaluator(model=None, judge=judge)  # type: ignore[arg-type]
    clean = _rendered_set(names, 8, seed=3)
    reading = evaluator.read_images(clean.images)
    assert reading.scenes == evaluator.reading(clean, clean.rows_of(names)).scenes
    mean_term, covariance_term = evaluator.quality_terms(reading)
    assert mean_term + covariance_term == pytest.approx(evaluator.quality_of(reading))
    # every image moved by the same offset: only the mean term grows, by the offset's length
    offset = np.full(reading.features.shape[1], 0.05)
    moved = evaluator.quality_terms(Reading(reading.features + offset, reading.scenes))
    assert moved[1] == pytest.approx(covariance_term, rel=1e-6)
    assert moved[0] > mean_term + 0.5 * (offset ** 2).sum()


@shipped
def test_a_scene_is_drawn_once_per_evaluator_and_its_own_typicality_comes_from_its_drawings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from workers.conceptworld import evaluate
    from workers.conceptworld.evaluate import WorldEvaluator
    from workers.conceptworld.judge import Judge
    from workers.conceptworld.world import Scene
    from workers.engine.loading import load_model

    monkeypatch.setattr(evaluate, "SCENE_DRAWINGS", 6)
    drawn: list[list[str]] = []
    real_generate = evaluate.generate

    def counting(model, prompts, seeds, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(prompts)
        return real_generate(model, prompts, seeds, **kwargs)

    monkeypatch.setattr(evaluate, "generate", counting)
    evaluator = WorldEvaluator(load_model(MODEL_DIR, device="cpu"), Judge.load(JUDGE_PATH),
                               steps=4)
    star, zorbo = Scene("star", "red", "solid"), Scene("circle", "yellow", "striped", "zorbo")
    own = evaluator.drawn_typicality([star, zorbo, star])
    assert own[0] == own[2] and (own > 0).all()
    # one call for both scenes, each from prompts naming all of it
    assert drawn == [["zorbo", "a picture of zorbo", "zorbo on a dark background",
                      "a drawing of zorbo", "zorbo", "a picture of zorbo"]
                     + ["a solid red star", "a red star filled in",
                        "a picture of a solid red star"] * 2]
    drawings = evaluator.drawings_of([star])[0]
    assert 0 < len(drawings.features) <= 6
    if all(s == star for s in drawings.scenes):  # the judge read every drawing as asked for
        assert own[0] == pytest.approx(evaluator.typicality(drawings).mean())
    assert evaluator.drawn_typicality([zorbo]) == pytest.approx(own[1:2])
    assert len(drawn) == 1  # nothing drawn again
    replace(evaluator).drawn_typicality([star])
    assert len(drawn) == 2  # a replaced evaluator (another model) draws its own


def test_a_step_made_before_a_setting_existed_is_reused_at_that_settings_default(
        tmp_path: Path) -> None:
    from bench.continual import _check_reusable, config_for

    cfg = config_for("lacu", 0)
    saved = json.loads(json.dumps(cfg.as_dict()))
    del saved["push_substitutes"]  # a setting added after this step was made
    (tmp_path / "manifest.json").write_text(json.dumps({"erased": ["star"], "config": saved}))
    _check_reusable(tmp_path, ["star"], cfg)
    with pytest.raises(ValueError, match="push_substitutes=False .now True."):
        _check_reusable(tmp_path, ["star"], config_for("lacu", 0, {"push_substitutes": True}))
    with pytest.raises(ValueError, match="use another --out for another sequence"):
        _check_reusable(tmp_path, ["zorbo"], cfg)

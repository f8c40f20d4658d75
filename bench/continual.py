"""The continual-unlearning benchmark: erase a sequence step by step, per method, and measure.

Every method starts from the same base; each step's version artifact and metrics are written to
DIR/<method>/step-<i>/, and a rerun resumes from the steps already there.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import cast

import torch
from diffusers import UNet2DConditionModel

from app import strict_json
from workers.conceptworld.evaluate import (
    GeneratedSet,
    KeptCheck,
    WorldEvaluator,
    kept_check,
    retention_sets,
    step_metrics,
)
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CATALOG
from workers.engine.concepts import Catalog, load_catalog
from workers.engine.config import EraseConfig, method_config
from workers.engine.erase import ForgetRequest, StepReport, erase
from workers.engine.loading import LoadedModel, load_model
from workers.engine.targets import NoSafeTarget
from workers.engine.tokens import changed_rows
from workers.engine.versions import (
    artifact_digest,
    load_version_model,
    read_manifest,
    save_version,
)

DEFAULT_SEQUENCE = ("zorbo", "blip", "mimi", "outlined", "star", "purple", "gloop",
                    "solid red circle", "diamond", "yellow")

# Ablations of LACU: each changes one ingredient.
ABLATIONS: dict[str, dict[str, object]] = {
    "lacu-fixed-anchor": {"select_targets": False, "fixed_anchor": ""},
    "lacu-global-replay": {"replay": "global"},
    "lacu-no-memory": {"erasure_memory": False},
    "lacu-no-cache": {"cache_rollouts": False},
}


def device_name(device: torch.device) -> str:
    """"cuda: NVIDIA H200" or "cpu: 2 threads": where the numbers were measured."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def config_for(name: str, seed: int, overrides: dict[str, object] | None = None) -> EraseConfig:
    overrides = overrides or {}
    if name in ABLATIONS:
        return method_config("lacu", seed=seed, **{**ABLATIONS[name], **overrides})
    return method_config(name, seed=seed, **overrides)


def parse_overrides(text: str) -> dict[str, object]:
    """"lr=1e-3,steps=80" → {"lr": 0.001, "steps": 80} (typed like the EraseConfig field)."""
    fields = EraseConfig.__dataclass_fields__
    out: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}")
        default = getattr(EraseConfig(), key)
        try:
            out[key] = _setting_value(default, value.strip())
        except ValueError:
            kind = "true or false" if isinstance(default, bool) else type(default).__name__
            raise ValueError(f"setting {key!r} takes {kind}, not {value!r}") from None
    return out


def _setting_value(default: object, value: str) -> object:
    if isinstance(default, bool):
        truth = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if value.lower() not in truth:
            raise ValueError(value)
        return truth[value.lower()]
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float) or default is None:  # the None ones are optional floats
        return None if value.lower() == "none" else float(value)
    return value


def _drift(a: UNet2DConditionModel, b: UNet2DConditionModel) -> float:
    sq = sum(float((x - y).double().pow(2).sum())
             for x, y in zip(a.parameters(), b.parameters(), strict=True))
    return math.sqrt(sq)


def _check_reusable(step_dir: Path, erased: list[str], cfg: EraseConfig) -> None:
    """A step on disk is reused only if it erased the same concepts with the same settings:
    a rerun with another `--set` must not quietly pick up the other run's versions."""
    manifest = read_manifest(step_dir)
    if manifest.get("erased") != erased:
        raise ValueError(f"{step_dir} erased {manifest.get('erased')}, not {erased}: "
                         "use another --out for another sequence")
    saved = manifest.get("config")
    wanted = json.loads(json.dumps(cfg.as_dict()))
    # a setting added since, at its default, is what the code did before it existed
    defaults = json.loads(json.dumps(EraseConfig().as_dict()))
    if isinstance(saved, dict):
        saved = {k: defaults[k] for k in wanted.keys() - saved.keys() if k in defaults} | saved
    if not isinstance(saved, dict) or saved != wanted:
        saved = saved if isinstance(saved, dict) else {}
        differing = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {wanted.get(k)!r})" for k in differing[:6])
        raise ValueError(f"{step_dir} was made with other settings: {shown}"
                         + (f" and {len(differing) - 6} more" if len(differing) > 6 else "")
                         + "; use another --out for other settings")


def save_step(step_dir: Path, base: LoadedModel, unet: UNet2DConditionModel, report: StepReport,
              method: str, cfg: EraseConfig, erased: list[str]) -> dict[str, object]:
    """A benchmark step's version: the UNet tensors and token rows that differ from `base`,
    with the manifest that `_check_reusable` and `lethe sample` read."""
    return save_version(step_dir, base.unet, unet,
                        {"method": method, "config": cfg.as_dict(), "step": len(erased),
                         "erased": erased, "targets": report.plan.targets(),
                         "memory_targets": report.plan.memory_targets,
                         "covered_by": report.covered_by},
                        token_rows=changed_rows(base, report.model))


def run_method(name: str, model: LoadedModel, catalog: Catalog, evaluator: WorldEvaluator,
               base: GeneratedSet, sequence: list[str], out: Path, seed: int,
               log: Callable[[str], None], overrides: dict[str, object] | None = None,
               reevaluate: bool = False
               ) -> tuple[list[dict[str, object]], LoadedModel, UNet2DConditionModel]:
    """Every step of `sequence` with one method: its records, and the last version (the model
    view holding its token rows, and its UNet)."""
    cfg = config_for(name, seed, overrides)
    base_unet = model.unet
    view, unet, steps = model, base_unet, []
    erased: list[str] = []
    for i, concept_name in enumerate(sequence, start=1):
        step_dir = out / name / f"step-{i}"
        concept = catalog[concept_name]
        saved = step_dir / "metrics.json"
        record = json.loads(saved.read_text()) if saved.is_file() else None
        if record is not None and "refused" in record:
            if record["erased"] != concept_name:
                raise ValueError(f"{step_dir} refused {record['erased']}, not {concept_name}: "
                                 "use another --out for another sequence")
            log(f"{name} step {i} ({concept_name}): refused, as read from {step_dir}")
            steps.append(unchanged_drift(unet, base_unet) | record)  # saved before it had one
            continue
        if record is not None:
            _check_reusable(step_dir, erased + [concept_name], cfg)
            new_view, new_unet = load_version_model(model, step_dir)
            if reevaluate:  # same weights, current evaluator (e.g. after a metric changed)
                metrics = step_metrics(replace(evaluator, model=new_view), new_unet,
                                       erased + [concept_name], base)
                record |= {k: v for k, v in metrics.items() if k != "erased"}
                saved.write_text(strict_json.dumps(record, indent=1))
            log(f"{name} step {i} ({concept_name}): reused from {step_dir}"
                + (", evaluated again" if reevaluate else ""))
        else:
            clock = time.perf_counter()
            try:
                new_unet, report = erase(view, unet, [ForgetRequest(concept, concept.prompts)],
                                         [catalog[e] for e in erased], catalog, cfg)
            except NoSafeTarget as refusal:
                # the model stays as it was: the step's record is the unchanged version's
                seconds = time.perf_counter() - clock  # to the refusal, not its evaluation
                metrics = step_metrics(replace(evaluator, model=view), unet, erased, base)
                record = {"step": i, "erased": concept_name, "refused": str(refusal),
                          "seconds": seconds, **unchanged_drift(unet, base_unet),
                          **{k: v for k, v in metrics.items() if k != "erased"}}
                step_dir.mkdir(parents=True, exist_ok=True)
                saved.write_text(strict_json.dumps(record, indent=1))
                log(f"{name} step {i} ({concept_name}): refused: {refusal}")
                steps.append(record)
                continue
            seconds = time.perf_counter() - clock
            new_view = report.model
            metrics = step_metrics(replace(evaluator, model=new_view), new_unet,
                                   erased + [concept_name], base)
            record = {
                "step": i, "erased": concept_name, "seconds": seconds,
                "seconds_by_stage": report.seconds, "rollouts_generated": report.rollouts_generated,
                "drift_l2": _drift(new_unet, base_unet), "drift_l2_step": _drift(new_unet, unet),
                "final_losses": report.final_losses, "token_rows": report.token_rows,
                "covered_by": report.covered_by,
                "targets": report.plan.targets(), "memory_targets": report.plan.memory_targets,
                "neighbours": report.plan.replay.neighbours,
                **{k: v for k, v in metrics.items() if k != "erased"},
            }
            save_step(step_dir, model, new_unet, report, name, cfg, erased + [concept_name])
            saved.write_text(strict_json.dumps(record, indent=1))
            log(f"{name} step {i} ({concept_name}): {seconds:.0f}s, forget "
                f"{record['forget_acc']}, related {record['related_retention']:.3f}, "
                f"general {record['general_retention']:.3f}, quality {record['quality']:.2f}")
        erased.append(concept_name)
        steps.append(record)
        view, unet = new_view, new_unet
    return steps, view, unet


def unchanged_drift(unet: UNet2DConditionModel, base_unet: UNet2DConditionModel
                    ) -> dict[str, float]:
    """A refused step's drift: the version it leaves unchanged, so none of its own."""
    return {"drift_l2": _drift(unet, base_unet), "drift_l2_step": 0.0}


def erased_by(steps: list[dict[str, object]]) -> list[str]:
    """The concepts a method's steps erased, in order: a refused step erased nothing."""
    return [str(s["erased"]) for s in steps if "refused" not in s]


KEPT_CHECK_FIELDS = {f.name for f in fields(KeptCheck)}


def final_check(evaluator: WorldEvaluator, version: tuple[LoadedModel, UNet2DConditionModel],
                erased: list[str], images: int, method_dir: Path,
                base_sets: dict[tuple[str, ...], GeneratedSet], reevaluate: bool = False,
                last_step: Path | None = None) -> dict[str, object]:
    """The last version (model view, UNet) on the kept concepts at `images` a concept against
    the base model's (`evaluate.kept_check`; `evaluator` holds the base model), kept in
    `method_dir/final-check.json` and reused on a rerun while the last version's artifact
    (`last_step`, by default step-<len(erased)>) is the same. `base_sets` caches the base's
    images per kept set across methods."""
    path = method_dir / "final-check.json"
    digest = artifact_digest(last_step or method_dir / f"step-{len(erased)}")
    if path.is_file() and not reevaluate:
        saved = json.loads(path.read_text())
        # a check written before a measure was added is made again
        if ((saved.get("version"), saved.get("images")) == (digest, images)
                and KEPT_CHECK_FIELDS <= saved.keys()):
            return dict(saved)
    related, general = retention_sets(erased)
    kept = tuple(related + general)
    if kept not in base_sets:
        base_sets[kept] = evaluator.generate_for(list(kept), None, per_concept=images)
    view, unet = version
    check = kept_check(evaluator, unet, erased, images, base=base_sets[kept], view=view)
    # as a rerun reads it back: an undefined measure is None
    record: dict[str, object] = strict_json.finite(
        {"erased": erased, "version": digest, **check.as_dict()})
    path.write_text(strict_json.dumps(record, indent=1))
    return record


def check_run(model_dir: Path, methods: list[str], sequence: list[str], seed: int,
              overrides: dict[str, object] | None) -> None:
    """ValueError, before any model is loaded, for a run that could not finish: no method or
    concept, an unknown one, a concept twice, or settings a method's config refuses."""
    if not methods:
        raise ValueError("no method to run")
    if not sequence:
        raise ValueError("the sequence names no concept")
    for name in methods:
        config_for(name, seed, overrides)  # unknown method or a refused setting
    repeated = sorted({c for c in sequence if sequence.count(c) > 1})
    if repeated:
        raise ValueError(f"named twice in the sequence (a concept is erased once): "
                         f"{', '.join(repeated)}")
    catalog = load_catalog(model_dir)
    unknown = [c for c in sequence if c not in catalog]
    if unknown:
        raise ValueError(f"not in the model's catalog: {', '.join(unknown)}; it has "
                         f"{', '.join(catalog.names())}")


def base_record(evaluator: WorldEvaluator, base: GeneratedSet, model_dir: Path,
                model: LoadedModel) -> dict[str, object]:
    """The base model as step 0: its per-concept accuracy and its quality in the steps' own
    measures, `quality` over every concept (nothing is erased yet) and `quality_all_concepts`
    against fresh renders, so that a step's value reads against the base's like for like."""
    everything = [c.name for c in CATALOG]
    return {"model": str(model_dir), "per_concept": {n: base.rate(n) for n in everything},
            "quality": evaluator.retained_quality(base, everything),
            "quality_all_concepts": evaluator.quality(base.images),
            "eval_seconds": base.seconds,
            "autocast": str(model.autocast_dtype or "float32").removeprefix("torch."),
            "device": device_name(model.device)}


def ratio_interval(check: dict[str, object], measure: str = "quality") -> str:
    low, high = cast(tuple[float, float], check[f"{measure}_ratio_interval"])
    return f"{low:.2f}-{high:.2f}"


def run_benchmark(model_dir: Path, judge_path: Path, methods: list[str], sequence: list[str],
                  out: Path, *, seed: int = 0, per_concept: int = 8, forget_per_concept: int = 32,
                  overrides: dict[str, object] | None = None,
                  log: Callable[[str], None] = print, reevaluate: bool = False,
                  precision: str = "auto", final_images: int = 32, device: str = "cpu"
                  ) -> dict[str, object]:
    """`final_images`: images a kept concept for the last step's check (0 = none); `device`:
    cpu, cuda, or auto (cuda when there is one)."""
    check_run(model_dir, methods, sequence, seed, overrides)
    torch.manual_seed(seed)
    model = load_model(model_dir, device=None if device == "auto" else device,
                       precision=precision)
    catalog = load_catalog(model_dir)
    evaluator = WorldEvaluator(model, Judge.load(judge_path), per_concept=per_concept,
                               forget_per_concept=forget_per_concept)
    base = evaluator.generate_for([c.name for c in CATALOG])
    result: dict[str, object] = {
        "base": base_record(evaluator, base, model_dir, model),
        "sequence": sequence, "methods": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    base_sets: dict[tuple[str, ...], GeneratedSet] = {}
    for name in methods:
        steps, last_view, last = run_method(name, model, catalog, evaluator, base, sequence,
                                            out, seed, log, overrides, reevaluate)
        entry: dict[str, object] = {"config": config_for(name, seed, overrides).as_dict(),
                                    "steps": steps}
        erased = erased_by(steps)
        if final_images and erased:
            last_step = max(int(s["step"]) for s in steps  # type: ignore[call-overload]
                            if "refused" not in s)
            check = final_check(evaluator, (last_view, last), erased, final_images,
                                out / name, base_sets, reevaluate,
                                last_step=out / name / f"step-{last_step}")
            entry["final_check"] = check
            log(f"{name} step {len(sequence)} at {final_images} images a kept concept: related "
                f"{check['related_retention']:.3f}, general {check['general_retention']:.3f}, "
                f"quality {check['quality']:.2f} / base {check['base_quality']:.2f} (90 % "
                f"interval of the ratio {ratio_interval(check)}), typicality "
                f"{check['typicality']:.3f} / base {check['base_typicality']:.3f} (90 % interval "
                f"of the ratio {ratio_interval(check, 'typicality')}), images changed "
                f"{check['images_changed']:.2f}")
        result["methods"][name] = entry  # type: ignore[index]
        write_outputs(result, out)
    return result


CSV_FIELDS = ("method", "step", "erased", "forget_acc_max", "forget_acc_heldout_max",
              "related_acc", "related_retention", "general_acc", "general_retention", "quality",
              "base_quality", "seconds", "drift_l2", "drift_l2_step")


def write_outputs(result: dict[str, object], out: Path) -> None:
    (out / "results.json").write_text(strict_json.dumps(result, indent=1))
    methods: dict[str, dict[str, list[dict[str, object]]]] = result["methods"]  # type: ignore[assignment]
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for name, data in methods.items():
            for s in data["steps"]:
                writer.writerow(strict_json.finite({  # an undefined measure: an empty cell
                    "method": name, **{k: s[k] for k in CSV_FIELDS[1:3]},
                    # none before a first erasure (a refused first step)
                    "forget_acc_max": max(s["forget_acc"].values(), default=None),  # type: ignore[attr-defined]
                    "forget_acc_heldout_max": max(s["forget_acc_heldout"].values(), default=None),  # type: ignore[attr-defined]
                    **{k: s.get(k) for k in CSV_FIELDS[5:]}}))  # a field a step lacks: empty
    plot(methods, out / "results.png")


def plot(methods: dict[str, dict[str, list[dict[str, object]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("related_retention", "related retention"), ("general_retention",
              "general retention"), ("forget_max", "max forget accuracy (held-out incl.)"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, data in methods.items():
        xs = [s["step"] for s in data["steps"]]
        for ax, (key, title) in zip(axes, panels, strict=True):
            if key == "forget_max":
                ys = [max(list(s["forget_acc"].values())  # type: ignore[attr-defined]
                          + list(s["forget_acc_heldout"].values()), default=math.nan)  # type: ignore[attr-defined]
                      for s in data["steps"]]
            else:
                ys = [s[key] for s in data["steps"]]
            ax.plot(xs, ys, marker="o", label=name)
            ax.set_title(title)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merged_step_cost(model_dir: Path, judge_path: Path, concepts: list[str], out: Path, *,
                     seed: int = 0, per_concept: int = 8) -> dict[str, object]:
    """One step erasing k concepts together vs k single steps in a row: seconds and forgetting.

    The merged step runs twice: with a forget batch per concept (the default) and with one
    batch shared by all k, the way it was before.
    """
    model = load_model(model_dir, device="cpu")
    catalog = load_catalog(model_dir)
    evaluator = WorldEvaluator(model, Judge.load(judge_path), per_concept=per_concept)
    base = evaluator.generate_for([c.name for c in CATALOG])
    cfg = method_config("lacu", seed=seed)
    requests = [ForgetRequest(catalog[c], catalog[c].prompts) for c in concepts]
    keys = ("forget_acc", "forget_acc_heldout", "related_retention", "general_retention",
            "quality")
    seconds: dict[str, float] = {}
    runs: dict[str, dict[str, object]] = {}
    for name, per_concept_batch in (("merged", True), ("merged_shared_batch", False)):
        clock = time.perf_counter()
        merged, report = erase(model, model.unet, requests, [], catalog,
                               cfg.with_(forget_batch_per_concept=per_concept_batch))
        seconds[name] = time.perf_counter() - clock
        metrics = step_metrics(replace(evaluator, model=report.model), merged,
                               concepts, base)
        runs[name] = {"seconds": seconds[name], **{k: metrics[k] for k in keys}}

    view, unet, single_seconds = model, model.unet, 0.0
    for i, request in enumerate(requests):
        clock = time.perf_counter()
        unet, report = erase(view, unet, [request], [r.concept for r in requests[:i]], catalog,
                             cfg)
        view = report.model
        single_seconds += time.perf_counter() - clock
    single_metrics = step_metrics(replace(evaluator, model=view), unet, concepts, base)
    runs["sequential"] = {"seconds": single_seconds, **{k: single_metrics[k] for k in keys}}
    result: dict[str, object] = {"concepts": concepts, "k": len(concepts), **runs}
    for name in ("merged", "merged_shared_batch"):
        result[f"time_ratio_{name}_over_sequential"] = seconds[name] / single_seconds
    out.mkdir(parents=True, exist_ok=True)
    (out / "merged.json").write_text(strict_json.dumps(result, indent=1))
    return result


def merge_results(parts: list[Path], base_from: Path, out: Path) -> dict[str, object]:
    """One results.json (+ CSV, PNG) from runs that split the methods between processes.

    Reads every completed step (`<part>/<method>/step-<i>/metrics.json`), so a run stopped
    midway still contributes the steps it finished; `base` comes from `base_from`'s results.
    """
    merged = json.loads((base_from / "results.json").read_text())
    merged["methods"] = {}
    for part in parts:
        for method_dir in sorted(p for p in part.iterdir() if p.is_dir()):
            steps = []
            for i in range(1, 1000):
                metrics = method_dir / f"step-{i}" / "metrics.json"
                if not metrics.is_file():
                    break
                steps.append(json.loads(metrics.read_text()))
            if steps:
                config = read_manifest(method_dir / "step-1")["config"]
                merged["methods"][method_dir.name] = {"config": config, "steps": steps}
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(merged, out)
    return merged

"""What the takedown service calls: one erasure step on a model lineage, previews, catalogs.

Workers keep the last loaded model and version in memory (`_Loaded`), so consecutive takedowns
on one model skip loading.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from diffusers import UNet2DConditionModel
from PIL import Image

from app.settings import get_settings
from workers.conceptworld.evaluate import GeneratedSet, WorldEvaluator
from workers.engine.concepts import Catalog, ad_hoc_concept
from workers.engine.concepts import load_catalog as read_catalog
from workers.engine.config import EraseConfig, method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import LoadedModel, load_model
from workers.engine.progress import Cancelled, ProgressEvent
from workers.engine.sampling import generate
from workers.engine.targets import NoSafeTarget
from workers.engine.tokens import changed_rows
from workers.engine.versions import (
    artifact_digest,
    base_digest,
    load_version_model,
    save_version,
)

__all__ = ["Cancelled", "ErasureRequest", "NoSafeTarget", "ProgressEvent", "StepOutcome",
           "erase_step", "load_catalog", "render_samples", "unknown_concepts", "warm_up"]


@dataclass
class ErasureRequest:
    concept: str
    prompts: list[str] | None = None
    neighbors: list[str] | None = None


@dataclass
class StepOutcome:
    artifact_dir: Path
    digest: str
    size_bytes: int
    erased: list[str]
    metrics: dict[str, object]
    targets: dict[str, str]
    neighbours: dict[str, list[str]]
    seconds: dict[str, float] = field(default_factory=dict)
    covered_by: dict[str, list[str]] = field(default_factory=dict)


class _Loaded:
    """The last model and version this process used."""

    lock = threading.Lock()
    model: LoadedModel | None = None
    base_unet: UNet2DConditionModel | None = None
    version_key: str | None = None
    version: tuple[LoadedModel, UNet2DConditionModel] | None = None  # (model view, UNet)
    evaluator: WorldEvaluator | None = None
    # The parent's generated evaluation set, per parent ("base" or artifact digest): every
    # takedown on the same parent would otherwise regenerate it.
    parent_sets: dict[str, GeneratedSet] = {}


def _model(folder: Path) -> LoadedModel:
    if _Loaded.model is None or _Loaded.model.folder.resolve() != Path(folder).resolve():
        _Loaded.model = load_model(folder, precision=get_settings().precision)
        _Loaded.base_unet = _Loaded.model.unet
        _Loaded.version_key, _Loaded.version = None, None
        _Loaded.evaluator, _Loaded.parent_sets = None, {}
    return _Loaded.model


def _version_for(folder: Path, artifact: Path | None
                 ) -> tuple[LoadedModel, UNet2DConditionModel]:
    """A version as the engine uses it: the model view holding its token rows, and its UNet."""
    model = _model(folder)
    assert _Loaded.base_unet is not None
    if artifact is None:
        return model, _Loaded.base_unet
    key = artifact_digest(artifact)
    if _Loaded.version_key != key or _Loaded.version is None:
        _Loaded.version = load_version_model(model, artifact,
                                             expected_base=base_digest(model.folder))
        _Loaded.version_key = key
    return _Loaded.version


def _resolve(catalog: Catalog, request: ErasureRequest) -> ForgetRequest:
    concept = catalog.concepts.get(request.concept) or ad_hoc_concept(request.concept,
                                                                      request.prompts)
    prompts = tuple(request.prompts or concept.prompts)
    protect = tuple(catalog.concepts.get(n) or ad_hoc_concept(n, None)
                    for n in (request.neighbors or []))
    return ForgetRequest(concept, prompts, protect)


def unknown_concepts(model_dir: Path, concepts: list[str]) -> list[str]:
    """Concepts a closed-vocabulary model (one with a catalog) does not know."""
    catalog = read_catalog(model_dir)
    if not catalog.concepts:
        return []
    return [c for c in concepts if c not in catalog]


def load_catalog(model_dir: Path) -> list[dict[str, object]]:
    """The model's concept catalog as the registry lists it (empty for an open vocabulary)."""
    catalog = read_catalog(model_dir)
    return [{"name": c.name, "kind": c.kind, "related": list(c.related), "prompts": list(c.prompts)}
            for c in catalog.concepts.values()]


def erase_step(model_dir: Path, parent_artifact: Path | None, requests: list[ErasureRequest],
               previously_erased: list[str], out_dir: Path, *, seed: int,
               progress: Callable[[ProgressEvent], None],
               should_stop: Callable[[], bool], config: EraseConfig | None = None) -> StepOutcome:
    """Erase `requests` from the parent version; write the new version's artifact to `out_dir`."""
    cfg = config or method_config("lacu", seed=seed)
    with _Loaded.lock:
        model = _model(model_dir)
        catalog = read_catalog(model_dir)
        parent_view, parent = _version_for(model_dir, parent_artifact)
        resolved = [_resolve(catalog, r) for r in requests]
        erased_before = [catalog.concepts.get(n) or ad_hoc_concept(n, None)
                         for n in previously_erased]
        clock = time.perf_counter()
        student, report = erase(parent_view, parent, resolved, erased_before, catalog, cfg,
                                progress=progress, should_stop=should_stop)
        student_view = report.model
        train_seconds = time.perf_counter() - clock
        if should_stop():
            raise Cancelled("stopped after training")
        erased = list(dict.fromkeys(previously_erased + [r.concept.name for r in resolved]))

        progress(ProgressEvent("evaluating", cfg.steps, cfg.steps))
        clock = time.perf_counter()
        parent_key = artifact_digest(parent_artifact) if parent_artifact else "base"
        metrics, student_set = _evaluate((parent_view, parent), parent_key,
                                         (student_view, student), erased,
                                         [r.concept.name for r in resolved])
        eval_seconds = time.perf_counter() - clock
        metrics["seconds"] = {**report.seconds, "step": train_seconds, "evaluation": eval_seconds}
        if should_stop():
            raise Cancelled("stopped after evaluation")

        progress(ProgressEvent("saving", cfg.steps, cfg.steps))
        assert _Loaded.base_unet is not None
        manifest = save_version(out_dir, _Loaded.base_unet, student, {
            "method": cfg.method, "config": cfg.as_dict(), "seed": seed,
            "erased": erased, "erased_this_step": [r.concept.name for r in resolved],
            "targets": report.plan.targets(), "memory_targets": report.plan.memory_targets,
            "neighbours": report.plan.replay.neighbours,
            "parent_digest": artifact_digest(parent_artifact) if parent_artifact else None,
            "base_digest": base_digest(model.folder), "metrics": metrics,
            "token_rows": report.token_rows, "covered_by": report.covered_by,
        }, token_rows=changed_rows(model, student_view))
        digest = artifact_digest(out_dir)
        if student_set is not None:  # this version's images: the "before" of the next takedown
            _remember_set(digest, student_set)
    return StepOutcome(
        artifact_dir=out_dir, digest=digest,
        size_bytes=int(manifest["size_bytes"]),  # type: ignore[call-overload]
        erased=erased, metrics=metrics, targets=report.plan.targets(),
        neighbours=report.plan.replay.neighbours, covered_by=report.covered_by,
        seconds={**report.seconds, "step": train_seconds, "evaluation": eval_seconds})


def _world_evaluator(model: LoadedModel) -> WorldEvaluator | None:
    """The judge-based evaluator where the model ships a judge (the concept world); else None."""
    judge_path = model.folder / "judge.safetensors"
    if not judge_path.is_file():
        return None
    from workers.conceptworld.evaluate import WorldEvaluator
    from workers.conceptworld.judge import Judge

    evaluator = _Loaded.evaluator
    if evaluator is None:
        evaluator = WorldEvaluator(model, Judge.load(judge_path), per_concept=4, steps=10)
        _Loaded.evaluator = evaluator
    return evaluator


def _catalog_set(evaluator: WorldEvaluator, key: str,
                 version: tuple[LoadedModel, UNet2DConditionModel]) -> GeneratedSet:
    """A version's images of the whole catalog, generated once per version and process."""
    from workers.conceptworld.world import CATALOG

    cached = _Loaded.parent_sets.get(key)
    if cached is None:
        view, unet = version
        cached = replace(evaluator, model=view).generate_for([c.name for c in CATALOG], unet)
        _remember_set(key, cached)
    return cached


def _remember_set(key: str, generated: GeneratedSet, keep: int = 3) -> None:
    """Keep the base's set and the `keep` most recent versions' (a lineage only moves forward)."""
    _Loaded.parent_sets.pop(key, None)
    _Loaded.parent_sets[key] = generated
    recent = [k for k in _Loaded.parent_sets if k != "base"]
    for old in recent[:-keep]:
        del _Loaded.parent_sets[old]


def _evaluate(parent: tuple[LoadedModel, UNet2DConditionModel], parent_key: str,
              student: tuple[LoadedModel, UNet2DConditionModel], erased: list[str],
              this_step: list[str]) -> tuple[dict[str, object], GeneratedSet | None]:
    """Judge-based metrics and the student's generated set, where the model ships a judge.
    Each version is (model view, UNet)."""
    evaluator = _world_evaluator(parent[0])
    catalog = read_catalog(parent[0].folder)
    if evaluator is None or any(e not in catalog for e in erased):
        return {"evaluated": False, "reason": "this model has no judge for its concepts"}, None
    from workers.conceptworld.evaluate import step_metrics
    from workers.conceptworld.world import CATALOG

    before = _catalog_set(evaluator, parent_key, parent)
    judged = replace(evaluator, model=student[0])
    student_set = judged.generate_for([c.name for c in CATALOG], student[1])
    after = step_metrics(judged, student[1], erased, before, everything=student_set)
    parent_forget = {e: before.rate(e) for e in this_step}
    return {"evaluated": True, "before": {"forget_acc": parent_forget}, "after": after,
            "forget_acc": after["forget_acc"], "related_retention": after["related_retention"],
            "general_retention": after["general_retention"]}, student_set


def warm_up(model_dir: Path) -> float:
    """Load the model, its judge and the base version's evaluation images before the first job
    arrives (a worker process calls this when it starts). Returns the seconds it took."""
    clock = time.perf_counter()
    with _Loaded.lock:
        model = _model(model_dir)
        evaluator = _world_evaluator(model)
        if evaluator is not None and _Loaded.base_unet is not None:
            _catalog_set(evaluator, "base", (model, _Loaded.base_unet))
    return time.perf_counter() - clock


def render_samples(model_dir: Path, artifact: Path | None, prompt: str, seed: int, n: int
                   ) -> list[bytes]:
    """PNG bytes of `n` images for `prompt` from a version (base when `artifact` is None)."""
    with _Loaded.lock:
        view, unet = _version_for(model_dir, artifact)
        images = generate(view, [prompt] * n, [seed + i for i in range(n)], unet=unet)
    out = []
    for img in images:
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        pil = Image.fromarray(arr)
        if pil.width < 128:
            pil = pil.resize((pil.width * 8, pil.height * 8), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


"""The device check: one complete LACU takedown on an SD-1.5-size model, SDXL-size step times, and
the LACU release's configuration timed on the same card.

    python bench/gpu_takedown.py --size real          # on one GPU (bench/GPU.md)
    python bench/gpu_takedown.py --size tiny          # the same flow on CPU, tiny random models

Prints one JSON object (per-stage seconds, peak GPU memory, steps/s) and writes it to
`$OUT/gpu_takedown.json` when OUT is set — after every stage, so a run cut short still reports.
Random weights: speed and memory are meaningful, image quality is not.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workers.engine import erase as erase_module  # noqa: E402
from workers.engine.concepts import load_catalog  # noqa: E402
from workers.engine.conditioning import encode_prompts  # noqa: E402
from workers.engine.config import EraseConfig, method_config  # noqa: E402
from workers.engine.erase import ForgetRequest, erase  # noqa: E402
from workers.engine.gpu import prepare_unet  # noqa: E402
from workers.engine.loading import LoadedModel, load_model  # noqa: E402
from workers.engine.losses import preserve_loss, unlearn_loss  # noqa: E402
from workers.engine.progress import ProgressEvent  # noqa: E402
from workers.engine.sampling import autocast_for, generate, predict_noise  # noqa: E402
from workers.engine.sd_folders import build_components, count_parameters, write_folder  # noqa: E402
from workers.engine.tokens import changed_rows  # noqa: E402
from workers.engine.trainable import mark_trainable  # noqa: E402
from workers.engine.versions import base_digest, save_version  # noqa: E402

GIB = 1 << 30
KINDS = ("artist", "character", "animal", "object", "place")
GENERIC = {"artist": "an artist", "character": "a character", "animal": "an animal",
           "object": "an object", "place": "a place"}
TEMPLATES = {
    "artist": ["a painting in the style of {x}", "a landscape by {x}", "a portrait by {x}",
               "a city street painted by {x}", "a still life by {x}", "an artwork by {x}"],
    "character": ["a photo of {x}", "{x} standing in a field", "a drawing of {x}",
                  "{x} riding a bicycle", "a poster of {x}", "{x} at the beach"],
    "animal": ["a photo of a {x}", "a {x} in the snow", "a {x} sleeping", "a drawing of a {x}",
               "a {x} in a forest", "a close-up of a {x}"],
    "object": ["a photo of a {x}", "a {x} on a table", "a red {x}", "a {x} in a shop window",
               "an old {x}", "a drawing of a {x}"],
    "place": ["a photo of {x}", "{x} at night", "{x} in winter", "a painting of {x}",
              "tourists in {x}", "an aerial view of {x}"],
}
ERASE_EXTRA = ["a sketch by {x}", "a mural by {x}", "a watercolour by {x}", "a poster by {x}",
               "a sunset by {x}", "a cat painted by {x}", "a self-portrait by {x}",
               "a harbour by {x}", "a garden by {x}", "flowers by {x}", "a bridge by {x}",
               "a night sky by {x}"]
SYLLABLES = ["ka", "lo", "mi", "ren", "to", "va", "shi", "mor", "dan", "el", "qui", "zu"]


def _name(i: int) -> str:
    """A made-up concept name, distinct for i < 144."""
    return SYLLABLES[i % 12] + SYLLABLES[(i // 12) % 12] + SYLLABLES[(i * 5 + 7) % 12]


def catalog_json(per_kind: int = 10) -> dict[str, Any]:
    """LACU's setting in miniature: a 50-concept retain pool in 5 kinds, 6 prompts each; the
    erased concept (the first artist) has 18 prompts, the release's per-GPU prompt count."""
    concepts = []
    for k, kind in enumerate(KINDS):
        names = [_name(k * per_kind + i) for i in range(per_kind)]
        for i, name in enumerate(names):
            templates = TEMPLATES[kind] + (ERASE_EXTRA if k == 0 and i == 0 else [])
            concepts.append({"name": name, "kind": kind, "prompts": [t.format(x=name)
                                                                      for t in templates],
                             "related": [names[(i + 1) % per_kind], names[(i + 2) % per_kind]]})
    return {"concepts": concepts, "generic_words": GENERIC}


# ------------------------------------------------------------------------------------------
# measurement


class Recorder:
    """Collects stage results and rewrites the JSON after each one."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.result = paths, {}  # type: tuple[list[Path], dict[str, Any]]

    def put(self, key: str, value: Any) -> None:
        self.result[key] = value
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.result, indent=1))
        print(f"[gpu_takedown] {key}: {json.dumps(value)}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / GIB, 2)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextmanager
def stage(device: torch.device, into: dict[str, Any], name: str) -> Iterator[None]:
    """Seconds and peak GPU memory (GiB, everything allocated) of one stage."""
    _sync(device)
    _reset_peak(device)
    clock = time.perf_counter()
    yield
    _sync(device)
    into[name] = {"seconds": round(time.perf_counter() - clock, 3),
                  "peak_gib": _peak_gib(device)}


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# 1. one complete LACU takedown through the engine


def takedown(folder: Path, device: torch.device, steps: int, compile_student: bool,
             work: Path) -> tuple[dict[str, Any], LoadedModel]:
    out: dict[str, Any] = {"stages": {}}
    stages = out["stages"]
    with stage(device, stages, "load_model"):
        model = load_model(folder, device=str(device))
    catalog = load_catalog(folder)
    concept = catalog[_name(0)]
    request = ForgetRequest(concept, concept.prompts)
    cfg: EraseConfig = method_config("lacu", steps=steps, compile_student=compile_student)
    out["config"] = cfg.as_dict()
    out["forget_prompts"] = len(concept.prompts)
    out["retain_pool"] = len(catalog.concepts) - 1

    # The engine's planning calls, timed one by one (a measurement shim, restored below).
    originals: dict[str, Callable[..., Any]] = {
        "select_mapping_groups": erase_module.select_mapping_groups,
        "local_replay_set": erase_module.local_replay_set}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with stage(device, stages, name):
                return fn(*args, **kwargs)
        return run

    erase_module.select_mapping_groups = timed("target_selection",  # type: ignore[assignment]
                                               originals["select_mapping_groups"])
    erase_module.local_replay_set = timed("replay_building",  # type: ignore[assignment]
                                          originals["local_replay_set"])
    marks: dict[int, float] = {}

    def progress(event: ProgressEvent) -> None:
        if event.stage == "training":
            _sync(device)
            marks[event.step] = time.perf_counter()

    try:
        clock = time.perf_counter()
        _reset_peak(device)
        student, report = erase(model, model.unet, [request], [], catalog, cfg, progress=progress)
        _sync(device)
        erase_seconds = time.perf_counter() - clock
        train_peak = _peak_gib(device)
    finally:
        for name, fn in originals.items():
            setattr(erase_module, name, fn)
    stages["rollouts"] = {"seconds": round(report.seconds["rollouts"], 3),
                          "rollouts_generated": report.rollouts_generated}
    stages["training"] = {"seconds": round(report.seconds["training"], 3),
                          "peak_gib": train_peak, "steps": steps,
                          "steps_per_s": round(steps / report.seconds["training"], 3)}
    first, last = min(marks), max(marks)
    if last > first:  # steady state: from the first logged step to the last
        stages["training"]["steady_steps_per_s"] = round(
            (last - first) / (marks[last] - marks[first]), 3)
    with stage(device, stages, "save_version"):
        manifest = save_version(work / "version", model.unet, student, {
            "erased": [concept.name], "base_digest": base_digest(folder), "config": cfg.as_dict()},
            token_rows=changed_rows(model, report.model))
    stages["save_version"]["size_mib"] = round(int(manifest["size_bytes"]) / (1 << 20), 1)  # type: ignore[call-overload]
    out["takedown_seconds"] = round(erase_seconds + stages["save_version"]["seconds"], 3)
    out["final_losses"] = report.final_losses
    out["targets_sample"] = dict(list(report.plan.targets().items())[:3])
    out["replay_neighbours"] = report.plan.replay.neighbours
    with stage(device, stages, "preview_generate"):  # one decoded image from the new version
        image = generate(report.model, [concept.prompts[0]], [0], steps=20,
                         guidance=7.5, unet=student)
    out["preview_shape"] = list(image.shape)
    del student
    _free(device)
    return out, model


# ------------------------------------------------------------------------------------------
# 2. training-step times for a group of parameters (SDXL-size K/V-only and full)


def step_times(model: LoadedModel, trainable: str, batch: int, steps: int, warmup: int,
               checkpointing: bool) -> dict[str, Any]:
    """Seconds per optimizer step of the engine's student update: teacher target forward,
    student forward + backward, AdamW, on `batch` cached x_0 (rollouts excluded)."""
    device = model.device
    teacher = model.unet
    student: Any = copy.deepcopy(teacher).train()  # type: ignore[attr-defined]
    if checkpointing:
        student.enable_gradient_checkpointing()
    params = mark_trainable(student, trainable)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    prompts = [f"a photo of thing {i}" for i in range(batch)]
    cond = encode_prompts(model, prompts)
    x0 = torch.randn((batch, *model.latent_shape), generator=gen).to(device)
    _reset_peak(device)
    times = []
    for step in range(warmup + steps):
        _sync(device)
        clock = time.perf_counter()
        t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
        x_t = _add_noise(model, x0, torch.randn(x0.shape, generator=gen).to(device), t)
        with torch.no_grad(), autocast_for(model):
            target = predict_noise(teacher, x_t, t, cond)
        with autocast_for(model):
            loss = preserve_loss(predict_noise(student, x_t, t, cond), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - clock)
    result = {"trainable": trainable, "batch": batch,
              "trainable_params_m": round(sum(p.numel() for p in params) / 1e6, 1),
              "gradient_checkpointing": checkpointing,
              "seconds_per_step": round(sum(times) / len(times), 4),
              "peak_gib": _peak_gib(device)}
    del student, optimizer, params
    _free(device)
    return result


def in_memory_model(kind: str, size: str, device: torch.device) -> LoadedModel:
    """The architecture built directly on the device (SDXL's 13 GB folder is not written)."""
    parts: Any = build_components(kind, size, device=device)  # type: ignore[arg-type]
    model = LoadedModel(Path(f"<in-memory {kind}-{size}>"), parts.unet, parts.text_encoder,
                        parts.tokenizer, _scheduler(), device, parts.vae, parts.text_encoder_2,
                        parts.tokenizer_2, torch.bfloat16 if device.type == "cuda" else None,
                        zero_empty_prompt=kind == "sdxl")
    for module in (parts.unet, parts.vae, parts.text_encoder, parts.text_encoder_2):
        if module is not None:
            module.eval().requires_grad_(False)
    prepare_unet(parts.unet, device)
    return model


def _add_noise(model: LoadedModel, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
               ) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε under the model's noise schedule."""
    scheduler: Any = model.scheduler
    return scheduler.add_noise(x0, noise, t)  # type: ignore[no-any-return]


def _scheduler() -> Any:
    from workers.engine.sd_folders import scheduler

    return scheduler()


# ------------------------------------------------------------------------------------------
# 3. the LACU release's configuration, a few optimizer steps


def release_steps(model: LoadedModel, steps: int, prompts_per_micro: int, micro_batches: int,
                  rollout_steps: int, checkpointing: bool = False) -> dict[str, Any]:
    """Full UNet; per optimizer step `micro_batches` micro-batches of `prompts_per_micro`
    prompts (half forget, half preserve), each with fresh teacher DDIM rollouts (CFG 7.5),
    gradients accumulated, then AdamW."""
    device = model.device
    teacher = model.unet
    student: Any = copy.deepcopy(teacher).train()  # type: ignore[attr-defined]
    if checkpointing:
        student.enable_gradient_checkpointing()
    params = mark_trainable(student, "full")
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    half = prompts_per_micro // 2
    forget = [f"a painting in the style of {_name(0)} number {i}" for i in range(half)]
    keep = [f"a photo of place {i}" for i in range(prompts_per_micro - half)]
    anchors = [f"a painting number {i}" for i in range(half)]
    _reset_peak(device)
    totals, rollout_totals = [], []
    for step in range(steps + 1):  # the first step warms up
        _sync(device)
        clock = time.perf_counter()
        rollout_seconds = 0.0
        optimizer.zero_grad(set_to_none=True)
        for micro in range(micro_batches):
            r_clock = time.perf_counter()
            seeds = [10_000 * step + 100 * micro + i for i in range(prompts_per_micro)]
            x0 = generate(model, forget + keep, seeds, steps=rollout_steps, guidance=7.5,
                          unet=teacher, decode=False, batch_size=prompts_per_micro)
            _sync(device)
            rollout_seconds += time.perf_counter() - r_clock
            t = torch.randint(0, 1000, (len(x0),), generator=gen).to(device)
            x_t = _add_noise(model, x0, torch.randn(x0.shape, generator=gen).to(device), t)
            with torch.no_grad(), autocast_for(model):
                target = predict_noise(teacher, x_t, t, encode_prompts(model, anchors + keep))
            with autocast_for(model):
                eps = predict_noise(student, x_t, t, encode_prompts(model, forget + keep))
            loss = unlearn_loss(eps[:half], target[:half]) + 5 * preserve_loss(eps[half:],
                                                                               target[half:])
            (loss / micro_batches).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        _sync(device)
        if step > 0:
            totals.append(time.perf_counter() - clock)
            rollout_totals.append(rollout_seconds)
    per_step = sum(totals) / len(totals)
    result = {"prompts_per_micro_batch": prompts_per_micro, "micro_batches": micro_batches,
              "rollout_ddim_steps": rollout_steps, "trainable": "full", "timed_steps": steps,
              "gradient_checkpointing": checkpointing,
              "seconds_per_step": round(per_step, 3),
              "rollout_share": round(sum(rollout_totals) / sum(totals), 3),
              "peak_gib": _peak_gib(device),
              "concept_300_steps_seconds": round(300 * per_step, 1)}
    del student, optimizer, params
    _free(device)
    return result


# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", choices=("tiny", "real"), default="real")
    parser.add_argument("--steps", type=int, default=300, help="takedown training steps")
    parser.add_argument("--stages", default="takedown,release,sdxl")
    parser.add_argument("--release-steps", type=int, default=2, help="timed release steps")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student")
    parser.add_argument("--work", type=Path, default=None, help="folders and the version")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.size == "real" and device.type != "cuda":
        parser.error("--size real needs a GPU (an SD-1.5 UNet is 3.4 GB in fp32); "
                     "use --size tiny on CPU")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 parts (VAE, text encoders)
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    wanted = {s.strip() for s in args.stages.split(",") if s.strip()}
    paths = [p for p in (args.json, Path(os.environ["OUT"]) / "gpu_takedown.json"
                         if os.environ.get("OUT") else None) if p is not None]
    rec = Recorder(paths)
    import diffusers
    import transformers

    rec.put("environment", {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or "cpu",
        "size": args.size, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / GIB, 1)
        if device.type == "cuda" else None})
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_takedown-"))
    clock_all = time.perf_counter()

    model = None
    if wanted & {"takedown", "release"}:
        stages: dict[str, Any] = {}
        with stage(device, stages, "write_folder"):
            folder = write_folder("sd15", args.size, work / "sd15", device=device)
        (folder / "catalog.json").write_text(json.dumps(catalog_json()))
        model = load_model(folder, device=str(device)) if "takedown" not in wanted else None
        rec.put("sd15_folder", stages | {"unet_params_m": _unet_params_m("sd15", args.size)})
    if "takedown" in wanted:
        try:
            result, model = takedown(folder, device, args.steps, args.compile, work)
        except Exception as exc:  # reported; the other stages still run
            _free(device)
            rec.put("sd15_takedown", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        else:
            rec.put("sd15_takedown", result)
            rec.put("goal", {"takedown_seconds": result["takedown_seconds"],
                             "goal_seconds": 180, "met": result["takedown_seconds"] <= 180})
    if "release" in wanted and model is not None:
        sd15 = model
        release = attempt(device, lambda: release_steps(sd15, args.release_steps, 18, 2, 20))
        if "error" in release:  # out of memory without checkpointing: measure with it
            release = attempt(device, lambda: release_steps(sd15, args.release_steps, 18, 2, 20,
                                                            checkpointing=True)) | {
                "first_try": release}
        rec.put("release_config_sd15", release)
        ours = rec.result.get("sd15_takedown", {}).get("takedown_seconds")
        if ours and "error" not in release:
            rec.put("ratio_to_release", {
                "ours_takedown_seconds": ours,
                "release_300_step_concept_seconds_on_3_gpus": release["concept_300_steps_seconds"],
                "wall_clock_ratio": round(ours / release["concept_300_steps_seconds"], 4),
                # the release runs the same per-GPU work on 3 GPUs at once
                "gpu_time_ratio": round(ours / (3 * release["concept_300_steps_seconds"]), 4)})
        del sd15
    model = None
    _free(device)
    if "sdxl" in wanted:
        stages = {}
        with stage(device, stages, "build_in_memory"):
            xl = in_memory_model("sdxl", args.size, device)
        runs = []
        batches = (1, 4) if args.size == "real" else (2,)
        for batch in batches:
            runs.append(attempt(device, lambda b=batch: step_times(  # type: ignore[misc]
                xl, "attn2-kv", b, steps=5, warmup=2, checkpointing=False)))
        runs.append(attempt(device, lambda: step_times(xl, "full", batches[-1], steps=3, warmup=2,
                                                       checkpointing=True)))
        rec.put("sdxl_steps", {"unet_params_m": _unet_params_m("sdxl", args.size),
                               "stages": stages, "runs": runs})
        del xl
        _free(device)
    rec.put("total_seconds", round(time.perf_counter() - clock_all, 1))
    print(json.dumps(rec.result, indent=1))
    return rec.result


def attempt(device: torch.device, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; an error (out of memory, say) is reported, not fatal."""
    try:
        return run()
    except Exception as exc:  # a device check reports every failure and goes on
        _free(device)
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _unet_params_m(kind: str, size: str) -> float:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    from workers.engine.sd_folders import unet_config

    with torch.device("meta"):
        unet: Any = UNet2DConditionModel(**unet_config(kind, size))  # type: ignore[arg-type]
    return round(count_parameters(unet) / 1e6, 1)


if __name__ == "__main__":
    main()

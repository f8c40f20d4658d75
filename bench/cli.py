"""`lethe bench …` and `lethe sample`: benchmark commands that print numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import typer

from app import strict_json
from app.settings import Precision
from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR


def _one_of(*allowed: str) -> Callable[[str], str]:
    """An option callback that refuses any value but `allowed`, naming them."""
    def check(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value
    return check


_precision = _one_of(*get_args(Precision))
_device = _one_of("cpu", "cuda", "auto")


bench_app = typer.Typer(help="Benchmarks: commands that print numbers.", no_args_is_help=True)


@bench_app.command()
def continual(
    methods: str = typer.Option("lacu,naive,esd,dfr,uce", help="Comma-separated methods; "
                                "ablations: lacu-fixed-anchor, lacu-global-replay, "
                                "lacu-no-memory, lacu-no-cache."),
    sequence: str = typer.Option("", help="Comma-separated concepts (default: 10 mixed ones)."),
    quick: bool = typer.Option(False, help="Only the first 3 steps of the sequence, evaluated "
                               "on 3 images a concept and 8 an erased one, no final check "
                               "(each unless given): a smoke run within 10 minutes on 2 cores."),
    out: Path = typer.Option(Path("runs/bench-continual"), help="Artifacts, CSV, PNG, JSON."),
    model: Path = typer.Option(MODEL_DIR),
    judge: Path = typer.Option(JUDGE_PATH),
    seed: int = typer.Option(0),
    per_concept: int | None = typer.Option(None, min=1, help="Generated images per concept "
                                           "per evaluation (default 8)."),
    forget_images: int | None = typer.Option(None, min=1, help="Images per erased concept for "
                                             "the forget accuracies (a 5 % bar needs more than "
                                             "8; default 32)."),
    final_images: int | None = typer.Option(None, min=0, help="Images per kept concept for "
                                            "the last step's retention and quality check "
                                            "against the base (0: none; at 8 the quality "
                                            "distance is mostly bias; default 32)."),
    settings: str = typer.Option("", "--set", help="EraseConfig overrides: 'lr=1e-3,steps=80'."),
    reevaluate: bool = typer.Option(False, help="Evaluate steps found in --out again."),
    precision: str = typer.Option("auto", callback=_precision, help="auto, float32 or bfloat16 "
                                  "(auto: bf16 on CUDA and AVX512-BF16 CPUs); training and "
                                  "sampling."),
    device: str = typer.Option("cpu", callback=_device, help="cpu, cuda, or auto (cuda when "
                               "there is one)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Erase a sequence step by step from the same base with each method; measure every step."""
    from bench.continual import DEFAULT_SEQUENCE, check_run, parse_overrides, run_benchmark

    concepts = [c.strip() for c in sequence.split(",") if c.strip()] or list(DEFAULT_SEQUENCE)
    if quick:
        concepts = concepts[:3]
    defaults = (3, 8, 0) if quick else (8, 32, 32)
    per_concept, forget_images, final_images = (
        given if given is not None else default for given, default in
        zip((per_concept, forget_images, final_images), defaults, strict=True))
    names = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        overrides = parse_overrides(settings)
        check_run(model, names, concepts, seed, overrides)
    except ValueError as refused:
        raise typer.BadParameter(str(refused)) from None
    result = run_benchmark(model, judge, names, concepts, out, seed=seed,
                           per_concept=per_concept, forget_per_concept=forget_images,
                           overrides=overrides,
                           log=lambda line: typer.echo(line, err=True), reevaluate=reevaluate,
                           precision=precision, final_images=final_images, device=device)
    if as_json:
        typer.echo(strict_json.dumps(result, indent=1))
    else:
        typer.echo(f"results in {out}/results.json, .csv and .png")


@bench_app.command()
def merged(
    concepts: str = typer.Option("zorbo,blip,star", help="Comma-separated concepts."),
    out: Path = typer.Option(Path("runs/bench-merged")),
    model: Path = typer.Option(MODEL_DIR),
    judge: Path = typer.Option(JUDGE_PATH),
) -> None:
    """Cost of erasing k concepts in one step against k single steps in a row."""
    from bench.continual import merged_step_cost

    names = [c.strip() for c in concepts.split(",") if c.strip()]
    typer.echo(strict_json.dumps(merged_step_cost(model, judge, names, out), indent=1))


@bench_app.command()
def takedown(
    concepts: str = typer.Option("circle:object,blip:character",
                                 help="Comma-separated concept:kind, filed one after another."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Seconds per takedown end to end on the embedded default (`lethe serve`, real engine)."""
    from bench.takedown import run

    pairs = [(c.partition(":")[0].strip(), c.partition(":")[2].strip() or "other")
             for c in concepts.split(",") if c.strip()]
    text = json.dumps(run(pairs), indent=1)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)


@bench_app.command()
def attack(
    concept: str = typer.Option(..., help="The erased concept to draw back."),
    version: list[Path] = typer.Option([], help="A version artifact or benchmark step folder "
                                       "(repeat for several); the base is always attacked."),
    model: Path = typer.Option(MODEL_DIR),
    judge: Path = typer.Option(JUDGE_PATH),
    steps: int = typer.Option(300, min=1, help="Adam steps on the learned word's row."),
    images: int = typer.Option(32, min=1, max=256, help="Images judged per prompt."),
    seed: int = typer.Option(0),
    precision: str = typer.Option("auto", callback=_precision),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Textual inversion: learn one new word from pictures of CONCEPT against each version
    (and the base), and print the share of its images the judge reads as CONCEPT."""
    from bench.attack import AttackConfig
    from bench.attack import attack as run_attack

    for path in version:
        if not path.is_dir():
            raise typer.BadParameter(f"{path} is not a version folder")
    try:
        report = run_attack(model, version, concept, judge,
                            AttackConfig(steps=steps, images=images, seed=seed), precision)
    except ValueError as refused:
        raise typer.BadParameter(str(refused)) from None
    text = strict_json.dumps(report, indent=1)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)


def sample(
    model: Path = typer.Option(MODEL_DIR, help="A diffusers model folder."),
    version: Path = typer.Option(None, help="A version artifact or a benchmark step folder."),
    prompt: str = typer.Option(..., help="The prompt."),
    n: int = typer.Option(8, min=1, max=256),
    seed: int = typer.Option(0),
    steps: int = typer.Option(20, min=1, max=200),
    guidance: float = typer.Option(None, help="Default: the model folder's (lethe.json)."),
    use_judge: bool = typer.Option(False, "--judge", help="Say what the judge sees."),
    concept: str = typer.Option(None, help="With --judge: report the share judged as NAME."),
    out: Path = typer.Option(None, help="Write a PNG strip of the images here."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate images from any version and, with --judge, print what the judge sees in each."""
    from bench.probe import probe

    judge = model / "judge.safetensors" if (model / "judge.safetensors").is_file() else JUDGE_PATH
    try:
        report = probe(model, version, prompt, n, seed, steps, guidance,
                       judge if use_judge else None, concept, out)
    except ValueError as refused:  # no model folder, a bad artifact, an unknown concept
        raise typer.BadParameter(str(refused)) from None
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            typer.echo(f"{k}: {v}")

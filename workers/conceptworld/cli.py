"""`lethe conceptworld …`: train, evaluate and inspect the concept world."""

from __future__ import annotations

import json
from pathlib import Path

import typer

conceptworld_app = typer.Typer(help="The concept world: a model trained here, and a judge.",
                               no_args_is_help=True)

SHIPPED = Path(__file__).parent / "shipped"
MODEL_DIR = SHIPPED / "model"
JUDGE_PATH = MODEL_DIR / "judge.safetensors"  # beside the model, so the engine finds it


@conceptworld_app.command()
def train(
    out: Path = typer.Option(MODEL_DIR, help="Where the trained model folder is written."),
    work_dir: Path = typer.Option(Path("runs/conceptworld"), help="Checkpoints (resumable)."),
    steps: int = typer.Option(4000, help="Optimizer steps (batch 64)."),
    seed: int = typer.Option(0),
    fresh: bool = typer.Option(False, help="Ignore an existing checkpoint."),
) -> None:
    """Train the text-to-image model from scratch (resumes from the last checkpoint)."""
    from workers.conceptworld.train import TrainConfig
    from workers.conceptworld.train import train as run_training

    run_training(out, work_dir, TrainConfig(seed=seed, steps=steps), resume=not fresh)
    typer.echo(f"model written to {out}")


@conceptworld_app.command("export-checkpoint")
def export_checkpoint(
    work_dir: Path = typer.Option(Path("runs/conceptworld")),
    out: Path = typer.Option(MODEL_DIR),
) -> None:
    """Write a model folder from the latest training checkpoint's EMA weights."""
    from workers.conceptworld.train import export_checkpoint as export

    step = export(work_dir, out)
    typer.echo(f"exported step {step} to {out}")


@conceptworld_app.command()
def concepts(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the concept catalog: name, kind, related concepts and prompts."""
    from workers.conceptworld.world import CATALOG

    rows = [{"name": c.name, "kind": c.kind, "related": list(c.related), "prompts": list(c.prompts)}
            for c in CATALOG]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
    else:
        for row in rows:
            typer.echo(f"{row['name']:<22} {row['kind']:<10} related: {', '.join(row['related'])}")


@conceptworld_app.command("train-judge")
def train_judge_command(
    out: Path = typer.Option(JUDGE_PATH, help="Where the judge's safetensors are written."),
    steps: int = typer.Option(1000),
    seed: int = typer.Option(1),
) -> None:
    """Train the judge on renders only (augmented), then print its accuracy on fresh renders."""
    from workers.conceptworld.judge import Judge, judge_accuracy, train_judge

    train_judge(out, seed=seed, steps=steps)
    typer.echo(json.dumps(judge_accuracy(Judge.load(out))))


@conceptworld_app.command("eval")
def eval_command(
    model: Path = typer.Option(MODEL_DIR),
    judge: Path = typer.Option(JUDGE_PATH),
    per_concept: int = typer.Option(8, help="Generated images per concept (fixed seeds)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Judge accuracy, base-model accuracy per concept, neighbour confusion and quality."""
    from workers.conceptworld.report import evaluate_world

    report = evaluate_world(model, judge, per_concept)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    typer.echo(f"judge accuracy: {report['judge_accuracy']}")
    typer.echo(f"base accuracy: mean {report['base_accuracy_mean']:.3f}, "
               f"min {report['base_accuracy_min']:.3f}; quality {report['quality']:.3f}")
    for name, rate in report["per_concept"].items():  # type: ignore[attr-defined]
        typer.echo(f"  {name:<22} {rate:.2f}")


@conceptworld_app.command()
def grid(
    model: Path = typer.Option(MODEL_DIR),
    out: Path = typer.Option(Path("docs/conceptworld-grid.png")),
    per_concept: int = typer.Option(4),
) -> None:
    """A PNG grid: for each concept, renders (left) next to generated samples (right)."""
    from workers.conceptworld.report import concept_grid

    concept_grid(model, out, per_concept)
    typer.echo(f"wrote {out}")

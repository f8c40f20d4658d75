"""`lethe conceptworld …`: train, evaluate and inspect the concept world."""

from __future__ import annotations

import json
from pathlib import Path

import typer

conceptworld_app = typer.Typer(help="The concept world: a diffusion model trained here, and its judge.",
                               no_args_is_help=True)

SHIPPED = Path(__file__).parent / "shipped"
MODEL_DIR = SHIPPED / "model"
JUDGE_PATH = SHIPPED / "judge.safetensors"


@conceptworld_app.command()
def train(
    out: Path = typer.Option(MODEL_DIR, help="Where the trained model folder is written."),
    work_dir: Path = typer.Option(Path("runs/conceptworld"), help="Checkpoints (resumable)."),
    steps: int = typer.Option(6000, help="Optimizer steps (batch 64)."),
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

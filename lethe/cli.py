"""The `lethe` command: one typer app that mounts each area's commands."""

from __future__ import annotations

import typer

from app.cli import audit_app, keys_app, serve, takedown_app
from bench.cli import bench_app, sample
from workers.conceptworld.cli import conceptworld_app
from workers.engine.gpu_cli import gpu_app

app = typer.Typer(help="Lethe: concept takedowns for text-to-image diffusion models.",
                  no_args_is_help=True)
app.add_typer(conceptworld_app, name="conceptworld")
app.command("serve")(serve)
app.add_typer(takedown_app, name="takedown")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
app.command("sample")(sample)
app.add_typer(gpu_app, name="gpu")

if __name__ == "__main__":
    app()

"""`lethe gpu …`: what a GPU worker needs without a downloadable checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

gpu_app = typer.Typer(help="GPU workers: Stable Diffusion-family folders for tests and checks.",
                      no_args_is_help=True)


@gpu_app.callback()
def gpu() -> None:
    """GPU workers: Stable Diffusion-family folders for tests and device checks."""


@gpu_app.command("write-folders")
def write_folders(
    kind: Annotated[str, typer.Option(help="sd15 (one CLIP encoder) or sdxl (two).")],
    out: Annotated[Path, typer.Option(help="Folder to write (must not already hold a model).")],
    size: Annotated[str, typer.Option(help="tiny (CPU tests) or real (859.5 M / 2,567 M UNet).")
                    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    device: Annotated[str, typer.Option(help="Build the modules here (cuda: fast init).")
                      ] = "cpu",
) -> None:
    """Write a random-weight diffusers folder of the architecture with `save_pretrained`."""
    from workers.engine.sd_folders import KINDS, SIZES, count_parameters, write_folder

    if kind not in KINDS or size not in SIZES:
        raise typer.BadParameter(f"--kind is one of {', '.join(KINDS)}; "
                                 f"--size is one of {', '.join(SIZES)}")
    folder = write_folder(kind, size, out, seed=seed, device=device)  # type: ignore[arg-type]
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    typer.echo(f"{kind} ({size}) written to {folder}: UNet {count_parameters(unet):,} parameters")

"""Training seconds of one LACU step (circle, 80 steps) in a fresh process, or right after one
batched generation like the worker's warm-up and evaluation do — the gap is a lead on service
speed (README, "The takedown service").

Usage: python -m bench.training_after_generation [--generate-batch 128]   (0: fresh process)
"""

from __future__ import annotations

import json
import time

import typer

from app.settings import CONCEPTWORLD_DIR


def main(generate_batch: int = typer.Option(0, help="Generate 124 images in batches of this "
                                            "size first (0: train in a fresh process)."),
         concept: str = typer.Option("circle")) -> None:
    from workers.engine.concepts import load_catalog
    from workers.engine.config import method_config
    from workers.engine.erase import ForgetRequest, erase
    from workers.engine.loading import load_model
    from workers.engine.progress import ProgressEvent
    from workers.engine.sampling import generate

    model = load_model(CONCEPTWORLD_DIR)
    catalog = load_catalog(CONCEPTWORLD_DIR)
    if generate_batch:
        generate(model, ["a red circle"] * 124, list(range(124)), steps=10,
                 batch_size=generate_batch)
    marks: list[float] = []

    def every_ten(event: ProgressEvent) -> None:
        if event.stage == "training" and event.step % 10 == 1:
            marks.append(time.perf_counter())

    target = catalog.concepts[concept]
    _, report = erase(model, model.unet, [ForgetRequest(target, tuple(target.prompts))], [],
                      catalog, method_config("lacu"), progress=every_ten)
    per_ten = [round(b - a, 2) for a, b in zip(marks, marks[1:], strict=False)]
    typer.echo(json.dumps({"generate_batch": generate_batch, "seconds": report.seconds,
                           "seconds_per_10_steps": per_ten}))


if __name__ == "__main__":
    typer.run(main)

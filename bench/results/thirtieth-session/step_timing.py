"""The steps of a sequence alone (no evaluation): seconds by stage and the training loss trace.

    python bench/results/thirtieth-session/step_timing.py SEQUENCE [--set K=V,...] [--save DIR] \
        [--precision auto|float32|bfloat16]

Prints one JSON line a step: seconds by stage, rows trained, the unlearn loss every 5 optimizer
steps (the progress events), the number of forget prompts mapped and their targets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.continual import parse_overrides, save_step
from workers.conceptworld.cli import MODEL_DIR
from workers.engine.concepts import load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import load_model
from workers.engine.progress import ProgressEvent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sequence")
    parser.add_argument("--set", default="")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    model = load_model(MODEL_DIR, device="cpu", precision=args.precision)
    catalog = load_catalog(MODEL_DIR)
    cfg = method_config("lacu", **parse_overrides(args.set))
    view, unet, erased = model, model.unet, list[str]()
    for i, name in enumerate(args.sequence.split(","), start=1):
        trace: list[tuple[int, float]] = []

        def record(event: ProgressEvent, trace: list[tuple[int, float]] = trace) -> None:
            if event.stage == "training" and "unlearn" in event.losses:
                trace.append((event.step, round(event.losses["unlearn"], 5)))

        clock = time.perf_counter()
        unet, report = erase(view, unet, [ForgetRequest(catalog[name], catalog[name].prompts)],
                             [catalog[e] for e in erased], catalog, cfg, progress=record)
        seconds = time.perf_counter() - clock
        view = report.model
        erased.append(name)
        if args.save:
            save_step(args.save / f"step-{i}", model, unet, report, "lacu", cfg, list(erased))
        print(json.dumps({"step": i, "concept": name, "seconds": round(seconds, 1),
                          "by_stage": {k: round(v, 1) for k, v in report.seconds.items()},
                          "rows": report.token_rows, "trace": trace,
                          "mappings": len(report.plan.mappings),
                          "targets": report.plan.targets()}), flush=True)


if __name__ == "__main__":
    main()

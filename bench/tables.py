"""Markdown tables for the README from committed results (`python -m bench.tables`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _fmt(x: object) -> str:
    """A measure to 3 decimals; "–" where it is undefined (null in JSON, NaN in memory)."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def _worst(*rates: dict[str, float]) -> str:
    """The highest forget accuracy of some steps' records; "–" before any erasure."""
    return _fmt(max((v for r in rates for v in r.values()), default=None))


def world_tables(path: Path) -> str:
    r = json.loads(path.read_text())
    lines = ["| head | judge accuracy (2,000 fresh renders) |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in r["judge_accuracy"].items()]
    lines += ["", f"Base model: mean accuracy **{r['base_accuracy_mean']:.3f}**, min "
              f"**{r['base_accuracy_min']:.3f}** over {len(r['per_concept'])} concepts "
              f"({r['images_per_concept']} images each); quality (Fréchet distance in judge "
              f"features) {r['quality']:.2f} vs {r['quality_of_renders']:.2f} for fresh renders; "
              f"{r['seconds_per_image']:.3f} s per image.", "",
              "| concept | accuracy | judged as each listed neighbour |", "|---|---|---|"]
    for name, rate in r["per_concept"].items():
        conf = ", ".join(f"{n} {v:.2f}" for n, v in r["neighbour_confusion"][name].items())
        lines.append(f"| {name} | {rate:.2f} | {conf} |")
    return "\n".join(lines)


def bench_table(path: Path) -> str:
    """One row per method at its last step; with the benchmark's final check (`final_check`,
    N images a kept concept) its retention and quality too."""
    r = json.loads(path.read_text())
    checks = [d["final_check"] for d in r["methods"].values() if "final_check" in d]
    n = f" at {checks[0]['images']} images" if checks else ""
    lines = ["| method | steps | max forget acc | max held-out forget acc | related retention | "
             "general retention | quality / base quality (kept concepts) | "
             + (f"related / general ret.{n} | quality / base{n} | typicality / base{n} | "
                if checks else "")
             + "s/step | drift ‖θ−θ₀‖ |", "|---|---|---|---|---|---|---|"
             + ("---|---|---|" if checks else "") + "---|---|"]
    for name, data in r["methods"].items():
        steps = data["steps"]
        last = steps[-1]
        secs = sum(s["seconds"] for s in steps) / len(steps)
        check = data.get("final_check")
        final = (f"{_fmt(check['related_retention'])} / {_fmt(check['general_retention'])} | "
                 f"{check['quality']:.2f} / {check['base_quality']:.2f} | "
                 f"{_typicality(check)} | " if check else "– | – | – | " if checks else "")
        lines.append(
            f"| {name} | {len(steps)} | {_worst(last['forget_acc'])} | "
            f"{_worst(last['forget_acc_heldout'])} | {_fmt(last['related_retention'])} | "
            f"{_fmt(last['general_retention'])} | {last['quality']:.2f} / "
            f"{last['base_quality']:.2f} | {final}{secs:.0f} | "
            f"{last['drift_l2']:.2f} |")
    return "\n".join(lines)


def _typicality(check: dict[str, object]) -> str:
    if "typicality" not in check:  # final checks before the thirtieth session
        return "–"
    return f"{check['typicality']:.3f} / {check['base_typicality']:.3f}"


def per_step_table(path: Path, method: str) -> str:
    r = json.loads(path.read_text())
    lines = ["| step | erased | max forget | max held-out | related ret. | general ret. | "
             "quality / base | s |", "|---|---|---|---|---|---|---|---|"]
    for s in r["methods"][method]["steps"]:
        erased = f"{s['erased']} (refused)" if "refused" in s else s["erased"]
        lines.append(f"| {s['step']} | {erased} | {_worst(s['forget_acc'])} | "
                     f"{_worst(s['forget_acc_heldout'])} | "
                     f"{_fmt(s['related_retention'])} | {_fmt(s['general_retention'])} | "
                     f"{s['quality']:.2f} / {s['base_quality']:.2f} | {s['seconds']:.0f} |")
    return "\n".join(lines)


def sequences_table(paths: list[Path], method: str = "lacu") -> str:
    """One row per benchmark run (a results.json each, one sequence): the worst forget accuracy
    over every step, and the final check's retention and both quality ratios with their 90 %
    intervals, the share of kept images changed and the seconds of each step."""
    lines = ["| sequence | worst forget (request / held-out, every step) | related / general ret. "
             "| typicality / base (ratio, 90 % interval) | Fréchet quality / base (ratio, "
             "90 % interval) | images changed | s a step |", "|---|---|---|---|---|---|---|"]
    for path in paths:
        r = json.loads(path.read_text())
        steps, check = r["methods"][method]["steps"], r["methods"][method]["final_check"]
        worst = [_worst(*(s[key] for s in steps)) for key in ("forget_acc", "forget_acc_heldout")]
        names = [f"{n} (refused)" if "refused" in s else n
                 for n, s in zip(r["sequence"], steps, strict=True)]
        lines.append(
            f"| {', '.join(names)} ({r['base']['autocast']}) | "
            f"{worst[0]} / {worst[1]} | "
            f"{_fmt(check['related_retention'])} / {_fmt(check['general_retention'])} | "
            f"{_ratio(check, 'typicality', 'base_typicality', 'typicality_ratio_interval')} | "
            f"{_ratio(check, 'quality', 'base_quality', 'quality_ratio_interval')} | "
            f"{check['images_changed']:.0%} | "
            f"{', '.join(_seconds(s) for s in steps)} |")
    return "\n".join(lines)


def _seconds(step: dict[str, Any]) -> str:
    return "refused" if "refused" in step else str(round(step["seconds"]))


def _ratio(check: dict[str, Any], value: str, base: str, interval: str) -> str:
    a, b = float(check[value]), float(check[base])
    low, high = check[interval]
    return f"{a:.3f} / {b:.3f} (**{a / b:.3f}**, {low:.2f}–{high:.2f})"


def compare_table(path: Path) -> str:
    """Per step and method: related retention, general retention and the worst forget accuracy
    (request or held-out templates), so methods can be compared at matched forgetting."""
    r = json.loads(path.read_text())
    methods = list(r["methods"])
    lines = ["| step | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    longest = max(len(d["steps"]) for d in r["methods"].values())
    for i in range(longest):
        cells = []
        for m in methods:
            steps = r["methods"][m]["steps"]
            if i >= len(steps):
                cells.append("")
                continue
            s = steps[i]
            cells.append(f"{_fmt(s['related_retention'])} / {_fmt(s['general_retention'])} "
                         f"/ {_worst(s['forget_acc'], s['forget_acc_heldout'])}")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "world"
    if which == "world":
        print(world_tables(RESULTS / "conceptworld_eval.json"))
    elif which == "compare":
        print(compare_table(Path(sys.argv[2]) if len(sys.argv) > 2
                            else RESULTS / "continual" / "results.json"))
    elif which == "sequences":
        print(sequences_table([Path(p) for p in sys.argv[2:]]))
    elif which == "bench":
        print(bench_table(Path(sys.argv[2]) if len(sys.argv) > 2
                          else RESULTS / "continual" / "results.json"))
    else:
        print(per_step_table(Path(sys.argv[2]), sys.argv[3]))

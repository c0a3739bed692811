"""Every benchmark in one command: prints the markdown tables (with the machine) and writes them as JSON.

    python -m benchmarks [--quick] [--device cpu|cuda] [--threads N] [--json benchmarks/results.json]

1. Capture overhead (``benchmarks.capture_overhead``): plain greedy ``generate`` vs the instrumented pass vs
   instrumented + K = 10 self-consistency (and the study's approach at tiny widths), time and peak extra memory,
   on tiny-width shapes and on Qwen2-VL-2B / LLaVA-1.5-7B widths with few layers (``benchmarks.shapes``).
2. Harnesses (``benchmarks.harness``): VRP-Bench's full-signal run vs lmms-eval's plain run of the same tiny
   checkpoint on ``vrp_shapes_color``, samples/s, at several doc counts (growth with docs: a linear fit).
3. Scaling (``benchmarks.scaling``): per-doc seconds vs image tokens and vs K.

``--quick`` runs the same tables with one timed sample per condition, one memory process, fewer doc counts and
image sizes (about a third of the time, noisier). On CUDA, models run in bfloat16 and times wait for the device.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import capture_overhead, harness, scaling
from benchmarks.common import REPO, describe_machine, load_average, machine, resolve
from benchmarks.shapes import REAL_SHAPES, SHAPES, TINY_SHAPES

TARGETS = {"instrumented": 1.3, "instrumented_sc": 2.5, "memory": 1.5, "harness": 3.0}


@dataclass(frozen=True)
class Settings:
    """How much of each benchmark to run."""

    samples: int
    """Timed calls per condition (after one warm-up call)."""
    memory_repeats: int
    """Fresh processes per condition for memory at tiny widths (one at real widths, where the growth is large)."""
    harness_limits: tuple[int, ...]
    harness_repeats: int
    image_sizes: tuple[int, ...]
    ks: tuple[int, ...]
    k_shape: str


FULL = Settings(samples=3, memory_repeats=3, harness_limits=(16, 32, 64), harness_repeats=2,
                image_sizes=scaling.IMAGE_SIZES, ks=(0, 1, 10, 20), k_shape="qwen2_vl_2b")
QUICK = Settings(samples=1, memory_repeats=1, harness_limits=(8, 24), harness_repeats=1,
                 image_sizes=(224, 896), ks=(0, 10), k_shape="qwen2_vl_2b")


def run(settings: Settings, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Every measurement, as one JSON-able dict."""
    overhead = {}
    for shape in (*TINY_SHAPES, *REAL_SHAPES):
        repeats = 1 if shape.realistic else settings.memory_repeats
        overhead[shape.key] = capture_overhead.measure(shape, settings.samples, device, dtype, repeats)
        print(f"measured {shape.key}", flush=True)
    harnesses = {family: harness.compare(family, settings.harness_limits, settings.harness_repeats, device, dtype)
                 for family in harness.FAMILIES}
    print("measured harnesses", flush=True)
    return {
        "settings": asdict(settings),
        "new_tokens": capture_overhead.NEW_TOKENS,
        "k": capture_overhead.K,
        "capture_overhead": overhead,
        "harness": harnesses,
        "image_token_scaling": scaling.image_token_scaling(settings.samples, device, dtype, settings.image_sizes),
        "k_scaling": scaling.k_scaling(SHAPES[settings.k_shape], settings.samples, device, dtype, settings.ks),
    }


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def overhead_table(results: dict[str, Any]) -> list[str]:
    """Capture overhead: time per call relative to plain, the SC cost split, and peak extra memory."""
    header = ("| shape | parameters | prompt tokens | plain (s) | instrumented | + SC K=10 | SC split: prefill / "
              "K-sample decoding | study's approach | peak extra memory MiB: plain / instrumented (x) / + SC / study |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for result in results.values():
        times, memory, split = result["time_ratio_vs_plain"], result["extra_memory_mib"], result["sc_split_vs_plain"]
        memory_ratio = result["extra_memory_ratio_vs_plain"]["instrumented"]
        study_memory = f"{memory['study']:.1f}" if "study" in memory else "-"
        lines.append(
            f"| {result['label']} | {result['parameters'] / 1e6:.1f} M | {result['prompt_tokens']:,} | "
            f"{result['seconds']['plain']:.3f} | {ratio(times['instrumented'])} | {ratio(times['instrumented_sc'])} | "
            f"{ratio(split['prefill'])} / {ratio(split['k_sample_decoding'])} | {ratio(times.get('study'))} | "
            f"{memory['plain']:.1f} / {memory['instrumented']:.1f} ({ratio(memory_ratio)}) / "
            f"{memory['instrumented_sc']:.1f} / {study_memory} |"
        )
    return lines


def harness_table(results: dict[str, Any]) -> list[str]:
    """Harnesses: samples/s of both loops per doc count, and each harness's fixed + per-doc fit."""
    header = ("| tiny checkpoint | lmms-eval model | docs | lmms-eval samples/s | VRP-Bench samples/s (all signals) | "
              "VRP-Bench time / lmms-eval time | then VRP-Bench scoring + report (s) |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    notes = []
    for family, result in results.items():
        for row in result["rows"]:
            lines.append(f"| {result['vrp_model']} | `{result['lmms_model']}` | {row['docs']} | "
                         f"{row['lmms_samples_per_s']:.1f} | {row['vrp_samples_per_s']:.1f} | {ratio(row['time_ratio'])} | "
                         f"{row['vrp_scoring_and_report_seconds']:.1f} |")
        notes.append(f"- {family}: lmms-eval side is {result['lmms_model_is']}"
                     + "".join(f"; could not use {reason}" for reason in result["lmms_refused"]))
        for side in ("lmms", "vrp"):
            fit = result[f"{side}_fit"]
            if fit is not None:
                notes.append(f"  - {'lmms-eval' if side == 'lmms' else 'VRP-Bench'} loop: {fit['fixed_seconds']:.2f} s "
                             f"+ {fit['seconds_per_doc'] * 1e3:.1f} ms per doc")
    return lines + [""] + notes


def image_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Scaling with image tokens: seconds per call and ratios to plain."""
    header = ("| Qwen2-VL tiny widths, image | prompt tokens | plain (s) | instrumented (s) | + SC K=10 (s) | "
              "instrumented / plain | + SC / plain |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        s = row["seconds"]
        lines.append(f"| {row['image_size']} px | {row['prompt_tokens']:,} | {s['plain']:.3f} | {s['instrumented']:.3f} | "
                     f"{s['instrumented_sc']:.3f} | {ratio(s['instrumented'] / s['plain'])} | "
                     f"{ratio(s['instrumented_sc'] / s['plain'])} |")
    return lines


def k_table(result: dict[str, Any]) -> list[str]:
    """Scaling with K: seconds of the instrumented pass plus K samples, and relative to plain."""
    lines = [f"{result['shape']}; plain {result['plain_seconds']:.3f} s", "",
             "| K | instrumented + K samples (s) | / plain |", "|---|---|---|"]
    lines += [f"| {row['k']} | {row['seconds']:.3f} | {ratio(row['seconds'] / result['plain_seconds'])} |"
              for row in result["rows"]]
    return lines


def harness_per_doc_ratio(result: dict[str, Any]) -> float:
    """VRP-Bench's per-doc seconds over lmms-eval's: the fitted slopes (fixed costs excluded), else the ratio at
    the largest doc count."""
    if result["vrp_fit"] is not None and result["lmms_fit"] is not None:
        return result["vrp_fit"]["seconds_per_doc"] / result["lmms_fit"]["seconds_per_doc"]
    return max(result["rows"], key=lambda row: row["docs"])["time_ratio"]


def verdicts(results: dict[str, Any]) -> list[str]:
    """Each target, per shape or checkpoint: met or not, with the measured value."""
    lines = []
    for result in results["capture_overhead"].values():
        times = result["time_ratio_vs_plain"]
        memory = result["extra_memory_ratio_vs_plain"]["instrumented"]
        checks = [("instrumented", times["instrumented"]), ("instrumented_sc", times["instrumented_sc"]),
                  ("memory", memory)]
        lines.append(f"- {result['label']}: " + ", ".join(
            f"{name} {ratio(value)} (<= {TARGETS[name]}x: {'met' if value is not None and value <= TARGETS[name] else 'NOT met'})"
            for name, value in checks))
    for family, result in results["harness"].items():
        per_doc = harness_per_doc_ratio(result)
        rows = [row["time_ratio"] for row in result["rows"]]
        lines.append(f"- harness, tiny {family}: VRP-Bench / lmms-eval per-doc time {ratio(per_doc)} (fitted slopes; "
                     f"single doc counts {ratio(min(rows))} to {ratio(max(rows))}) (<= {TARGETS['harness']}x: "
                     f"{'met' if per_doc <= TARGETS['harness'] else 'NOT met'})")
    return lines


def markdown(results: dict[str, Any], command: str) -> str:
    """The whole report as markdown."""
    return "\n".join([
        f"Command: `{command}`", "", f"Machine: {describe_machine(results['machine'])}", "",
        f"### Capture overhead (time per call relative to plain; {results['new_tokens']} new tokens, batch 1)", "",
        *overhead_table(results["capture_overhead"]), "",
        "### VRP-Bench (all signals) vs lmms-eval (plain), same checkpoint, `vrp_shapes_color`, batch 1", "",
        *harness_table(results["harness"]), "",
        "### Scaling with image tokens", "", *image_table(results["image_token_scaling"]), "",
        "### Scaling with K (self-consistency samples)", "", *k_table(results["k_scaling"]), "",
        "### Targets", "", *verdicts(results),
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one sample per condition, fewer sizes (noisier)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results.json", help="where to write JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = resolve(args.device)
    info = machine(device)
    results = run(QUICK if args.quick else FULL, device, dtype)
    info["load_average_at_end"] = load_average()
    results = {"machine": info, "dtype": str(dtype).removeprefix("torch."), **results}
    command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    args.json.write_text(json.dumps({"command": command, **results}, indent=2) + "\n")
    print(markdown(results, command))

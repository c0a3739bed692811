"""Cost of VRP-Bench's instrumented generation vs plain greedy ``generate``, measured side by side.

Random models of the real architectures with realistic sequence shapes (LLaVA-1.5: 336 px / patch 14 =
576 image tokens; Qwen2-VL at 896 px: 1,024 image tokens after the 2x2 merge) answer the same prompts in
one process, in alternation, under four conditions:

- plain: greedy ``generate`` with sdpa (what an evaluation harness runs);
- instrumented: VRP-Bench's one greedy pass with attention-row, hidden-state and logit captures;
- instrumented + SC: the above plus K = 10 self-consistency samples from one shared prefill;
- study: the study's approach, eager attention with output_attentions / hidden states / scores, then
  K = 10 separate sampled ``generate`` calls.

Peak extra memory (resident-set growth during the call, sampled every millisecond; the median of three
fresh subprocesses per condition) is reported as a ratio to plain; on a CPU it is a noisy measure. Only ratios measured in the same run are meaningful. Targets: <= 1.3x
(instrumented), <= 2.5x (instrumented + SC), <= 1.5x extra memory.

    python benchmarks/capture_overhead.py [--samples 6] [--new-tokens 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import torch
from PIL import Image

from vrp_bench.models.families import FAMILIES
from vrp_bench.models.instrumented import instrumented_generate
from vrp_bench.models.self_consistency import shared_prefill_samples
from vrp_bench.zoo.build import build_tiny

SHAPES = {"llava": (336, 14), "qwen2_vl": (896, 14)}
CONDITIONS = ("plain", "instrumented", "instrumented_sc", "study")
K = 10
MEMORY_REPEATS = 3  # resident-set peaks are noisy: the median of fresh processes


def setup(family: str) -> tuple[Any, Any, Any, Any]:
    image_size, patch_size = SHAPES[family]
    model, processor = build_tiny(family, seed=0, image_size=image_size, patch_size=patch_size)
    model.eval()
    adapter = FAMILIES[family](model.config)
    image = Image.effect_noise((image_size, image_size), 64).convert("RGB")
    prompt = adapter.build_prompt(processor, "what color is the square ?", 1)
    inputs = processor(images=[[image]], text=[prompt], return_tensors="pt")
    inputs.pop("labels", None)
    return model, processor, adapter, inputs


def run_condition(condition: str, model: Any, processor: Any, adapter: Any, inputs: Any, new_tokens: int) -> None:
    pad = processor.tokenizer.pad_token_id
    greedy = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": pad}
    sampled = {**greedy, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0}
    if condition == "plain":
        with torch.inference_mode():
            model.generate(**inputs, **greedy)
    elif condition in ("instrumented", "instrumented_sc"):
        instrumented_generate(model, adapter, processor, inputs, greedy, ["red"])
        if condition == "instrumented_sc":
            shared_prefill_samples(model, inputs, K, sampled, seed=0)
    else:
        model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                model.generate(**inputs, **greedy, return_dict_in_generate=True, output_attentions=True,
                               output_hidden_states=True, output_scores=True)
                for seed in range(K):
                    torch.manual_seed(seed)
                    model.generate(**inputs, **sampled)
        finally:
            model.set_attn_implementation("sdpa")


def time_family(family: str, samples: int, new_tokens: int) -> dict[str, float]:
    """Median seconds per sample of every condition, conditions interleaved sample by sample."""
    model, processor, adapter, inputs = setup(family)
    for condition in CONDITIONS:  # warm-up
        run_condition(condition, model, processor, adapter, inputs, new_tokens)
    times: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    for _ in range(samples):
        for condition in CONDITIONS:
            start = time.perf_counter()
            run_condition(condition, model, processor, adapter, inputs, new_tokens)
            times[condition].append(time.perf_counter() - start)
    return {c: statistics.median(t) for c, t in times.items()}


def resident_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_extra_memory(family: str, condition: str, new_tokens: int) -> float:
    """Peak resident-set growth (MiB) during one call of ``condition``, sampled every millisecond,
    after the model is loaded and the condition warmed up once."""
    model, processor, adapter, inputs = setup(family)
    run_condition(condition, model, processor, adapter, inputs, new_tokens)
    gc.collect()
    baseline, peak, done = resident_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run_condition(condition, model, processor, adapter, inputs, new_tokens)
    finally:
        done.set()
        sampler.join()
    return max(peak[0] - baseline, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--memory-of", nargs=2, metavar=("FAMILY", "CONDITION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(peak_extra_memory(*args.memory_of, args.new_tokens))
        return
    report: dict[str, Any] = {"threads": args.threads, "new_tokens": args.new_tokens, "k": K, "families": {}}
    for family in args.families:
        seconds = time_family(family, args.samples, args.new_tokens)
        memory = {condition: statistics.median(
            float(subprocess.run(
                [sys.executable, __file__, "--memory-of", family, condition, "--new-tokens", str(args.new_tokens),
                 "--threads", str(args.threads)], capture_output=True, text=True, check=True).stdout.split()[-1])
            for _ in range(MEMORY_REPEATS)) for condition in CONDITIONS}
        report["families"][family] = {
            "seconds_per_sample": seconds,
            "time_ratio_vs_plain": {c: seconds[c] / seconds["plain"] for c in CONDITIONS},
            "extra_memory_mib": memory,
            "extra_memory_ratio_vs_plain": {c: memory[c] / memory["plain"] if memory["plain"] > 0 else None
                                            for c in CONDITIONS},
        }
        ratios = report["families"][family]["time_ratio_vs_plain"]
        mem = report["families"][family]["extra_memory_ratio_vs_plain"]
        print(f"{family}: time x{ratios['instrumented']:.2f} instrumented, x{ratios['instrumented_sc']:.2f} "
              f"+SC(K={K}), x{ratios['study']:.2f} study; extra memory "
              + ", ".join(f"{c} x{mem[c]:.2f}" if mem[c] is not None else f"{c} -" for c in CONDITIONS[1:]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

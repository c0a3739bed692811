"""Cost of VRP-Bench's instrumented generation vs plain greedy ``generate``, measured side by side.

A model of each shape (``benchmarks.shapes``: the real architectures at tiny or at real widths, with real
sequence lengths) answers the same prompt in one process, in alternation, under these conditions:

- plain: greedy ``generate`` with sdpa (what an evaluation harness runs);
- instrumented: VRP-Bench's one greedy pass with attention-row, hidden-state and logit captures;
- instrumented_sc: the above plus K self-consistency samples from one shared prefill (what ``vrp-bench run``
  does per doc with its default K = 10);
- study: the study's approach, eager attention with output_attentions / hidden states / scores, then K
  separate sampled ``generate`` calls (tiny widths only: at real widths it is K + 1 prefills, over 10x plain,
  and would take most of the time budget);
- sc_prefill (not a condition, a component): the self-consistency prompt prefill alone, to split the
  self-consistency cost into that prefill and the K-sample decoding.

Peak extra memory is, on a CPU, the resident-set growth during one call, sampled every millisecond after a
warm-up call (the median of fresh subprocesses); on CUDA, the peak of allocated memory above what was allocated
before the call. Targets: instrumented <= 1.3x plain, instrumented + SC <= 2.5x, extra memory <= 1.5x.

    python -m benchmarks.capture_overhead [--shapes llava_tiny qwen2_vl_2b] [--samples 3] [--device cpu]
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
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks.common import REPO, interleaved_seconds, resolve, synchronize
from benchmarks.shapes import SHAPES, Built, Shape, build
from vrp_bench.models.instrumented import instrumented_generate
from vrp_bench.models.self_consistency import prompt_cache, shared_prefill_samples

CONDITIONS = ("plain", "instrumented", "instrumented_sc", "study")
SC_PREFILL = "sc_prefill"
K = 10
NEW_TOKENS = 8


def conditions_of(shape: Shape) -> tuple[str, ...]:
    """The conditions measured on ``shape`` (the study's approach only at tiny widths)."""
    return CONDITIONS[:3] if shape.realistic else CONDITIONS


def generation_kwargs(built: Built, new_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Greedy and sampled settings of exactly ``new_tokens`` steps (sampling: VRP-Bench's SC defaults)."""
    greedy = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "pad_token_id": built.processor.tokenizer.pad_token_id}
    return greedy, {**greedy, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0}


def condition_call(condition: str, built: Built, new_tokens: int, k: int) -> Callable[[], Any]:
    """One call of ``condition`` on ``built``'s prompt."""
    model, inputs = built.model, built.inputs
    greedy, sampled = generation_kwargs(built, new_tokens)

    def plain() -> None:
        with torch.inference_mode():
            model.generate(**inputs, **greedy)

    def instrumented() -> None:
        instrumented_generate(model, built.adapter, built.processor, inputs, greedy, ["red"])

    def instrumented_sc() -> None:
        instrumented()
        shared_prefill_samples(model, inputs, k, sampled, seed=0)

    def sc_prefill() -> None:
        with torch.inference_mode():
            prompt_cache(model, inputs)

    def study() -> None:
        model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                model.generate(**inputs, **greedy, return_dict_in_generate=True, output_attentions=True,
                               output_hidden_states=True, output_scores=True)
                for seed in range(k):
                    torch.manual_seed(seed)
                    model.generate(**inputs, **sampled)
        finally:
            model.set_attn_implementation("sdpa")

    calls = {"plain": plain, "instrumented": instrumented, "instrumented_sc": instrumented_sc,
             SC_PREFILL: sc_prefill, "study": study}
    return calls[condition]


def resident_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_extra_mib(call: Callable[[], Any], device: torch.device) -> float:
    """Peak memory growth (MiB) during one ``call`` (after a warm-up call): allocated device memory on CUDA,
    else the process's resident set, sampled every millisecond."""
    call()
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        call()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    baseline, peak, done = resident_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    return max(peak[0] - baseline, 0.0)


def memory_in_subprocess(shape: Shape, condition: str, new_tokens: int, k: int, threads: int) -> float:
    """``peak_extra_mib`` of ``condition`` measured in a fresh CPU process (what earlier calls left allocated
    would otherwise hide part of the growth)."""
    command = [sys.executable, "-m", "benchmarks.capture_overhead", "--memory-of", shape.key, condition,
               "--new-tokens", str(new_tokens), "--k", str(k), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return float(result.stdout.split()[-1])


def measure(shape: Shape, samples: int, device: torch.device, dtype: torch.dtype, memory_repeats: int,
            new_tokens: int = NEW_TOKENS, k: int = K) -> dict[str, Any]:
    """Parameters and prompt tokens of ``shape``; seconds per call of every condition (and of the SC prefill),
    their ratios to plain, and the peak extra memory of each condition (median of ``memory_repeats`` fresh
    processes on a CPU)."""
    built = build(shape, device, dtype)
    conditions = conditions_of(shape)
    calls = {name: condition_call(name, built, new_tokens, k) for name in (*conditions, SC_PREFILL)}
    seconds = interleaved_seconds(calls, samples, device)
    facts = {"parameters": built.parameters, "prompt_tokens": built.prompt_tokens}
    on_device = {c: peak_extra_mib(calls[c], device) for c in conditions} if device.type == "cuda" else None
    del calls, built
    gc.collect()  # this process's model goes before the fresh processes build theirs
    threads = torch.get_num_threads()
    memory = on_device or {c: statistics.median(memory_in_subprocess(shape, c, new_tokens, k, threads)
                                                for _ in range(memory_repeats)) for c in conditions}
    plain = seconds["plain"]
    sc_decode = seconds["instrumented_sc"] - seconds["instrumented"] - seconds[SC_PREFILL]
    return {
        "label": shape.label,
        **facts,
        "seconds": seconds,
        "time_ratio_vs_plain": {c: seconds[c] / plain for c in conditions},
        "sc_split_vs_plain": {"prefill": seconds[SC_PREFILL] / plain, "k_sample_decoding": sc_decode / plain},
        "extra_memory_mib": memory,
        "extra_memory_ratio_vs_plain": {c: memory[c] / memory["plain"] if memory["plain"] > 0 else None
                                        for c in conditions},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-of", nargs=2, metavar=("SHAPE", "CONDITION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = resolve(args.device)
    if args.memory_of:
        shape, condition = SHAPES[args.memory_of[0]], args.memory_of[1]
        built = build(shape, device, dtype)
        print(peak_extra_mib(condition_call(condition, built, args.new_tokens, args.k), device))
        return
    report = {key: measure(SHAPES[key], args.samples, device, dtype, args.memory_repeats, args.new_tokens, args.k)
              for key in args.shapes}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

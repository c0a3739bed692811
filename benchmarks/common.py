"""What every benchmark shares: the machine's description, device and dtype, and side-by-side timing.

Timings on a shared machine are noisy: only ratios of conditions measured in the same run, interleaved
sample by sample, are compared (``interleaved_seconds``). On CUDA every timing waits for the device.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]


def resolve(device: str) -> tuple[torch.device, torch.dtype]:
    """``--device`` as a torch device and the dtype the benchmarks run it in: bfloat16 on CUDA (as real
    checkpoints are evaluated there), float32 on a CPU (where bfloat16 matmuls are not faster)."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: this machine has no CUDA device")
    return resolved, torch.bfloat16 if resolved.type == "cuda" else torch.float32


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one ``call``, including the device's queued work."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_seconds(calls: Mapping[str, Callable[[], Any]], samples: int, device: torch.device) -> dict[str, float]:
    """Median wall seconds per call of every condition: one warm-up call each, then ``samples`` rounds that
    run every condition once, in turn (so load that comes and goes hits all conditions alike)."""
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            seconds[name].append(timed(call, device))
    return {name: statistics.median(values) for name, values in seconds.items()}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    """Total memory of the machine (Linux /proc/meminfo), GiB."""
    try:
        with open("/proc/meminfo") as meminfo:
            return round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (runnable processes; other jobs on a shared machine show here)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def machine(device: torch.device) -> dict[str, Any]:
    """The machine the numbers were measured on."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpus": gpus,
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    """One markdown line naming the machine."""
    gpus = ", ".join(info["gpus"]) or "none"
    return (f"{info['cpu']}, {info['usable_cores']} usable cores of {info['logical_cores']}, {info['memory_gib']} GiB; "
            f"GPU: {gpus}; device {info['device']}; torch {info['torch']} ({info['torch_threads']} threads), "
            f"transformers {info['transformers']}, Python {info['python']}; load average (1/5/15 min) "
            f"{info['load_average_at_start']} at start, {info.get('load_average_at_end')} at end")

"""VRP-Bench's full-signal run vs lmms-eval's plain run of the same checkpoint on the same task, in samples/s.

Both harnesses run in this process, on the shipped tiny checkpoint of a family (``vrp_bench/zoo/checkpoints``),
on ``vrp_shapes_color`` (64 px images), batch size 1, at several ``--limit`` values, alternating harness by harness:

- VRP-Bench: ``vrp_bench.run.evaluate`` with the registered ``tiny_<family>`` (capture on, K = 10 self-consistency
  samples per doc: every signal). Timed: its doc loop (render, answer, score, signals of every doc), from the
  progress reporter's creation to its close; the model is built once beforehand. Reported beside it, not in the
  ratio: the rest of the call (scoring the signals and building the report; lmms-eval has no counterpart).
- lmms-eval: ``lmms_eval.evaluator.simple_evaluate`` with the first of the family's ``LMMS_CANDIDATES`` that
  builds here (lmms-eval's own model class for the family; else VRP-Bench's plugin model with capture and
  self-consistency off, i.e. plain ``generate``), built once beforehand. Timed: its ``generate_until`` call
  (every request of the task: messages, images, generate, decode).

Neither time includes process start, imports, model loading or task building. Target: VRP-Bench's samples/s
at least a third of lmms-eval's (<= 3x the time). Where a candidate cannot run, its one-line reason is recorded.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.common import REPO, synchronize
from vrp_bench.api.errors import one_line
from vrp_bench.zoo import CHECKPOINTS

TASK = "vrp_shapes_color"
FAMILIES = ("llava", "qwen2_vl")


@dataclass(frozen=True)
class LmmsCandidate:
    """An lmms-eval model that can run a family's tiny checkpoint, and its model args."""

    name: str
    args: Callable[[str, torch.device, torch.dtype], dict[str, Any]]
    """(family, device, dtype) -> model args."""
    what: str


def own_class_args(family: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Model args of lmms-eval's own HF classes (``llava_hf``, ``qwen2_vl``) for the tiny checkpoint (lmms-eval's
    ``qwen2_vl`` takes no dtype: it loads the checkpoint's)."""
    args = {"pretrained": str(CHECKPOINTS / family), "device": str(device), "device_map": str(device)}
    return {**args, "dtype": str(dtype).removeprefix("torch.")} if family == "llava" else args


def plugin_args(family: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Model args of VRP-Bench's lmms-eval plugin model with signals off (plain ``generate``)."""
    return {"capture": False, "sc_samples": 0, "device": str(device), "dtype": str(dtype).removeprefix("torch.")}


LMMS_CANDIDATES: dict[str, tuple[LmmsCandidate, ...]] = {
    family: (
        LmmsCandidate(own, own_class_args, f"lmms-eval's own `{own}` class"),
        LmmsCandidate(f"vrp_tiny_{family}", plugin_args,
                      f"lmms-eval driving VRP-Bench's plugin `vrp_tiny_{family}` with capture and SC off"),
    )
    for family, own in (("llava", "llava_hf"), ("qwen2_vl", "qwen2_vl"))
}


class LoopTimer:
    """A progress reporter (``vrp_bench.run.ProgressFactory``) that times the doc loop it reports on."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._start = device, 0.0, 0.0

    def __call__(self, description: str) -> Callable[[int], LoopTimer]:
        def make(total: int) -> LoopTimer:
            synchronize(self.device)
            self._start = time.perf_counter()
            return self
        return make

    def update(self, n: int) -> None:
        """Docs done (nothing to do: only the loop's length is timed)."""

    def close(self) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def lmms_args(candidate: LmmsCandidate, family: str, device: torch.device, dtype: torch.dtype) -> str:
    """``candidate``'s model args as lmms-eval's "k=v,k=v" string."""
    return ",".join(f"{key}={value}" for key, value in candidate.args(family, device, dtype).items())


def choose_lmms(family: str, device: torch.device, dtype: torch.dtype) -> tuple[LmmsCandidate, list[str]]:
    """The first lmms-eval candidate of ``family`` that builds here, and why each one before it could not."""
    from lmms_eval.models import get_model

    refused = []
    for candidate in LMMS_CANDIDATES[family]:
        try:
            get_model(candidate.name).create_from_arg_string(lmms_args(candidate, family, device, dtype))
        except Exception as error:  # noqa: BLE001 -- any failure to build is the recorded reason
            refused.append(f"`{candidate.name}`: {type(error).__name__}: {one_line(error)}")
            continue
        return candidate, refused
    raise RuntimeError(f"no lmms-eval model runs the tiny {family} checkpoint here: {'; '.join(refused)}")


def lmms_seconds(candidate: LmmsCandidate, family: str, limit: int, device: torch.device, dtype: torch.dtype) -> float:
    """lmms-eval's ``generate_until`` seconds over the first ``limit`` docs of ``TASK``. The model is built afresh
    (not timed): lmms-eval's evaluator releases a model's modules when it is done with it (``lmms.clean``)."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    lm = get_model(candidate.name).create_from_arg_string(lmms_args(candidate, family, device, dtype))
    generate_until, seconds = lm.generate_until, []

    def timed_generate_until(requests: list[Any]) -> list[Any]:
        synchronize(device)
        start = time.perf_counter()
        answers = generate_until(requests)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        return answers

    lm.generate_until = timed_generate_until
    simple_evaluate(model=lm, tasks=[TASK], limit=limit, task_manager=TaskManager(include_path=str(REPO / "tasks")),
                    log_samples=False, bootstrap_iters=0, verbosity="WARNING")
    return sum(seconds)


def vrp_seconds(vlm: Any, limit: int, device: torch.device) -> tuple[float, float]:
    """VRP-Bench's doc-loop seconds over the first ``limit`` docs of ``TASK``, and the rest of the call's."""
    from vrp_bench.run import evaluate

    timer = LoopTimer(device)
    start = time.perf_counter()
    evaluate(vlm, TASK, limit=limit, progress=timer)
    return timer.seconds, time.perf_counter() - start - timer.seconds


def compare(family: str, limits: Sequence[int], repeats: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Per limit: median seconds of both harnesses' loops (harnesses alternated, ``repeats`` times), samples/s,
    and the ratio; plus a least-squares fit seconds = fixed + per_doc x docs of each harness."""
    from vrp_bench.api.model import MODELS
    from vrp_bench.builtins import register_builtins

    register_builtins()
    vlm = MODELS.get(f"tiny_{family}").from_args({"dtype": str(dtype).removeprefix("torch.")}, device=str(device))
    candidate, refused = choose_lmms(family, device, dtype)
    vrp_seconds(vlm, min(limits), device)  # warm-up of both
    lmms_seconds(candidate, family, min(limits), device, dtype)
    rows = []
    for limit in limits:
        vrp, rest, lmms = [], [], []
        for _ in range(repeats):
            loop, after = vrp_seconds(vlm, limit, device)
            vrp.append(loop)
            rest.append(after)
            lmms.append(lmms_seconds(candidate, family, limit, device, dtype))
        row = {"docs": limit, "vrp_seconds": statistics.median(vrp), "lmms_seconds": statistics.median(lmms),
               "vrp_scoring_and_report_seconds": statistics.median(rest)}
        row.update(vrp_samples_per_s=limit / row["vrp_seconds"], lmms_samples_per_s=limit / row["lmms_seconds"],
                   time_ratio=row["vrp_seconds"] / row["lmms_seconds"])
        rows.append(row)
    return {"lmms_model": candidate.name, "lmms_model_is": candidate.what, "lmms_refused": refused,
            "vrp_model": f"tiny_{family}", "rows": rows,
            "vrp_fit": linear_fit([r["docs"] for r in rows], [r["vrp_seconds"] for r in rows]),
            "lmms_fit": linear_fit([r["docs"] for r in rows], [r["lmms_seconds"] for r in rows])}


def linear_fit(docs: Sequence[int], seconds: Sequence[float]) -> dict[str, float] | None:
    """seconds = fixed + per_doc x docs, least squares (None with fewer than two doc counts)."""
    if len(set(docs)) < 2:
        return None
    slope, intercept = statistics.linear_regression(docs, seconds)
    return {"fixed_seconds": intercept, "seconds_per_doc": slope}

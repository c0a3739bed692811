"""Re-running part of a submitted run to check that it is what it says: same checkpoint, same answers, same
signals.

``verify_run`` rebuilds the model from the report's recorded settings (model, model_args, batch size, seed,
generation overrides, task folders), answers the first ``limit`` docs of every task again, and compares doc by
doc with the saved per-sample records: the doc (``doc_hash``), the answer and its correctness must be equal, and
every signal must agree within the tolerances: for a number, |a - b| <= atol + rtol * |b| (float arithmetic
differs across hardware and batch shapes; defaults ``ATOL`` and ``RTOL``), elementwise for per-layer lists;
strings, booleans and nulls exactly. The model's fingerprint must equal the recorded one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrp_bench.api.task_index import TaskIndex
from vrp_bench.builtins import register_builtins
from vrp_bench.evaluator import RunConfig, evaluate
from vrp_bench.report.saved_run import load_run

ATOL = 1e-4
RTOL = 1e-3


@dataclass
class TaskCheck:
    """One task's comparison: docs compared, and the first disagreements (doc id, what, saved, rerun)."""

    task: str
    compared: int = 0
    disagreements: list[tuple[int, str, Any, Any]] = field(default_factory=list)


@dataclass
class Verification:
    """What ``verify_run`` found."""

    tasks: list[TaskCheck]
    fingerprint_matches: bool | None
    """None when the report records no fingerprint."""

    @property
    def passed(self) -> bool:
        return self.fingerprint_matches is not False and not any(t.disagreements for t in self.tasks)


def agrees(saved: Any, rerun: Any, atol: float = ATOL, rtol: float = RTOL) -> bool:
    """Whether a re-run value agrees with the saved one (module docstring)."""
    if isinstance(saved, list) and isinstance(rerun, list):
        return len(saved) == len(rerun) and all(agrees(a, b, atol, rtol) for a, b in zip(saved, rerun))
    numbers = (int, float)
    if isinstance(saved, numbers) and isinstance(rerun, numbers) and not isinstance(saved, bool) \
            and not isinstance(rerun, bool):
        return math.isclose(rerun, saved, rel_tol=rtol, abs_tol=atol)
    return type(saved) is type(rerun) and saved == rerun


def verify_run(path: Path, limit: int, atol: float = ATOL, rtol: float = RTOL, device: str | None = None) -> Verification:
    """Answer the first ``limit`` docs of each task of the run at ``path`` again and compare (module docstring)."""
    run = load_run(path)
    config = run.report["config"]
    register_builtins()
    rerun = evaluate(
        RunConfig(model=config["model"], tasks=",".join(run.report["results"]), model_args=config["model_args"],
                  include_paths=[Path(p) for p in config.get("include_path") or []], limit=limit,
                  batch_size=config["batch_size"], device=device, seed=config["seed"],
                  gen_kwargs=config["gen_kwargs"]),
        TaskIndex([Path(p) for p in config.get("include_path") or []]),
    )
    recorded = run.report["model"].get("fingerprint")
    fingerprint = rerun.model.describe().get("fingerprint")
    checks = []
    for task, result in rerun.results.items():
        saved = {record["doc_id"]: record for record in run.samples[task]}
        check = TaskCheck(task)
        for record in result.records:
            old, new = saved.get(record.doc_id), record.to_json()
            if old is None:
                check.disagreements.append((record.doc_id, "doc", None, "not in the saved run"))
                continue
            check.compared += 1
            for key in ("doc_hash", "prediction", "correct", "error"):
                if old.get(key) != new.get(key):
                    check.disagreements.append((record.doc_id, key, old.get(key), new.get(key)))
            old_signals, new_signals = old.get("signals") or {}, new.get("signals") or {}
            for name in sorted(set(old_signals) | set(new_signals)):
                if not agrees(old_signals.get(name), new_signals.get(name), atol, rtol):
                    check.disagreements.append((record.doc_id, f"signal {name}", old_signals.get(name),
                                                new_signals.get(name)))
        checks.append(check)
    return Verification(checks, None if recorded is None else recorded == fingerprint)

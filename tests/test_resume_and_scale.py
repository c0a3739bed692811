"""Resumable runs (the per-sample cache) and data-parallel runs (``accelerate launch -m vrp_bench``).

One uninterrupted single-process run of a tiny model is the reference. A run killed with SIGKILL partway and
started again, and a run on two CPU processes under ``accelerate launch``, must both write the same per-sample
file and the same report (but for the date, the run time, the command line and the files' date-stamped names).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vrp_bench.api.instance import GenerationSettings, Request
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.evaluator import SampleRecord
from vrp_bench.sample_cache import SampleCache

MODEL, TASK, LIMIT = "tiny_llava", "vrp_shapes_color", 24
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1"}
RUN_ARGS = ["--model", MODEL, "--tasks", TASK, "--limit", str(LIMIT), "--log_samples", "--threads", "1",
            "--verbosity", "INFO"]


def vrp_bench(*args: str, launcher: list[str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), "-m", "vrp_bench", *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENVIRONMENT, timeout=900, **kwargs)


def run_outputs(folder: Path) -> tuple[str, dict[str, Any]]:
    """(the samples file's text, the report without what differs between two runs of the same thing)."""
    (results,) = folder.glob("*_results.json")
    stem = results.name.removesuffix("_results.json")
    (samples,) = folder.glob(f"{stem}_samples_*.jsonl")
    report = json.loads(results.read_text())
    for volatile in ("date", "date_iso", "total_evaluation_time_seconds"):
        report.pop(volatile)
    report["config"].pop("command_line")
    report["files"] = {name.removeprefix(stem): digest for name, digest in report["files"].items()}
    return samples.read_text(), report


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, dict[str, Any]]:
    """The uninterrupted single-process run, with no cache."""
    out = tmp_path_factory.mktemp("reference")
    done = vrp_bench(*RUN_ARGS, "--output_path", str(out), "--no_cache")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / MODEL / "cache").exists()
    return run_outputs(out / MODEL)


def cached_entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.npz"))


def test_killed_run_resumes_to_the_same_report(tmp_path, reference):
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = [sys.executable, "-m", "vrp_bench", *RUN_ARGS, "--output_path", str(out), "--cache_dir", str(cache)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT)
    deadline = time.monotonic() + 600
    while len(cached_entries(cache)) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(cached_entries(cache))
    assert process.returncode == -signal.SIGKILL and 5 <= finished < LIMIT, (process.returncode, finished)
    assert not out.exists() or not list(out.rglob("*_results.json"))  # nothing half-written

    resumed = vrp_bench(*RUN_ARGS, "--output_path", str(out), "--cache_dir", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reused = int(resumed.stderr.split("samples reused")[0].split()[-1])
    assert finished <= reused < LIMIT  # it took what the killed run finished (a write may land just before the kill)
    assert len(cached_entries(cache)) == LIMIT
    samples, report = run_outputs(out / MODEL)
    assert [json.loads(line)["doc_id"] for line in samples.splitlines()] == list(range(LIMIT))
    assert (samples, report) == reference


def test_corrupt_cache_entry_is_recomputed(tmp_path, reference):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = vrp_bench(*RUN_ARGS, "--output_path", str(out), "--cache_dir", str(cache))
    assert first.returncode == 0, first.stderr[-2000:]
    entries = cached_entries(cache)
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
    entries[1].write_bytes(b"not an npz at all")
    shutil.rmtree(out)
    again = vrp_bench(*RUN_ARGS, "--output_path", str(out), "--cache_dir", str(cache))
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{LIMIT - 2} samples reused, 2 stored, 2 unreadable recomputed" in again.stderr
    assert run_outputs(out / MODEL) == reference


def test_two_process_accelerate_launch_matches_one_process(tmp_path, reference):
    pytest.importorskip("accelerate", reason="accelerate is not installed (pip install -e '.[lmms]')")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", "29517"]
    out = tmp_path / "out"
    done = vrp_bench(*RUN_ARGS, "--output_path", str(out), "--no_cache", launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    assert run_outputs(out / MODEL) == reference


# --- the cache key: never shared across models or settings -------------------------------------------------------


class DescribedModel:
    """Stands in for a loaded VLM: only ``describe()`` matters to the cache."""

    def __init__(self, **description: Any) -> None:
        self.description = {"fingerprint": "f" * 64, "dtype": "float32", "device": "cpu", "capture": True,
                            "self_consistency": {"k": 10, "temperature": 0.7}, **description}

    def describe(self) -> dict[str, Any]:
        return dict(self.description)


def test_cache_key_changes_with_every_setting(tmp_path):
    index = TaskIndex()
    color, count = index.build("vrp_shapes_color"), index.build("vrp_shapes_count")
    request = Request(task=color.name, doc_id=3, images=[], prompt="what color?", generation=GenerationSettings(),
                      seed=7, target="red")

    def key(model: DescribedModel | None = None, task=color, **changes: Any) -> str:
        cache = SampleCache(tmp_path, model or DescribedModel())  # type: ignore[arg-type]
        doc_hash = changes.pop("doc_hash", "sha256:doc")
        return cache.key(task, Request(**{**request.__dict__, **changes}), doc_hash)

    base = key()
    assert key() == base  # the same everything: the same entry
    assert key(DescribedModel(device="cpu")) == base
    assert key(DescribedModel(device="cuda:1")) == key(DescribedModel(device="cuda:0"))  # ranks share
    variants = {
        "another checkpoint": key(DescribedModel(fingerprint="0" * 64)),
        "another dtype": key(DescribedModel(dtype="bfloat16")),
        "a GPU": key(DescribedModel(device="cuda:0")),
        "no capture": key(DescribedModel(capture=False)),
        "other self-consistency": key(DescribedModel(self_consistency={"k": 5, "temperature": 0.7})),
        "another task": key(task=count),
        "another doc": key(doc_id=4),
        "another doc's content": key(doc_hash="sha256:other"),
        "another prompt": key(prompt="which colour?"),
        "other generation settings": key(generation=GenerationSettings(max_new_tokens=4)),
        "another seed": key(seed=8),
    }
    assert len(set(variants.values()) | {base}) == len(variants) + 1, variants


def test_cache_refuses_models_without_fingerprint_and_bad_entries(tmp_path):
    assert SampleCache.for_model(tmp_path, DescribedModel(fingerprint=None)) is None  # type: ignore[arg-type]
    assert SampleCache.for_model(None, DescribedModel()) is None  # type: ignore[arg-type]
    cache = SampleCache.for_model(tmp_path, DescribedModel())  # type: ignore[arg-type]
    record = SampleRecord(3, target="red", prediction="red", metrics={"exact_match": 1.0}, correct=True,
                          signals={"h_s": 0.5, "nan_signal": float("nan")})
    cache.store("ab" * 32, record)
    cache.store("cd" * 32, SampleRecord(4, error="out of memory"))  # failed samples are not kept
    assert cache.stored == 1 and cached_entries(tmp_path) == [tmp_path / "ab" / f"{'ab' * 32}.npz"]
    (loaded,) = cache.take(["ab" * 32], [3])
    assert loaded.prediction == "red" and loaded.correct is True and loaded.signals["h_s"] == 0.5
    assert cache.take(["ab" * 32], [4]) is None and cache.corrupt == 1  # stored for another doc: not trusted
    assert cache.take(["cd" * 32], [4]) is None and cache.corrupt == 1  # absent is not corrupt
    assert cache.take(["ab" * 32, "cd" * 32], [3, 4]) is None and cache.hits == 1  # a batch is taken whole or not

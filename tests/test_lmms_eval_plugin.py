"""VRP's models inside lmms-eval (vrp_bench.integrations): the ``lmms_eval.models`` entry points, the adapter's
request handling, and end-to-end runs of ``python -m lmms_eval --model vrp_tiny_qwen2_vl`` checked against
VRP-Bench's own run of the same model (generate_until) and against the model's own option scores (loglikelihood)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("lmms_eval")

from vrp_bench.api.instance import GenerationSettings, OptionScore, Request, Response  # noqa: E402
from vrp_bench.api.model import MODELS, VLM  # noqa: E402
from vrp_bench.api.task import stable_seed  # noqa: E402
from vrp_bench.api.task_index import builtin_tasks_dir  # noqa: E402
from vrp_bench.builtins import register_builtins  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

def run_lmms_eval(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``python -m lmms_eval ARGS``; it exits 0 even when the evaluation failed, so callers check its files."""
    completed = subprocess.run(
        [sys.executable, "-m", "lmms_eval", *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=400, env={**{k: v for k, v in os.environ.items() if k != "VRP_BENCH_OUTPUT"}, **OFFLINE, **(env or {})},
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return output


def lmms_results(output_path: Path, task: str, log: str) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """lmms-eval's results for ``task`` and its per-doc samples (doc_id -> sample)."""
    results = [p for p in output_path.rglob("*_results.json") if "vrp_bench" not in p.parts]
    samples = [p for p in output_path.rglob(f"*_samples_{task}.jsonl") if "vrp_bench" not in p.parts]
    assert len(results) == 1 and len(samples) == 1, f"lmms-eval wrote no results:\n{log[-4000:]}"
    per_doc = {}
    for line in samples[0].read_text().splitlines():
        sample = json.loads(line)
        per_doc[sample["doc_id"]] = sample
    return json.loads(results[0].read_text())["results"][task], per_doc


def vrp_files(root: Path, lmms_model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """VRP's report and per-sample records written beside lmms-eval's files (strict JSON)."""
    folder = root / "vrp_bench" / lmms_model
    reports, signals = sorted(folder.glob("*_report.json")), sorted(folder.glob("*_signals.jsonl"))
    assert len(reports) == 1 and len(signals) == 1, sorted(p.name for p in folder.glob("*"))

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    return strict(reports[0].read_text()), [strict(line) for line in signals[0].read_text().splitlines()]


def same(a: Any, b: Any) -> bool:
    """Equal JSON values, floats within 1e-6."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# --- entry points -------------------------------------------------------------------------------------------------


def test_entry_points_list_every_vrp_model():
    tomllib = pytest.importorskip("tomllib")
    from vrp_bench.integrations.lmms_eval_manifests import lmms_name

    register_builtins()
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["lmms_eval.models"]
    assert set(table) == {lmms_name(name) for name in MODELS}
    assert all(value == f"vrp_bench.integrations.lmms_eval_manifests:{name}" for name, value in table.items())

    from importlib.metadata import entry_points

    if not {ep.name for ep in entry_points(group="lmms_eval.models")} >= set(table):
        pytest.skip("the installed metadata predates the entry points: pip install -e . --no-deps")
    import lmms_eval.models as lmms_models

    from vrp_bench.integrations import lmms_eval_models

    for name in table:
        cls = lmms_models.get_model(name)
        assert cls.__module__ == lmms_eval_models.__name__ and cls.vrp_model == name.removeprefix("vrp_")
        assert issubclass(cls, lmms_eval_models.VRPModel) and cls.is_simple


# --- the adapter on fake requests -----------------------------------------------------------------------------------


class FakeVLM(VLM):
    """Answers "a" (fails doc 3), scores options with fixed log-probabilities, keeps what it was asked."""

    name = "lmms_test_fake"
    asked: ClassVar[list[Request]] = []

    def generate(self, requests):
        FakeVLM.asked.extend(requests)
        return [Response.failed("out of memory") if r.doc_id == 3 else Response(text="a") for r in requests]

    def loglikelihood(self, requests, options):
        FakeVLM.asked.extend(requests)
        table = {" x": OptionScore(-2.0, False, 1), " y": OptionScore(-0.5, True, 1),
                 " z": OptionScore(None, error="no")}
        return [table[o] for o in options]


def lmms_output(output: Any) -> Any:
    """A model output as lmms-eval's evaluator stores it (0.7.3 unwraps every output)."""
    try:
        from lmms_eval.api.instance import unwrap_generation_output
    except ImportError:
        return output
    return unwrap_generation_output(output)[0]


def make_instance(request_type: str, arguments: tuple, doc_id: int, idx: int = 0):
    from lmms_eval.api.instance import Instance

    return Instance(request_type=request_type, arguments=arguments, idx=idx,
                    metadata={"task": "t", "doc_id": doc_id, "repeats": 1})


@pytest.fixture
def fake_adapter(tmp_path):
    from vrp_bench.integrations.lmms_eval_models import VRPModel

    FakeVLM.asked = []
    with MODELS.registered(FakeVLM.name, FakeVLM):
        cls = type("VRP_lmms_test_fake", (VRPModel,), {"vrp_model": FakeVLM.name})
        adapter = cls(seed=7, vrp_output=str(tmp_path / "out"))
        from PIL import Image

        def broken(doc):
            raise OSError("image file is truncated")

        adapter.task_dict = {"t": {"test": [{"i": n} for n in range(5)]}}
        adapter.visual = lambda doc: broken(doc) if doc["i"] == 2 else [Image.new("RGB", (8, 6))]
        yield adapter


def test_generate_until_turns_requests_into_vrp_requests_and_never_raises_for_one_sample(fake_adapter, tmp_path):
    kwargs = {"until": ["\n"], "max_new_tokens": 5, "temperature": 0, "do_sample": False, "image_aspect_ratio": "pad"}
    instances = [make_instance("generate_until", (f"q{n}", dict(kwargs), fake_adapter.visual, n, "t", "test"), n)
                 for n in range(4)]
    assert fake_adapter.generate_until(instances) == ["a", "a", "", ""]  # doc 2: image fails; doc 3: model fails
    asked = {r.doc_id: r for r in FakeVLM.asked}
    assert sorted(asked) == [0, 1, 3]
    assert asked[0].prompt == "q0" and asked[0].images[0].size == (8, 6) and asked[0].target is None
    assert asked[0].generation == GenerationSettings(until=("\n",), max_new_tokens=5, temperature=0.0)
    assert asked[1].seed == stable_seed(7, "t", 1)
    assert fake_adapter.ignored_keys == {"image_aspect_ratio"}

    report, records = vrp_files(tmp_path / "out", "vrp_lmms_test_fake")
    assert [(r["doc_id"], r["prediction"]) for r in records] == [(0, "a"), (1, "a"), (2, None), (3, None)]
    assert "truncated" in records[2]["error"] and records[3]["error"] == "out of memory"
    assert report["tasks"]["t"]["n_samples"] == 4 and report["tasks"]["t"]["n_errors"] == 2
    assert report["output_root_from"] == "model_args vrp_output" and report["seed"] == 7
    assert report["ignored_generation_kwargs"] == ["image_aspect_ratio"]


def test_loglikelihood_returns_negative_summed_logprob_so_lmms_argmin_picks_the_likeliest(fake_adapter, tmp_path):
    import numpy as np

    instances = [make_instance("loglikelihood", ("q", option, fake_adapter.visual, 0, "t", "test"), 0, idx)
                 for idx, option in enumerate([" x", " y", " z"])]
    instances.append(make_instance("loglikelihood", ("", " y"), 0, 3))  # lmms-eval's unconditional request
    results = [lmms_output(x) for x in fake_adapter.loglikelihood(instances)]
    assert results == [(2.0, False), (0.5, True), (math.inf, False), (0.5, True)]
    assert int(np.argmin([loss for loss, _ in results[:3]])) == 1  # the option of highest summed log-probability
    assert FakeVLM.asked[-1].images == [] and FakeVLM.asked[-1].prompt == ""
    _, records = vrp_files(tmp_path / "out", "vrp_lmms_test_fake")
    assert [(r["option_index"], r["logprob"], r["error"]) for r in records] == [
        (0, -2.0, None), (1, -0.5, None), (2, None, "no"), (3, -0.5, None)]


def test_lmms_eval_command_line_is_read_only_from_lmms_evals_own_process(monkeypatch):
    from vrp_bench.integrations.lmms_eval_models import lmms_eval_command_line, output_root

    main = "/x/site-packages/lmms_eval/__main__.py"
    cli = lmms_eval_command_line([main, "--model", "m", "--output_path", "out", "--seed", "5,1,2,3"])
    assert (cli.output_path, cli.seed) == ("out", 5)
    assert lmms_eval_command_line(["/usr/bin/lmms-eval", "--seed", "None"]).seed == 0
    assert lmms_eval_command_line(["pytest", "--output_path", "out"]) is None
    assert output_root("mine", cli) == (Path("mine"), "model_args vrp_output")
    monkeypatch.delenv("VRP_BENCH_OUTPUT", raising=False)
    assert output_root(None, cli) == (Path("out"), "lmms-eval --output_path")
    assert output_root(None, None) == (None, None)
    monkeypatch.setenv("VRP_BENCH_OUTPUT", "env_out")
    assert output_root(None, cli) == (Path("env_out"), "$VRP_BENCH_OUTPUT")


# --- end to end under lmms-eval's own evaluator ----------------------------------------------------------------------

LIMIT = 16
SEED = 3


def test_generate_until_under_lmms_eval_matches_vrp_bench(tmp_path):
    import vrp_bench
    from vrp_bench.scoring.settings import ScoringSettings
    from vrp_bench.signals.catalogue import SIGNALS

    task, output = "vrp_shapes_color", tmp_path / "lmms_out"
    log = run_lmms_eval("--model", "vrp_tiny_qwen2_vl", "--model_args", "sc_samples=4", "--tasks", task,
                        "--include_path", builtin_tasks_dir(), "--output_path", output, "--log_samples",
                        "--limit", LIMIT, "--seed", SEED, cwd=tmp_path)
    lmms, lmms_samples = lmms_results(output, task, log)

    vrp = vrp_bench.evaluate("tiny_qwen2_vl", task, model_args={"sc_samples": 4}, limit=LIMIT, seed=SEED,
                             scoring=ScoringSettings(seed=SEED, n_resamples=20, permutations=0, repeats=1))
    assert sorted(lmms_samples) == list(range(LIMIT))
    vrp_samples = {s["doc_id"]: s for s in vrp.samples[task]}
    assert {d: str(s["filtered_resps"]).strip() for d, s in lmms_samples.items()} == {
        d: s["prediction"].strip() for d, s in vrp_samples.items()}
    assert lmms["exact_match,none"] == pytest.approx(vrp.report["results"][task]["exact_match,none"])
    assert {d: s["exact_match"] for d, s in lmms_samples.items()} == {
        d: s["exact_match"] for d, s in vrp_samples.items()}

    report, records = vrp_files(output, "vrp_tiny_qwen2_vl")
    assert report["model"] == "tiny_qwen2_vl" and report["output_root_from"] == "lmms-eval --output_path"
    assert report["seed"] == SEED  # lmms-eval's --seed
    assert report["model_description"]["fingerprint"] == vrp.report["model"]["fingerprint"]
    assert report["tasks"][task]["n_samples"] == LIMIT and report["tasks"][task]["n_with_signals"] >= 0.9 * LIMIT
    assert [r["doc_id"] for r in records] == list(range(LIMIT)) and all(r["error"] is None for r in records)
    # the same signals as VRP-Bench's run (same per-request seeds), but those that need the doc's boxes or the
    # reference answer, which lmms-eval does not give models
    unseen = {n for n, spec in SIGNALS.items() if spec.reference is not None or {"boxes", "target"} & set(spec.needs)}
    compared = 0
    for record in records:
        mine, theirs = record["signals"], vrp_samples[record["doc_id"]]["signals"]
        assert sum(v is not None for v in mine.values()) >= 0.5 * len(mine)
        for name in set(theirs) - unseen:
            assert same(mine[name], theirs[name]), (record["doc_id"], name, mine[name], theirs[name])
            compared += mine[name] is not None
    assert compared >= LIMIT * 10

    # `vrp-bench score` on lmms-eval's output folder merges these signals with lmms-eval's per-sample scores:
    # a whole VRP report (signals scored against lmms-eval's correctness) for a run lmms-eval made
    from conftest import main

    assert main(["score", str(output), "--output", str(tmp_path / "scored.json"), "--bootstrap_resamples", "200"]) == 0
    scored = json.loads((tmp_path / "scored.json").read_text())
    within = scored["signals"]["within_task"]
    assert within["n"] == LIMIT and scored["config"]["signals"] is not None
    aurocs = {name: entry["statistics"]["auroc"]["value"] for name, entry in within["signals"].items()}
    assert sum(value is not None for value in aurocs.values()) >= 5, aurocs


def test_multiple_choice_under_lmms_eval_scores_with_vrp_loglikelihood(tmp_path):
    import datasets
    import numpy as np

    from vrp_bench.datasets.vrp_shapes import COLORS

    n_docs = 6
    source = datasets.load_dataset("parquet", split="train", data_files=str(
        builtin_tasks_dir() / "vrp_shapes" / "data" / "64px" / "color-test.parquet")).select(range(n_docs))
    task_dir = tmp_path / "mc_task"
    (task_dir / "images").mkdir(parents=True)
    docs = []
    for index, row in enumerate(source):
        image_path = task_dir / "images" / f"{index}.png"
        row["image"].convert("RGB").save(image_path)
        docs.append({"image_path": str(image_path), "prompt": row["question"], "label": COLORS.index(row["answer"])})
    (task_dir / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (task_dir / "utils.py").write_text(
        "from PIL import Image\n\n\n"
        "def doc_to_visual(doc):\n    return [Image.open(doc['image_path']).convert('RGB')]\n")
    (task_dir / "vrp_test_mc_color.yaml").write_text(f"""task: vrp_test_mc_color
dataset_path: json
dataset_kwargs:
  data_files:
    test: {task_dir / "docs.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: prompt
doc_to_choice: {json.dumps(list(COLORS))}
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    output, vrp_output = tmp_path / "lmms_out", tmp_path / "vrp_out"
    log = run_lmms_eval("--model", "vrp_tiny_qwen2_vl", "--model_args", f"capture=false,vrp_output={vrp_output}",
                        "--tasks", "vrp_test_mc_color", "--include_path", task_dir, "--output_path", output,
                        "--log_samples", cwd=tmp_path)
    lmms, lmms_samples = lmms_results(output, "vrp_test_mc_color", log)

    # the same answers straight from the VRP model: the option of highest summed log-probability, with the
    # continuation as lmms-eval builds it (target_delimiter " " + choice)
    from PIL import Image

    register_builtins()
    model = MODELS.get("tiny_qwen2_vl").from_args({"capture": False})
    direct: dict[int, list[float]] = {}
    for doc_id, doc in enumerate(docs):
        image = Image.open(doc["image_path"]).convert("RGB")
        direct[doc_id] = []
        for choice in COLORS:
            request = Request(task="vrp_test_mc_color", doc_id=doc_id, images=[image], prompt=doc["prompt"],
                              generation=GenerationSettings(), seed=0)
            (score,) = model.loglikelihood([request], [f" {choice}"])
            direct[doc_id].append(score.logprob)
    correct = {d: float(int(np.argmax(lps)) == docs[d]["label"]) for d, lps in direct.items()}
    assert {d: s["acc"] for d, s in lmms_samples.items()} == correct
    assert lmms["acc,none"] == pytest.approx(sum(correct.values()) / n_docs)

    report, records = vrp_files(vrp_output, "vrp_tiny_qwen2_vl")
    assert report["output_root_from"] == "model_args vrp_output"
    assert report["tasks"]["vrp_test_mc_color"]["n_options_scored"] == n_docs * len(COLORS)
    assert not list(output.rglob("vrp_bench"))  # vrp_output= wins over lmms-eval's --output_path
    for record in records:
        assert record["request_type"] == "loglikelihood" and record["error"] is None
        assert record["continuation"] == f" {COLORS[record['option_index']]}"
        assert record["logprob"] == pytest.approx(direct[record["doc_id"]][record["option_index"]], abs=1e-4)

"""`vrp-bench regress`: a paired bootstrap of the change between two runs of the same docs, exit 0 (no significant
regression), 1 (a regression beyond tolerance) or 2 (the runs cannot be compared); and the committed baseline
of the CI gate, which a run of the shipped checkpoint passes and a run of a degraded copy of it fails."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from test_report_scoring import PlantedModel, results_of
from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import Request, Response
from vrp_bench.api.model import MODELS
from vrp_bench.cli import main
from vrp_bench.report.regression import (
    IMPROVEMENT,
    NO_CHANGE,
    REGRESSION,
    UNDETERMINED,
    NotComparable,
    Tolerance,
    compare_runs,
    verdict,
)

TASKS = "vrp_shapes_color,vrp_shapes_exists_random"
CHEAP = ("--bootstrap_resamples", "200", "--permutations", "0", "--cv_repeats", "1")
BASELINE = REPO / "tests" / "baselines" / "tiny_llava"


class DegradedPlanted(PlantedModel):
    """``PlantedModel`` made worse on the same docs: 40% of its answers broken (accuracy 0.6 -> about 0.36) and a
    token log-prob that no longer knows whether the answer is right."""

    name = "degraded"

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        degraded = []
        for request, response in zip(requests, super().generate(requests)):
            rng = np.random.default_rng(request.seed + 1)
            text = "wrong" if rng.random() < 0.4 else response.text
            degraded.append(Response(text=text, traces=replace(response.traces,
                                                                token_logprobs=rng.normal(-1.0, 0.5, size=1))))
        return degraded


def run(out: Path, model: str, *flags: str) -> Path:
    """A run with per-sample files under ``out``; its model folder."""
    assert main(["--model", model, "--output_path", str(out), "--log_samples", *CHEAP, *flags]) == 0
    return out / model


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    """The planted model and its degraded version on the same docs (two tasks, 40 docs each)."""
    out = tmp_path_factory.mktemp("planted")
    with MODELS.registered("planted", PlantedModel), MODELS.registered("degraded", DegradedPlanted):
        return (run(out, "planted", "--tasks", TASKS, "--limit", "40"),
                run(out, "degraded", "--tasks", TASKS, "--limit", "40"))


@pytest.fixture(scope="module")
def constant_runs(tmp_path_factory) -> dict[str, Path]:
    """`constant` runs that differ from "base" in one way each."""
    variants = {"base": ("--tasks", TASKS, "--limit", "12"),
                "fewer_docs": ("--tasks", TASKS, "--limit", "10"),
                "other_tasks": ("--tasks", "vrp_shapes_color", "--limit", "12"),
                "other_scoring": ("--tasks", TASKS, "--limit", "12", "--equivalence_margin", "0.1"),
                "other_noise": ("--tasks", TASKS, "--limit", "12", "--seed", "3")}
    return {name: run(tmp_path_factory.mktemp(name), "constant", *flags) for name, flags in variants.items()}


def rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The printed table: (task, quantity) -> [baseline, current, change [CI], verdict]."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    return {(r[0], r[1]): r[2:] for r in cells[1:]}


def test_a_run_compared_with_itself_passes_with_every_change_exactly_zero(planted, cli, tmp_path: Path) -> None:
    code, out, err = cli("regress", "--baseline", planted[0], "--current", planted[0], "--output", tmp_path / "c.json")
    assert code == 0, err
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert comparison["passed"] and comparison["docs"] == {"vrp_shapes_color": 40, "vrp_shapes_exists_random": 40}
    kinds = {c["kind"] for c in comparison["changes"]}
    assert kinds == {"accuracy", "auroc"}
    for change in comparison["changes"]:
        assert change["change"] == 0.0 and change["ci"] == [0.0, 0.0] and change["verdict"] == NO_CHANGE, change
    table = rows(out)
    assert {task for task, _ in table} == {"vrp_shapes_color", "vrp_shapes_exists_random", "within_task"}
    assert ("within_task", "auroc:p_tok") in table and ("within_task", "accuracy") in table
    assert not any(name.startswith("auroc:truth_margin") for _, name in table)  # reads the reference: never compared
    assert out.strip().splitlines()[-2].startswith("PASS: 0 regression(s)")


def test_a_degraded_model_on_the_same_docs_fails_naming_what_regressed(planted, cli, tmp_path: Path) -> None:
    code, out, err = cli("regress", "--baseline", planted[0], "--current", planted[1], "--output", tmp_path / "c.json")
    assert code == 1, err
    table = rows(out)
    for quantity in ("accuracy", "auroc:p_tok"):
        baseline, current, _, result = table[("within_task", quantity)]
        assert result == REGRESSION and float(current) < float(baseline) - 0.1, quantity
    assert table[("within_task", "auroc:h_s")][-1] != REGRESSION  # attention maps are the same random ones
    assert "FAIL: " in out and not json.loads((tmp_path / "c.json").read_text())["passed"]
    # the other way round it is an improvement, and a tolerance larger than the drop lets it pass
    code, out, _ = cli("regress", "--baseline", planted[1], "--current", planted[0])
    assert code == 0 and rows(out)[("within_task", "accuracy")][-1] == IMPROVEMENT
    assert cli("regress", "--baseline", planted[0], "--current", planted[1], "--tolerance", "0.6")[0] == 0
    assert cli("regress", "--baseline", planted[0], "--current", planted[1],
               "--tolerance", "auroc=0.6,accuracy=0.6")[0] == 0


def test_the_paired_bootstrap_is_seeded_and_its_size_is_a_flag(planted) -> None:
    first = compare_runs(planted[0], planted[1], n_resamples=300, seed=5)
    again = compare_runs(planted[0], planted[1], n_resamples=300, seed=5)
    other = compare_runs(planted[0], planted[1], n_resamples=300, seed=6)
    assert first.n_resamples == 300 and first.changes == again.changes and first.changes != other.changes
    assert compare_runs(planted[0], planted[1]).n_resamples == 200  # the baseline's


@pytest.mark.parametrize(("variant", "reason"), [
    ("fewer_docs", "vrp_shapes_color: different doc set (docs evaluated or their content) (and 1 more)"),
    ("other_tasks", "different tasks (only in the first: vrp_shapes_exists_random; only in the second: -)"),
    ("other_scoring", "different scoring settings: equivalence_margin"),
])
def test_runs_that_cannot_be_compared_exit_2_naming_why(constant_runs, cli, variant: str, reason: str) -> None:
    code, out, err = cli("regress", "--baseline", constant_runs["base"], "--current", constant_runs[variant])
    assert code == 2 and out == ""
    assert err.strip() == f"vrp-bench: error: the reports are not comparable: {reason}"
    with pytest.raises(NotComparable) as caught:
        compare_runs(constant_runs["base"], constant_runs[variant])
    assert isinstance(caught.value, UsageError) and caught.value.reasons[0] in reason


def test_the_seed_alone_does_not_make_runs_incomparable(constant_runs, cli) -> None:
    code, out, _ = cli("regress", "--baseline", constant_runs["base"], "--current", constant_runs["other_noise"])
    assert code == 0 and "PASS" in out  # `constant` answers alike whatever the seed; it has no signals
    assert set(rows(out)) == {(t, "accuracy") for t in ("vrp_shapes_color", "vrp_shapes_exists_random", "within_task")}


def test_a_run_without_its_sample_files_or_with_edited_ones_is_refused(constant_runs, cli, tmp_path: Path) -> None:
    bare = shutil.copytree(constant_runs["base"], tmp_path / "bare")
    for path in bare.glob("*_samples_*.jsonl"):
        path.unlink()
    code, _, err = cli("regress", "--baseline", constant_runs["base"], "--current", bare)
    assert code == 2 and "run with --log_samples" in err
    edited = shutil.copytree(constant_runs["base"], tmp_path / "edited")
    path = next(edited.glob("*_samples_vrp_shapes_color.jsonl"))
    path.write_text(path.read_text().replace('"prediction": "yes"', '"prediction": "no"', 1))
    code, _, err = cli("regress", "--baseline", constant_runs["base"], "--current", edited)
    assert code == 2 and f"{path.name}: content differs from its sha256" in err


def test_tolerance_and_verdict_rules() -> None:
    assert Tolerance.parse("0.05") == Tolerance(0.05, 0.05, 0.05)
    assert Tolerance.parse("accuracy=0.01,auroc=0.03") == Tolerance(accuracy=0.01, auroc=0.03, robustness_auc=0.02)
    for bad in ("x", "-0.1", "auroc=nan", "accurracy=0.1"):
        with pytest.raises(UsageError, match="--tolerance"):
            Tolerance.parse(bad)
    assert verdict([-0.10, -0.03], 0.02) == REGRESSION
    assert verdict([-0.10, -0.01], 0.02) == NO_CHANGE  # significant, but within tolerance
    assert verdict([0.03, 0.10], 0.02) == IMPROVEMENT
    assert verdict(None, 0.02) == UNDETERMINED


# ---- the committed baseline of the CI gate, and a degraded real checkpoint ----

def baseline_command() -> list[str]:
    """The committed baseline's command line, as its report recorded it."""
    report = results_of(BASELINE)
    return shlex.split(report["config"]["command_line"])


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def test_the_baseline_script_is_the_command_behind_the_committed_baseline() -> None:
    line = next(line for line in (BASELINE / "run.sh").read_text().splitlines() if line.startswith("vrp-bench "))
    assert shlex.split(line.replace('"$output_path"', "tests/baselines")) == baseline_command()


def degrade(checkpoint: Path, layer: int) -> None:
    """Destroy half of one decoder layer's output units for good: zero half of the rows (output features) of its
    attention output projection and of its MLP down projection, then save the weights over the checkpoint's."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from vrp_bench.models.families import FAMILIES

    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    adapter = FAMILIES[model.config.model_type](AutoConfig.from_pretrained(checkpoint))
    decoder = adapter.decoder_layers(model)[layer]
    with torch.no_grad():
        for projection in (adapter.attention_module(decoder).o_proj, adapter.mlp_down_projection(decoder)):
            rows_out = projection.weight.shape[0]
            projection.weight[torch.randperm(rows_out, generator=torch.Generator().manual_seed(0))[: rows_out // 2]] = 0
    model.save_pretrained(checkpoint)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: on a machine whose cores are shared, its default threads can spin-wait for
    each other many times over the run's cost (the answers are the same: the committed baseline reproduces)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_shipped_checkpoint_passes_the_gate_and_a_degraded_copy_fails_it(cli, tmp_path: Path,
                                                                             one_torch_thread) -> None:
    from vrp_bench.zoo import CHECKPOINTS

    command = baseline_command()[1:]
    fresh = tmp_path / "fresh"
    assert main(with_flag(command, "--output_path", str(fresh))) == 0
    code, out, err = cli("regress", "--baseline", BASELINE, "--current", fresh / "tiny_llava")
    assert code == 0, err + out
    table = rows(out)
    robustness = table[("within_task", "robustness_auc:L1/random")]
    assert float(robustness[0]) == pytest.approx(results_of(BASELINE)["ablation"]["curves"][0]["robustness_auc"],
                                                 abs=5e-4)

    checkpoint = Path(shutil.copytree(CHECKPOINTS / "llava", tmp_path / "degraded_llava"))
    degrade(checkpoint, layer=2)  # the last decoder layer: its middle one, 1, costs the retrained LLaVA too little
    # to tell apart on 80 docs (-0.125, CI [-0.25, 0.00]); this one fails the gate on accuracy (colour: -0.175)
    given = command[command.index("--model_args") + 1]
    args = with_flag(command, "--model_args", f"pretrained={checkpoint},{given}")
    assert main(with_flag(args, "--output_path", str(tmp_path / "degraded"))) == 0
    code, out, err = cli("regress", "--baseline", BASELINE, "--current", tmp_path / "degraded" / "tiny_llava")
    assert code == 1, err + out
    assert any(metric == "accuracy" and row[-1] == REGRESSION for (_, metric), row in rows(out).items()), out

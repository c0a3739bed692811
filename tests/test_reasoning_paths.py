"""Self-consistency over sampled reasoning paths (#17) on the embedded default: the vrp_shapes reasoning variants ask
for "what is in the image, then answer: X", the tiny zoo has learned that format, the task's regex extracts each
path's final answer, and the agreement is computed from the extracted answers only."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from vrp_bench.api.task_index import TaskIndex
from vrp_bench.evaluator import RunConfig, prepare_tasks
from vrp_bench.zoo.train import REASONING_POST_PROMPT, TRAINED_SETS

VARIANTS = [f"vrp_shapes_{name}_reasoning" for name in TRAINED_SETS]
FINAL_ANSWER = re.compile(r"answer\s*:\s*(.+?)\s*$")
"""The final-answer pattern, written here independently of the tasks' filter."""


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_asks_what_the_zoo_learned_and_extracts_the_final_answer(name: str) -> None:
    task = TaskIndex([]).build(name)
    base = TaskIndex([]).build(name.removesuffix("_reasoning"))
    assert task.prompt_kwargs(("tiny_llava", "llava"))["post_prompt"] == REASONING_POST_PROMPT
    assert task.config.generation_kwargs["max_new_tokens"] > base.config.generation_kwargs["max_new_tokens"]
    assert {k: v for k, v in task.config.metadata.items() if k != "variant"} == base.config.metadata
    primary = task.filters[0]
    assert primary.extract("red circle blue square . answer : left", {}) == "left"
    assert primary.extract("red circle blue square", {}) is None  # no final answer: unparsed


def test_all_leaves_the_variants_out_and_their_group_runs_them() -> None:
    index = TaskIndex([])
    _, skipped, _ = prepare_tasks(RunConfig(model="tiny_llava", tasks="all"), index, image_size=64)
    assert set(VARIANTS) <= set(skipped) and "variant" in skipped[VARIANTS[0]]
    tasks, skipped, groups = prepare_tasks(RunConfig(model="tiny_llava", tasks="vrp_shapes_reasoning"), index, 64)
    assert [t.name for t in tasks] == VARIANTS and not skipped and groups == {"vrp_shapes_reasoning": VARIANTS}


def test_a_tiny_model_reasons_and_agrees_over_the_extracted_answers(tmp_path) -> None:
    from vrp_bench.cli import main

    tasks = "vrp_shapes_color_reasoning,vrp_shapes_count_reasoning"
    code = main(["--model", "tiny_llava", "--model_args", "sc_samples=5", "--tasks", tasks, "--limit", "20",
                 "--batch_size", "10", "--permutations", "0", "--cv_repeats", "1", "--bootstrap_resamples", "100",
                 "--output_path", str(tmp_path), "--log_samples"])
    assert code == 0
    records = [json.loads(line) for path in sorted((tmp_path / "tiny_llava").glob("*_samples_*.jsonl"))
               for line in path.open()]
    assert len(records) == 40
    paths = parsed = 0
    for record in records:
        signals = record["signals"]
        found = FINAL_ANSWER.search(record["prediction"])  # the greedy answer is a reasoning path too
        assert record["filtered_resps"] == (found.group(1) if found else "[invalid]")
        expected = [m.group(1) if (m := FINAL_ANSWER.search(path)) else None for path in signals["sc_answers"]]
        assert len(expected) == 5 and signals["sc_extracted"] == expected
        assert signals["sc_unparsed"] == expected.count(None)
        answers = [answer for answer in expected if answer is not None]
        if answers:
            assert signals["sc_agreement"] == pytest.approx(Counter(answers).most_common(1)[0][1] / len(answers))
        paths += len(expected)
        parsed += len(answers)
        assert len(signals["sc_answers"][0].split()) > 3  # a path names what it sees before answering
    assert parsed >= 0.8 * paths  # the zoo learned the format
    assert sum(FINAL_ANSWER.search(r["prediction"]) is not None for r in records) >= 0.8 * len(records)


def test_a_filter_list_task_runs_unchanged_under_lmms_eval_and_scores_the_same(tmp_path) -> None:
    """The reasoning variant is an lmms-eval task YAML with a filter_list: lmms-eval's own evaluator extracts the
    same final answers and reports the same per-filter metric (``exact_match,answer``) as VRP-Bench."""
    pytest.importorskip("lmms_eval")
    import vrp_bench
    from test_lmms_eval_plugin import lmms_results, run_lmms_eval
    from vrp_bench.api.task_index import builtin_tasks_dir
    from vrp_bench.scoring.settings import ScoringSettings

    task, output, limit = "vrp_shapes_count_reasoning", tmp_path / "lmms_out", 12
    log = run_lmms_eval("--model", "vrp_tiny_llava", "--model_args", "sc_samples=0", "--tasks", task,
                        "--include_path", builtin_tasks_dir(), "--output_path", output, "--log_samples",
                        "--limit", limit, "--seed", 0, cwd=tmp_path)
    lmms, lmms_samples = lmms_results(output, task, log)
    vrp = vrp_bench.evaluate("tiny_llava", task, model_args={"sc_samples": 0}, limit=limit, seed=0,
                             scoring=ScoringSettings(n_resamples=100, permutations=0, repeats=1))
    vrp_samples = {s["doc_id"]: s for s in vrp.samples[task]}

    def answer(value: object) -> str:  # lmms-eval keeps the filtered value as written, possibly in a list
        return str(value[0] if isinstance(value, list) else value).strip()

    assert {d: answer(s["filtered_resps"]) for d, s in lmms_samples.items()} == {
        d: answer(s["filtered_resps"]) for d, s in vrp_samples.items()}
    assert lmms["exact_match,answer"] == pytest.approx(vrp.report["results"][task]["exact_match,answer"])
    assert all(s["filtered_resps"] != "[invalid]" for s in vrp_samples.values())

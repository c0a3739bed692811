"""Self-consistency over extracted final answers (#17): the task's primary filter pipeline extracts each sampled
path's answer, unparsed paths are counted and left out, and answers are compared after the task's normalisation
(number words, articles, yes / no synonyms), on fixed strings with hand-computed values."""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from vrp_bench.api.errors import UsageError
from vrp_bench.api.filters import build_pipelines
from vrp_bench.api.metrics import STUDY_NORMALIZATION, AnswerNormalization, normalize_answer, normalized_exact_match
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.signals.compute import compute_signals
from vrp_bench.signals.inputs import SignalInputs

ANSWER_REGEX = [{"name": "answer", "filter": [{"function": "regex", "regex_pattern": r"[Aa]nswer:\s*([\w ]+)"},
                                                  {"function": "take_first"}]}]
PATHS = [
    "I see three circles. Answer: three",
    "There are 3 circles. Answer: 3",
    "Counting them: one, two. Answer: two",
    "I am not sure what is there.",  # no "Answer:": unparsed
    "Two red circles and a blue one. answer: the 3",
]


@pytest.mark.parametrize("text, expected", [
    ("Yes, there is.", "yes"), ("yeah", "yes"), ("No.", "no"), ("Nope, none", "no"), ("Three", "3"),
    ("the red circle", "red circle"), ("An Apple", "apple"), ("twenty one", "20 1"), ("right", "right"),
    ("  Blue   SQUARE! ", "blue square"), ("none", "none"),
])
def test_normalisation_rules_on_fixed_strings(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_each_rule_can_be_turned_off_and_the_study_rule_is_all_off() -> None:
    assert normalize_answer("Yes, there is", AnswerNormalization(yes_no=False)) == "yes there is"
    assert normalize_answer("the three", AnswerNormalization(articles=False)) == "the 3"
    assert normalize_answer("the three", AnswerNormalization(numbers=False)) == "three"
    assert normalize_answer("Yes, the three!", STUDY_NORMALIZATION) == "yes the three"
    assert normalized_exact_match("Three.", "3") == 1.0 and normalized_exact_match("Three.", "3", STUDY_NORMALIZATION) == 0.0
    assert AnswerNormalization.from_metadata({"numbers": False}, "t.yaml") == AnswerNormalization(numbers=False)
    for bad in ({"digits": True}, {"numbers": "yes"}, ["numbers"]):
        with pytest.raises(UsageError, match="t.yaml: metadata.answer_normalization must map"):
            AnswerNormalization.from_metadata(bad, "t.yaml")


def test_a_pipeline_extracts_answers_and_says_when_it_finds_none() -> None:
    pipeline = build_pipelines(ANSWER_REGEX, "test")[0]
    assert [pipeline.extract(path, {}) for path in PATHS] == ["three", "3", "two", None, "the 3"]
    custom = build_pipelines([{"name": "x", "filter": [{"function": "regex", "regex_pattern": "(\\d)",
                                                         "fallback": "N/A"}, {"function": "take_first"}]}], "test")[0]
    assert custom.fallbacks == {"N/A"} and custom.extract("no digit", {}) is None and custom.extract("7", {}) == "7"
    plain = build_pipelines(None, "test")[0]  # no filter_list: take_first, every non-empty response is its answer
    assert plain.extract("Blue", {}) == "Blue" and plain.extract("  ", {}) is None
    voted = build_pipelines([{"name": "v", "filter": [{"function": "majority_vote"}, {"function": "take_first"}]}],
                            "test")[0]
    assert voted.apply(["b", "a", "b"], {}) == "b"


def test_self_consistency_over_extracted_answers_leaves_unparsed_paths_out() -> None:
    pipeline = build_pipelines(ANSWER_REGEX, "test")[0]
    inputs = SignalInputs.of(sc_answers=PATHS, target="3")
    inputs.extract_answer = lambda text: pipeline.extract(text, {})
    signals = compute_signals(inputs).values
    assert signals["sc_answers"] == PATHS
    assert signals["sc_extracted"] == ["three", "3", "two", None, "the 3"] and signals["sc_unparsed"] == 1
    # recomputed by hand: parsed answers normalised -> 3, 3, 2, 3 (K - U = 4)
    counts = Counter(["3", "3", "2", "3"])
    assert signals["sc_agreement"] == pytest.approx(3 / 4)
    assert signals["sc_entropy"] == pytest.approx(-sum(c / 4 * math.log(c / 4) for c in counts.values()))
    assert signals["sc_majority"] == "3" and signals["sc_majority_correct"] is True


def test_no_parsed_path_makes_the_agreement_null_with_its_reason() -> None:
    pipeline = build_pipelines(ANSWER_REGEX, "test")[0]
    inputs = SignalInputs.of(sc_answers=["hmm", "no idea"], target="3")
    inputs.extract_answer = lambda text: pipeline.extract(text, {})
    computed = compute_signals(inputs)
    assert computed.values["sc_unparsed"] == 2 and computed.values["sc_agreement"] is None
    assert "none parsed" in computed.errors["sc_agreement"]


def test_a_task_declares_its_normalisation_and_a_bad_one_is_a_one_line_error(tmp_path) -> None:
    base = "output_type: generate_until\ndataset_path: json\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
    (tmp_path / "plain.yaml").write_text("task: plain\n" + base)
    (tmp_path / "literal.yaml").write_text("task: literal\n" + base + textwrap.dedent("""\
        metadata:
          answer_normalization: {yes_no: false, numbers: false}
        """))
    (tmp_path / "bad.yaml").write_text("task: bad\n" + base + "metadata:\n  answer_normalization: {digits: true}\n")
    index = TaskIndex([tmp_path])
    assert index.build("plain").answer_normalization == AnswerNormalization()
    assert index.build("literal").answer_normalization == AnswerNormalization(yes_no=False, numbers=False)
    with pytest.raises(UsageError, match=r"bad.yaml: task 'bad': metadata.answer_normalization must map"):
        index.build("bad")


def test_a_tiny_model_run_agrees_over_the_answers_its_task_extracts(tmp_path) -> None:
    """End to end: the task's regex accepts only three colours, so the tiny model's other sampled answers are
    unparsed; each record's agreement is recomputed from its extracted answers only."""
    import json

    from vrp_bench.cli import main

    shipped = Path(__file__).resolve().parents[1] / "tasks" / "vrp_shapes"
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "three_colours.yaml").write_text(textwrap.dedent(f"""\
        include: {shipped / "vrp_shapes_color.yaml"}
        task: three_colours
        dataset_kwargs:
          data_files:
            test: {shipped / "data" / "64px" / "color-test.parquet"}
        filter_list:
          - name: three
            filter:
              - function: regex
                regex_pattern: "^(red|green|blue)$"
              - function: take_first
        """))
    code = main(["--model", "tiny_llava", "--model_args", "sc_samples=5", "--tasks", "three_colours", "--include_path",
                 str(tmp_path / "tasks"), "--limit", "24", "--batch_size", "8", "--permutations", "0", "--cv_repeats",
                 "1", "--bootstrap_resamples", "100", "--output_path", str(tmp_path / "out"), "--log_samples"])
    assert code == 0
    records = [json.loads(line) for line in next((tmp_path / "out" / "tiny_llava").glob("*_samples_*.jsonl")).open()]
    unparsed_seen = 0
    for record in records:
        signals = record["signals"]
        expected = [answer if answer in ("red", "green", "blue") else None for answer in signals["sc_answers"]]
        assert len(signals["sc_answers"]) == 5 and signals["sc_extracted"] == expected
        assert signals["sc_unparsed"] == expected.count(None)
        parsed = [answer for answer in expected if answer is not None]
        if parsed:
            assert signals["sc_agreement"] == pytest.approx(Counter(parsed).most_common(1)[0][1] / len(parsed))
        else:
            assert signals["sc_agreement"] is None and "none parsed" in record["signal_errors"]["sc_agreement"]
        unparsed_seen += signals["sc_unparsed"]
    assert unparsed_seen > 0  # the three other colours are answered too

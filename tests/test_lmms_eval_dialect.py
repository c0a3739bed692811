"""lmms-eval's task dialect beyond zero-shot generation: answer filters, built-in metrics, lmms_eval_specific_kwargs,
few-shot prompts and tasks scored by the log-likelihood of their options, each against an independent reference
(lmms-eval's own functions where installed, a full forward pass for log-likelihoods, hand-computed values)."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
import torch

from vrp_bench.api.errors import UsageError
from vrp_bench.api.filters import FILTERS, build_pipelines
from vrp_bench.api.instance import GenerationSettings, Request
from vrp_bench.api.metrics import METRICS
from vrp_bench.api.task_index import TaskIndex


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def random_answers(seed: int, n: int = 60) -> list[str]:
    rng = random.Random(seed)
    pieces = ["The answer is (B)", "#### 42", "#### -3.5,7", " yes", "No.", "A", "(C) metal", "I think: B", "red",
              "<think>hmm</think> 7", "so </think>B", "", "  Two apples", "The answer is 12 and 13"]
    return [rng.choice(pieces) + rng.choice(["", " ", ".", string.punctuation[rng.randrange(32)]]) for _ in range(n)]


FILTER_CASES = [
    ("take_first", {}),
    ("take_first_k", {"k": 1}),
    ("majority_vote", {}),
    ("regex", {}),
    ("regex", {"regex_pattern": r"(\d+)|([A-D])", "group_select": -1, "fallback": "none"}),
    ("remove_whitespace", {}),
    ("lowercase", {}),
    ("uppercase", {}),
    ("map", {"mapping_dict": {"A": "1", "red": "2"}, "default_value": "0"}),
    ("multi_choice_regex", {"regex_pattern": r"(\([A-D]\))", "ignore_case": True, "ignore_punctuation": True}),
    ("strip_thinking", {}),
]


@pytest.mark.parametrize("name,kwargs", FILTER_CASES)
def test_each_filter_matches_lmms_evals_own(name: str, kwargs: dict) -> None:
    lmms_filters = pytest.importorskip("lmms_eval.filters")
    answers = random_answers(len(name))
    resps = [answers[i:i + 3] for i in range(0, len(answers), 3)]
    docs = [{"choices": ["metal", "wood", "glass", "stone"]} for _ in resps]
    theirs = list(lmms_filters.FILTER_REGISTRY[name](**kwargs).apply(resps, docs))
    ours = FILTERS.get(name)(**kwargs)(resps, docs)
    assert [list(x) if not isinstance(x, str) else x for x in ours] == \
           [list(x) if not isinstance(x, str) else x for x in theirs]


def test_a_pipeline_runs_its_steps_in_order_and_a_custom_filter_class_is_built_from_its_keys(tmp_path: Path) -> None:
    write(tmp_path / "my_filters.py", "class Suffix:\n    def __init__(self, suffix):\n        self.suffix = suffix\n"
          "    def apply(self, resps, docs):\n        return [[r + self.suffix for r in rs] for rs in resps]\n")
    from vrp_bench.api.yaml_dialect import FunctionRef

    raw = [{"name": "strict", "filter": [{"function": "regex", "regex_pattern": r"(\d+)"}, {"function": "take_first"}]},
           {"name": "custom", "filter": [{"function": FunctionRef("my_filters.Suffix", tmp_path), "suffix": "!"},
                                         {"function": "lowercase"}, {"function": "take_first"}]}]
    strict, custom = build_pipelines(raw, "test")
    assert strict.apply(["It is 12, not 13"], {}) == "12" and strict.apply(["none"], {}) == "[invalid]"
    assert custom.apply(["Red"], {}) == "red!"


def test_metrics_match_lmms_evals_own() -> None:
    metrics = pytest.importorskip("lmms_eval.api.metrics")
    answers = random_answers(7)
    targets = random_answers(8)
    for prediction, target in zip(answers, targets):
        for kwargs in ({}, {"ignore_case": True, "ignore_punctuation": True}, {"regexes_to_ignore": [r"\s"]}):
            theirs = metrics.exact_match_hf_evaluate(predictions=[prediction], references=[target], **kwargs)
            assert METRICS.get("exact_match")(prediction, target, **kwargs) == theirs["exact_match"]
        references = [target, prediction[::-1] or "x"]
        assert METRICS.get("anls")(prediction.strip(), references) == pytest.approx(
            metrics.anls(references, [prediction.strip()])["anls"])


def test_lmms_eval_specific_kwargs_a_models_entry_replaces_default(tmp_path: Path) -> None:
    base = "dataset_path: json\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
    write(tmp_path / "t.yaml", "task: t\n" + base + "lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: 'Q: '\n"
          "    post_prompt: ' A:'\n  qwen2_vl:\n    post_prompt: ' Answer:'\n")
    task = TaskIndex([tmp_path]).build("t")
    assert task.prompt_kwargs(("tiny_qwen2_vl", "qwen2_vl")) == {"post_prompt": " Answer:"}
    resolved = task.prompt_kwargs(("llava",))  # lmms-eval: the table with default's keys merged in
    assert resolved["pre_prompt"] == "Q: " and resolved["post_prompt"] == " A:" and "qwen2_vl" in resolved


def test_unknown_keys_and_generation_keys_are_named_with_their_file(tmp_path: Path, caplog) -> None:
    import logging

    write(tmp_path / "t.yaml", "task: t\ndataset_path: json\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
          "doc_to_chioce: [a, b]\ngeneration_kwargs:\n  max_new_tokens: 4\n  image_aspect_ratio: original\n")
    with caplog.at_level(logging.INFO, logger="vrp_bench"):
        config = TaskIndex([tmp_path]).build("t").config
    assert "unknown key 'doc_to_chioce'" in caplog.text and "t.yaml" in caplog.text and "doc_to_choice" in caplog.text
    assert "'image_aspect_ratio'" in caplog.text
    assert config.ignored_keys == ["doc_to_chioce"] and config.ignored_generation_keys == ["image_aspect_ratio"]
    assert config.generation_settings({}).max_new_tokens == 4


def test_dataset_kwargs_that_lmms_eval_acts_on_are_not_passed_to_load_dataset(tmp_path: Path) -> None:
    write(tmp_path / "data.json", json.dumps([{"q": "what?", "a": "x"}]))
    write(tmp_path / "t.yaml", "task: t\ndataset_path: json\ntest_split: train\ndoc_to_text: q\ndoc_to_target: a\n"
          "dataset_kwargs:\n  data_files: data.json\n  video: true\n  cache_dir: videos\n  force_download: false\n")
    task = TaskIndex([tmp_path]).build("t")
    task.load()
    assert len(task) == 1


def test_few_shot_prompts_hold_solved_examples_never_the_doc_itself_and_follow_the_seed(tmp_path: Path) -> None:
    rows = [{"q": f"q{i}", "a": f"a{i}"} for i in range(6)]
    write(tmp_path / "data.json", json.dumps(rows))
    write(tmp_path / "t.yaml", "task: t\ndataset_path: json\ntest_split: train\ndoc_to_text: '{{q}}?'\n"
          "doc_to_target: a\ndataset_kwargs:\n  data_files: data.json\nnum_fewshot: 2\ndescription: 'Answer. '\n"
          "fewshot_delimiter: ' | '\n")
    task = TaskIndex([tmp_path]).build("t")
    task.load()
    prompt = task.render(3, None, {}, run_seed=0)[1].prompt
    assert prompt.startswith("Answer. ") and prompt.endswith(" | q3?")
    examples = prompt.removeprefix("Answer. ").split(" | ")[:2]
    assert len(examples) == 2 and all(e.split("? ")[0] != "q3" for e in examples)
    assert all(e == f"{q}? a{q[1:]}" for e in examples for q in [e.split("?")[0]])
    assert task.render(3, None, {}, run_seed=0)[1].prompt == prompt
    assert {task.render(3, None, {}, run_seed=s)[1].prompt for s in range(8)} != {prompt}


def test_chat_message_tasks_get_their_few_shot_examples_too(tmp_path: Path) -> None:
    rows = [{"q": f"q{i}", "a": f"a{i}"} for i in range(4)]
    write(tmp_path / "data.json", json.dumps(rows))
    write(tmp_path / "utils.py", "def messages(doc, kwargs=None):\n"
          "    return [{'role': 'user', 'content': [{'type': 'text', 'text': doc['q'] + '?'}]}]\n")
    body = ("dataset_path: json\ntest_split: train\ndoc_to_messages: !function utils.messages\ndoc_to_target: a\n"
            "dataset_kwargs:\n  data_files: data.json\nnum_fewshot: 1\nfewshot_config:\n  sampler: first_n\n")
    write(tmp_path / "no_text.yaml", "task: no_text\n" + body)
    with pytest.raises(UsageError, match="num_fewshot needs doc_to_text"):
        TaskIndex([tmp_path]).build("no_text")
    write(tmp_path / "t.yaml", "task: t\n" + body + "doc_to_text: '{{q}}?'\n")
    task = TaskIndex([tmp_path]).build("t")
    task.load()
    request = task.render(2, None, {}, run_seed=0)[1]
    texts = [part["text"] for part in request.messages[0]["content"]]
    assert texts == ["q0? a0\n\n", "q2?"] and request.prompt == "q0? a0\n\nq2?"


MC_ROWS = [
    {"question": "What color is the shape?", "options": ["red", "blue", "green"], "label": k % 3, "color": c}
    for k, c in enumerate(["red", "blue", "green", "red", "blue", "green"])
]


def multiple_choice_task(tmp_path: Path) -> Path:
    from PIL import Image

    rows = []
    for k, row in enumerate(MC_ROWS):
        path = tmp_path / f"img{k}.png"
        Image.new("RGB", (56, 56), row["color"]).save(path)
        rows.append({**row, "image": str(path)})
    write(tmp_path / "mc" / "data.json", json.dumps(rows))
    write(tmp_path / "mc" / "utils.py", "from PIL import Image\n\ndef doc_to_visual(doc):\n"
          "    return [Image.open(doc['image']).convert('RGB')]\n")
    write(tmp_path / "mc" / "mc.yaml", "task: mc_colors\ndataset_path: json\ndataset_kwargs:\n  data_files: data.json\n"
          "test_split: train\noutput_type: multiple_choice\ndoc_to_visual: !function utils.doc_to_visual\n"
          "doc_to_text: question\ndoc_to_choice: options\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
          "  - metric: acc_norm\n")
    return tmp_path / "mc"


def test_options_log_likelihood_equals_a_full_forward_pass_in_every_family() -> None:
    from PIL import Image

    from vrp_bench.api.model import MODELS
    from vrp_bench.builtins import register_builtins

    register_builtins()
    request = Request("t", 0, [Image.new("RGB", (56, 56), "red")], "What color is the shape?",
                      GenerationSettings(max_new_tokens=4), seed=0)
    for name in ("tiny_llava", "tiny_qwen2_vl", "tiny_paligemma"):
        model = MODELS.get(name).from_args({})
        greedy = model.generate([request])[0].text
        options = [greedy or " red", " blue", "green square"]  # an empty answer is no option to score
        scores = model.loglikelihood([request] * len(options), options)
        inputs = model.encode([request])
        for option, score in zip(options, scores):
            ids = model.processor.tokenizer(option, add_special_tokens=False, return_tensors="pt")["input_ids"]
            full = dict(inputs)
            full["input_ids"] = torch.cat([inputs["input_ids"], ids], 1)
            full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(ids)], 1)
            for key, fill in (("token_type_ids", 1), ("mm_token_type_ids", 0)):  # the option is generated text
                if key in full:
                    full[key] = torch.cat([inputs[key], torch.full_like(ids, fill)], 1)
            with torch.no_grad():
                logits = model.model(**full).logits[0, inputs["input_ids"].shape[1] - 1:-1].float()
            reference = logits.log_softmax(-1).gather(-1, ids[0][:, None]).sum().item()
            assert score.logprob == pytest.approx(reference, abs=1e-4), (name, option)
            assert score.n_tokens == ids.shape[1]
            assert score.is_greedy == bool((logits.argmax(-1) == ids[0]).all())
        assert scores[0].is_greedy or not greedy  # the model's own greedy answer (when it wrote one)


def test_a_multiple_choice_task_scores_acc_and_acc_norm_from_the_options_log_likelihoods(tmp_path: Path, cli) -> None:
    folder = multiple_choice_task(tmp_path)
    code, out, err = cli("run", "--model", "tiny_qwen2_vl", "--tasks", "mc_colors", "--include_path", folder,
                         "--output_path", tmp_path / "out", "--log_samples")
    assert code == 0, err
    report = json.loads(next((tmp_path / "out").rglob("*_results.json")).read_text())
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("*samples_mc_colors.jsonl")).open()]

    from PIL import Image

    from vrp_bench.api.model import MODELS

    model = MODELS.get("tiny_qwen2_vl").from_args({})
    acc, acc_norm = [], []
    for k, row in enumerate(MC_ROWS):
        request = Request("mc_colors", k, [Image.new("RGB", (56, 56), row["color"])], row["question"],
                          GenerationSettings(), seed=0)
        options = [" " + o for o in row["options"]]
        logprobs = [s.logprob for s in model.loglikelihood([request] * 3, options)]
        best = max(range(3), key=lambda i: logprobs[i])
        best_norm = max(range(3), key=lambda i: logprobs[i] / len(row["options"][i]))
        acc.append(float(best == row["label"]))
        acc_norm.append(float(best_norm == row["label"]))
        assert samples[k]["prediction"] == row["options"][best] and samples[k]["correct"] == (best == row["label"])
    assert report["results"]["mc_colors"]["acc,none"] == pytest.approx(sum(acc) / len(acc))
    assert report["results"]["mc_colors"]["acc_norm,none"] == pytest.approx(sum(acc_norm) / len(acc_norm))

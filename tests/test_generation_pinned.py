"""A checkpoint's generation_config never changes what VRP-Bench decodes.

Each parameter that transformers would otherwise take from a checkpoint's ``generation_config.json`` (and that
a ``generate`` call cannot always reset) is planted in a copy of the tiny LLaVA checkpoint: its greedy answers,
token statistics and self-consistency samples must equal the clean checkpoint's, and the report must name what was
left out. With the planted config put back as the model's own, the answers do change (the test can fail).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vrp_bench.api.model import MODELS
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.builtins import register_builtins
from vrp_bench.zoo import CHECKPOINTS

DOCS = 6
SC = {"sc_samples": 4}


def answer_tokens(model: Any, texts: list[str]) -> list[int]:
    """The first token id of each answer text."""
    return sorted({model.processor.tokenizer(text, add_special_tokens=False)["input_ids"][0] for text in texts if text})


def planted_parameters(tokens: list[int]) -> dict[str, dict[str, Any]]:
    """Name -> the generation_config entries planted (each strong enough to change greedy or sampled answers)."""
    return {
        "min_p": {"min_p": 0.5},
        "typical_p": {"typical_p": 0.2},
        "epsilon_cutoff": {"epsilon_cutoff": 0.3},
        "eta_cutoff": {"eta_cutoff": 0.3},
        "top_k": {"top_k": 1},
        "top_p": {"top_p": 0.05},
        "temperature": {"temperature": 0.05, "do_sample": True},
        "no_repeat_ngram_size": {"no_repeat_ngram_size": 1},
        "suppress_tokens": {"suppress_tokens": tokens},
        "begin_suppress_tokens": {"begin_suppress_tokens": tokens},
        "repetition_penalty": {"repetition_penalty": 5.0},
        "min_new_tokens": {"min_new_tokens": 4},
        "bad_words_ids": {"bad_words_ids": [[token] for token in tokens]},
        "forced_bos_token_id": {"forced_bos_token_id": tokens[0]},
        "sequence_bias": {"sequence_bias": [[[token], -20.0] for token in tokens]},
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The clean tiny LLaVA, the docs' requests and its responses."""
    register_builtins()
    model = MODELS.get("tiny_llava").from_args(SC)
    task = TaskIndex().build("vrp_shapes_color")
    task.load()
    requests = [task.render(doc_id, task.prompt_kwargs(model.prompt_keys), {}, 0)[1] for doc_id in range(DOCS)]
    return model, requests, model.generate(requests)


def outputs(responses: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.text, tuple(r.traces.sc_answers), np.round(r.traces.token_logprobs, 6).tolist()) for r in responses]


def planted_copy(folder: Path, entries: dict[str, Any]) -> Path:
    shutil.copytree(CHECKPOINTS / "llava", folder)
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(entries)
    config_path.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name", ["min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_k", "top_p",
                                  "temperature", "no_repeat_ngram_size", "suppress_tokens", "begin_suppress_tokens",
                                  "repetition_penalty", "min_new_tokens", "bad_words_ids", "forced_bos_token_id",
                                  "sequence_bias", "all"])
def test_a_planted_generation_config_changes_nothing(name, clean, tmp_path):
    model, requests, reference = clean
    parameters = planted_parameters(answer_tokens(model, [r.text for r in reference]))
    if name == "all":  # forcing a token that is also suppressed is refused by transformers when loading
        entries = {k: v for n, p in parameters.items() if n != "forced_bos_token_id" for k, v in p.items()}
    else:
        entries = parameters[name]
    planted = MODELS.get("tiny_llava").from_args({**SC, "pretrained": str(planted_copy(tmp_path / "ckpt", entries))})
    assert outputs(planted.generate(requests)) == outputs(reference)
    recorded = planted.describe()["generation_config"]
    assert set(recorded["checkpoint_not_used"]) == set(entries)  # the report names what was left out
    assert recorded["base"] == model.describe()["generation_config"]["base"]  # decoding starts from the same place


def test_the_planted_config_would_change_answers_if_it_were_used(clean, tmp_path):
    model, requests, reference = clean
    tokens = answer_tokens(model, [r.text for r in reference])
    planted = MODELS.get("tiny_llava").from_args(
        {**SC, "pretrained": str(planted_copy(tmp_path / "ckpt", {"suppress_tokens": tokens}))})
    from transformers import GenerationConfig

    planted.model.generation_config = GenerationConfig.from_pretrained(tmp_path / "ckpt")  # as transformers would
    assert [r.text for r in planted.generate(requests)] != [r.text for r in reference]

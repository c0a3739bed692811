"""An answer's token statistics, attention and hidden state cover exactly the tokens of its returned text.

The task's ``until`` strings cut the text; ``answers.answer_token_count`` maps the cut back to a token boundary.
Checked on a byte-level BPE tokenizer (the kind real checkpoints use: stop strings inside tokens, whitespace
tokens) and end to end on a tiny model made to write past its stop string, against a teacher-forced
recomputation over exactly the returned text.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vrp_bench.api.model import MODELS
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.builtins import register_builtins
from vrp_bench.models.answers import answer_text, answer_token_count
from vrp_bench.models.instrumented import instrumented_generate

CORPUS = ["The cat sat on the mat.\nThe dog ran.", "yes\n\nno", "A red circle is left of a blue square.",
          "Answer: three\nQuestion: how many?", "cat.\nThe", "two words then more words"] * 20


@pytest.fixture(scope="module")
def bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 / Qwen style) trained on a tiny corpus, with an end-of-text token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("answer, rest, until", [
    ("The cat sat", "\nThe dog ran.", ["\n"]),    # the model goes on past a newline
    ("three", "\nQuestion: how many?", ["\n", "Question:"]),
    ("two", " words then more words", [" "]),     # until=[" "]: one word scored, not the sentence
    ("yes", "\n\nno", ["\n\n"]),
    ("A red circle", " is left of", [" is"]),
])
def test_the_answer_ends_at_the_token_where_its_text_ends(bpe, answer, rest, until):
    answer_ids, rest_ids = ids(bpe, answer), ids(bpe, rest)
    tokens = answer_ids + rest_ids + [bpe.eos_token_id] + ids(bpe, "ignored after the end")
    assert answer_text(bpe, tokens[: tokens.index(bpe.eos_token_id)], until) == answer
    assert answer_token_count(bpe, tokens, {bpe.eos_token_id}, until) == len(answer_ids)


def test_a_token_that_straddles_the_stop_string_is_counted(bpe):
    """The stop string "at s" begins inside the token " cat": " cat" wrote part of the answer "The c"."""
    tokens = ids(bpe, "The cat sat on the mat.")
    assert [bpe.decode([token]) for token in tokens[:2]] == ["The", " cat"]
    assert answer_text(bpe, tokens, ["at s"]) == "The c"
    assert answer_token_count(bpe, tokens, {bpe.eos_token_id}, ["at s"]) == 2


def test_trailing_whitespace_and_empty_answers(bpe):
    assert answer_token_count(bpe, ids(bpe, "yes") + ids(bpe, "\n\n"), set(), ()) == len(ids(bpe, "yes"))
    assert answer_token_count(bpe, ids(bpe, "\nThe cat"), set(), ["\n"]) == 0
    assert answer_token_count(bpe, [bpe.eos_token_id] + ids(bpe, "yes"), {bpe.eos_token_id}, ()) == 0
    assert answer_token_count(bpe, ids(bpe, "The cat sat"), set(), ()) == len(ids(bpe, "The cat sat"))


@pytest.fixture(scope="module")
def tiny_llava():
    register_builtins()
    model = MODELS.get("tiny_llava").from_args({})
    task = TaskIndex().build("vrp_shapes_color")
    task.load()
    requests = [task.render(doc_id, task.prompt_kwargs(model.prompt_keys), {}, 0)[1] for doc_id in range(4)]
    return model, requests


def teacher_forced(model, inputs, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of ``tokens`` [1, n] after the prompt, and the entropies of their distributions."""
    forced = {**inputs, "input_ids": torch.cat([inputs["input_ids"], tokens], dim=1),
              "attention_mask": torch.cat([inputs["attention_mask"], torch.ones_like(tokens)], dim=1)}
    prompt_length = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        logits = model.model(**forced).logits[0, prompt_length - 1: prompt_length - 1 + tokens.shape[1]].float()
    log_probs = logits.log_softmax(-1)
    return log_probs.gather(-1, tokens[0, :, None]).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)


def test_token_statistics_equal_a_teacher_forced_pass_over_exactly_the_returned_text(tiny_llava):
    """The end-of-sequence token is suppressed, so the model writes 5 words; the stop string " " keeps one word
    (the text of ``until=[" "]``), the stop string " <third word>" keeps two."""
    model, requests = tiny_llava
    tokenizer = model.processor.tokenizer
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": tokenizer.pad_token_id,
              "suppress_tokens": [tokenizer.eos_token_id]}
    checked = {1: 0, 2: 0}
    for request in requests:
        inputs = model.encode([request])
        written, (unstopped,) = instrumented_generate(model.model, model.adapter, model.processor, inputs, kwargs,
                                                      [None])
        words = tokenizer.decode(written[0]).split()
        assert written.shape[1] == len(words) == 5
        stops = {1: (" ",), 2: (f" {words[2]}",) if words[2] not in words[:2] else None}
        for kept, until in stops.items():
            if until is None:
                continue
            new_tokens, (trace,) = instrumented_generate(model.model, model.adapter, model.processor, inputs, kwargs,
                                                         [None], until)
            assert torch.equal(new_tokens, written)  # a stop string changes what is kept, not what is generated
            assert answer_text(tokenizer, written[0].tolist(), until) == " ".join(words[:kept])
            assert len(trace.token_logprobs) == len(trace.token_entropies) == len(trace.token_margins) == kept
            logprobs, entropies = teacher_forced(model, inputs, written[:, :kept])
            torch.testing.assert_close(torch.as_tensor(trace.token_logprobs).float(), logprobs, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(torch.as_tensor(trace.token_entropies).float(), entropies, atol=1e-4, rtol=1e-4)
            # the mean answer map is over the kept steps only: that of a generation of exactly ``kept`` steps
            _, (reference,) = instrumented_generate(model.model, model.adapter, model.processor, inputs,
                                                    {**kwargs, "max_new_tokens": kept}, [None])
            torch.testing.assert_close(trace.answer_attention_mean, reference.answer_attention_mean)
            np.testing.assert_array_equal(trace.hidden_first_answer, unstopped.hidden_first_answer)
            checked[kept] += 1
    assert checked[1] == len(requests) and checked[2] >= 1

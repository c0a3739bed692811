"""Build a tiny, randomly initialised model of a family from its recipe (``vrp_bench.zoo.recipes``):
config, word-level tokenizer, real processor.

The tokenizer is a ``tokenizers`` WordLevel model (lowercase, split on whitespace and punctuation)
over the vrp_shapes vocabulary plus the words of the prompts, wrapped as a ``TokenizersBackend``
(v5's ``PreTrainedTokenizerFast``) with the special tokens the family's processor expects.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin, TokenizersBackend

from vrp_bench.datasets.vrp_shapes import VOCABULARY
from vrp_bench.zoo.recipes import RECIPES, SpecialTokens

IMAGE_SIZE = 64
"""Side of the tiny zoo's images (the vrp_shapes group's), in px."""
PATCH_SIZE = 8
PROMPT_WORDS = [
    "user",
    "assistant",
    "system",
    "you",
    "are",
    "a",
    "helpful",
    ".",
    ":",
    "answer",
    "the",
    "question",
    "using",
    "single",
    "word",
    "or",
    "phrase",
    "first",  # the reasoning post-prompt (WIP #17)
    "say",
    "then",
    "as",
    "x",
    '"',
]


def build_tokenizer(special: SpecialTokens, words: Iterable[str]) -> TokenizersBackend:
    """A word-level tokenizer over ``words`` with ``special``'s tokens (ids first, in a fixed order)."""
    specials = [special.unk, special.pad, special.eos, special.bos, special.image, *special.extra]
    vocab = {token: i for i, token in enumerate(token for token in specials if token)}
    for word in sorted({w.lower() for w in words} - set(vocab)):
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=special.unk))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if special.prepend_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{special.bos} $A", pair=f"{special.bos} $A $B", special_tokens=[(special.bos, vocab[special.bos])]
        )
    return TokenizersBackend(
        tokenizer_object=core,
        bos_token=special.bos,
        eos_token=special.eos,
        unk_token=special.unk,
        pad_token=special.pad,
        image_token=special.image,
        extra_special_tokens=list(special.extra),
    )


def build_tiny(
    family: str, seed: int = 0, image_size: int | None = None, patch_size: int = PATCH_SIZE
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A randomly initialised (seeded) tiny model of ``family`` and its processor, which resizes images to
    ``image_size`` px (default: the zoo's, ``IMAGE_SIZE`` times the recipe's ``image_scale``) and cuts them into
    ``patch_size`` patches (the zoo's 8; benchmarks use the real models' sequence shapes)."""
    if family not in RECIPES:
        raise ValueError(f"no tiny recipe for family {family!r} (zoo/recipes.py); known: {', '.join(RECIPES)}")
    recipe = RECIPES[family]
    image_size = IMAGE_SIZE * recipe.image_scale if image_size is None else image_size
    tokenizer = build_tokenizer(recipe.special_tokens, [*VOCABULARY, *PROMPT_WORDS])
    processor = recipe.processor(tokenizer, image_size, patch_size)
    config = recipe.config(processor.tokenizer, image_size, patch_size)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    return model, processor

"""One instrumented greedy pass: the answers plus everything the reliability signals need.

``instrumented_generate`` runs ``model.generate`` once for a batch with removable captures active
(attention rows, last-position hidden states, the prompt pass's residual stream per decoder layer) and turns
what they and the per-step logits recorded into one ``Traces`` per sample: the decoder's attention from the
answer tokens to the image tokens on the patch grid (first answer token, and mean over answer tokens), the
vision encoder's attention on its own grid, per-token log-probability / entropy / top-2 margin, the logit-lens
truth margin per hidden state and its change per decoder layer split into attention and MLP contributions
(``logit_lens``), the residual-update norms at the image positions and the last prompt position, the hidden
states at the last prompt position and the first answer position, and the full next-token distribution of the
first answer step. All architecture knowledge comes from the family adapter.

Layers are numbered like Hugging Face's outputs: attention (per decoder layer) like ``output_attentions``,
l = 0..L-1; hidden states and the truth margin like ``output_hidden_states``, i = 0..L (0: the embedding
output; i: the output of decoder layer i - 1, the last after the final norm). So decoder layer l reads
hidden state l and writes hidden state l + 1.

The attention at generation step s is the attention of the query that emits answer token s: the
last prompt position for s = 0, answer token s - 1 afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature, ProcessorMixin

from vrp_bench.api.traces import Traces
from vrp_bench.capture import AttentionCapture, LastPositionCapture, ResidualStreamCapture, Site
from vrp_bench.models.answers import answer_token_count
from vrp_bench.models.families import FamilyAdapter
from vrp_bench.models.logit_lens import margin_attribution, target_token_ids, truth_margins


def attention_sites(model: nn.Module, adapter: FamilyAdapter) -> dict[nn.Module, Site]:
    """The decoder and vision attention modules to capture, with where they sit."""
    sites = {adapter.attention_module(layer): Site("decoder", i) for i, layer in enumerate(adapter.decoder_layers(model))}
    for j, block in enumerate(adapter.vision_blocks(model)):
        sites[adapter.vision_attention_module(block)] = Site("vision", j, cls_row=adapter.vision_has_cls)
    return sites


def attention_configs(model: nn.Module, sites: dict[nn.Module, Site]) -> list[Any]:
    """The configs whose attention implementation the captured modules read (top level and sub-configs)."""
    return [model.config, *(module.config for module in sites if hasattr(module, "config"))]


def token_statistics(step_logits: Sequence[torch.Tensor], chosen: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Per step: log p(chosen token), entropy of the next-token distribution (nats), top1 - top2 log-prob.

    ``step_logits``: one [batch, vocab] tensor per step; ``chosen``: [batch, steps] token ids.
    Returns three [batch, steps] arrays.
    """
    log_probs = torch.stack([torch.log_softmax(logits.float(), dim=-1) for logits in step_logits], dim=1)
    chosen_logprob = log_probs.gather(-1, chosen[:, : log_probs.shape[1], None]).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).nan_to_num(0.0).sum(-1)
    top2 = log_probs.topk(2, dim=-1).values
    return chosen_logprob.numpy(), entropy.numpy(), (top2[..., 0] - top2[..., 1]).numpy()


def instrumented_generate(
    model: nn.Module,
    adapter: FamilyAdapter,
    processor: ProcessorMixin,
    inputs: BatchFeature,
    generation_kwargs: dict[str, Any],
    targets: Sequence[str | Sequence[str] | None],
    until: Sequence[str] = (),
) -> tuple[torch.Tensor, list[Traces]]:
    """Generate once with captures on; returns (new token ids [batch, steps], one trace per sample).

    Each trace covers exactly the tokens of the answer text (``answers.answer_token_count``: up to the first
    end-of-sequence id and the first ``until`` string), not what generation went on to write."""
    sites = attention_sites(model, adapter)
    attention = AttentionCapture(sites, attention_configs(model, sites))
    hidden = LastPositionCapture(adapter.hidden_state_sites(model), keep_calls=2)
    decoder_layers = adapter.decoder_layers(model)
    stream = ResidualStreamCapture(decoder_layers, [adapter.residual_after_attention(layer) for layer in decoder_layers])
    with torch.inference_mode(), attention, hidden, stream:
        output = model.generate(**inputs, **generation_kwargs, return_dict_in_generate=True, output_logits=True)
    prompt_length = inputs["input_ids"].shape[1]
    new_tokens = output.sequences[:, prompt_length:].cpu()
    # generation stops at any of the checkpoint's end-of-sequence ids (Qwen lists two), not only the tokenizer's
    stop_ids = {int(t) for t in np.atleast_1d(model.generation_config.eos_token_id or [])}
    stop_ids |= {processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id} - {None}
    lengths = [answer_token_count(processor.tokenizer, row, stop_ids, until) for row in new_tokens.tolist()]
    step_logits = [logits.cpu() for logits in output.logits]
    logprobs, entropies, margins = token_statistics(step_logits, new_tokens)
    first_step = torch.log_softmax(step_logits[0].float(), dim=-1).numpy()
    last_prompt, first_answer = hidden.stacked(0), hidden.stacked(1)
    update_norms = stream.stacked_update_norms()  # [batch, decoder layers, prompt positions]
    block_streams = stream.stacked_last()  # (h_l, h_l + a_l, h_l+1) at the last prompt position
    spans = adapter.image_token_span(inputs["input_ids"].cpu())
    n_decoder = len(adapter.decoder_layers(model))
    n_vision = len(adapter.vision_blocks(model))
    vision_sequences = [torch.cat(attention.records[Site("vision", j, adapter.vision_has_cls)], dim=-1).cpu()
                        for j in range(n_vision)] if n_vision and attention.records else []
    traces = []
    for b, length in enumerate(lengths):
        steps = max(length, 1)  # an immediate end-of-sequence still had one step of attention
        arrays: dict[str, Any] = {
            "token_logprobs": logprobs[b, :length],
            "token_entropies": entropies[b, :length],
            "token_margins": margins[b, :length],
            "first_token_logprobs": first_step[b],
            "hidden_last_prompt": last_prompt[b].half().numpy() if last_prompt is not None else None,
            "hidden_first_answer": (first_answer[b].half().numpy() if first_answer is not None and length > 0 else None),
            "residual_update_last": update_norms[b, :, -1].numpy() if update_norms is not None else None,
        }
        if len(spans[b]):
            rows, cols = adapter.patch_grid(inputs, b, 0)
            positions = spans[b][: rows * cols]
            per_layer = [torch.stack([attention.records[Site("decoder", layer)][s][b, positions] for s in range(steps)])
                         for layer in range(n_decoder)]
            arrays["answer_attention_first"] = torch.stack([p[0] for p in per_layer]).reshape(n_decoder, rows, cols).numpy()
            arrays["answer_attention_mean"] = torch.stack([p.mean(0) for p in per_layer]).reshape(n_decoder, rows, cols).numpy()
            if update_norms is not None:
                arrays["residual_update_image"] = update_norms[b][:, spans[b]].mean(-1).numpy()
            if vision_sequences:
                grid = adapter.vision_grid(inputs, b, 0)
                arrays["vision_attention"] = torch.stack(
                    [seq[grid.sequence, grid.positions] for seq in vision_sequences]
                ).reshape(n_vision, grid.rows, grid.cols).numpy()
        target_ids = target_token_ids(processor.tokenizer, targets[b])
        if target_ids and last_prompt is not None:
            arrays["truth_margin_layers"] = truth_margins(last_prompt[b], adapter, model, target_ids)
        if target_ids and block_streams is not None:
            attribution = margin_attribution(*(x[b] for x in block_streams), adapter, model, target_ids)
            for block, values in (attribution or {}).items():
                arrays[f"margin_{block}"] = values
        traces.append(Traces(**arrays))
    return new_tokens, traces

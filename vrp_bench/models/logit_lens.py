"""The logit lens at the last prompt position: the truth margin per hidden state, and its change per decoder layer
split into the attention block's and the MLP block's contributions.

Lens logits of a residual-stream vector h: z(h) = W N(h) + b, with N the final norm and (W, b) the unembedding.
Truth margin: M(h) = max_{t in targets} z_t(h) - max_{j not in targets} z_j(h) (the reference answer's first token
against its best rival).

Component attribution (the study's "how much of the margin growth comes from the MLP"), decoder layer l, which
reads h_l and writes h_{l+1} = h_l + a_l + m_l (a: the attention block's write, m: the MLP block's): each block's
write is projected through the final norm and the unembedding with the norm's scale frozen at the layer's output
and the tokens of the layer's output (direct logit attribution). For an RMS norm N(x) = g * x / r(x),
r(x) = sqrt(mean(x^2) + eps), and d = W_t - W_c (t, c: the target and rival tokens at h_{l+1}):

    attention_l = d . (g * a_l) / r(h_{l+1}),      mlp_l = d . (g * m_l) / r(h_{l+1})

This is an approximation of the lens margin's change M(h_{l+1}) - M(h_l): it leaves out what the norm's rescaling
and a change of target or rival token contribute. That remainder is computed separately, not as a difference:

    unattributed_l = q_l (r(h_l) / r(h_{l+1}) - 1) + (q_l + d . b - M(h_l)),    q_l = d . W N(h_l)

(the first term: h_l seen at h_{l+1}'s scale; the second: the layer-l margin with layer l+1's tokens minus its own),
so attention_l + mlp_l + unattributed_l = M(h_{l+1}) - M(h_l) exactly (tests/test_logit_lens.py, within 1e-4).
The final norm must be an RMS norm (Llama, Qwen2, Gemma: every registered family); for another the attribution is
not computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vrp_bench.models.families import FamilyAdapter


def _best_target_and_rival(logits: torch.Tensor, target_ids: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Per row of ``logits`` [n, vocab]: (margin, target token id, rival token id)."""
    targets = torch.tensor(sorted(set(target_ids)), device=logits.device)
    target_best, target_index = logits[:, targets].max(dim=-1)
    others = logits.clone()
    others[:, targets] = float("-inf")
    rival_best, rival = others.max(dim=-1)
    return target_best - rival_best, targets[target_index], rival


def truth_margins(hidden: torch.Tensor, adapter: FamilyAdapter, model: nn.Module, target_ids: Sequence[int]) -> list[float]:
    """M per hidden state: ``hidden`` [L + 1, hidden] at the last prompt position, numbered like HF's (the last is
    already normed, so only the others go through the final norm before the unembedding)."""
    norm, head = adapter.final_norm(model), adapter.lm_head(model)
    parameter = next(head.parameters())
    hidden = hidden.to(parameter.device, parameter.dtype)
    logits = head(torch.cat([norm(hidden[:-1]), hidden[-1:]])).float()
    return _best_target_and_rival(logits, target_ids)[0].tolist()


def rms_epsilon(norm: nn.Module) -> float | None:
    """The epsilon of an RMS norm (``variance_epsilon``: Llama, Qwen2; ``eps``: Gemma), None for any other norm."""
    if isinstance(norm, nn.LayerNorm) or "rms" not in type(norm).__name__.lower():
        return None
    for name in ("variance_epsilon", "eps"):
        if isinstance(getattr(norm, name, None), float):
            return getattr(norm, name)
    return None


def margin_attribution(
    layer_input: torch.Tensor, middle: torch.Tensor, layer_output: torch.Tensor,
    adapter: FamilyAdapter, model: nn.Module, target_ids: Sequence[int],
) -> dict[str, list[float]] | None:
    """attention_l, mlp_l and unattributed_l (module docstring) per decoder layer, from h_l, h_l + a_l and h_{l+1}
    at the last prompt position (each [L, hidden], the last layer's output before the final norm); None when the
    final norm is not an RMS norm."""
    norm, head = adapter.final_norm(model), adapter.lm_head(model)
    eps = rms_epsilon(norm)
    if eps is None:
        return None
    weight = head.weight.float()
    bias = head.bias.float() if getattr(head, "bias", None) is not None else weight.new_zeros(weight.shape[0])
    h_in, h_mid, h_out = (x.to(weight.device, torch.float32) for x in (layer_input, middle, layer_output))

    def rms(x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x.pow(2).mean(-1) + eps)

    def normed(x: torch.Tensor) -> torch.Tensor:
        return norm(x).float()

    # h_{l+1} is layer l + 1's input, so the L + 1 states h_0 .. h_L need one lens pass: M(h_l) from the first L, the
    # target and rival tokens from the last L
    states = normed(torch.cat([h_in, h_out[-1:]]))
    margins, targets, rivals = _best_target_and_rival(states @ weight.T + bias, target_ids)
    margin_in, target, rival = margins[:-1], targets[1:], rivals[1:]
    direction = weight[target] - weight[rival]  # [L, hidden]
    scale_out = rms(h_out)

    def projected(write: torch.Tensor) -> torch.Tensor:  # d . (g * write) / r(h_out), with g * write = N(write) r(write)
        return (direction * normed(write) * (rms(write) / scale_out)[:, None]).sum(-1)

    lens_in = (direction * states[:-1]).sum(-1)  # q_l
    unattributed = lens_in * (rms(h_in) / scale_out - 1) + (lens_in + bias[target] - bias[rival] - margin_in)
    return {
        "attention": projected(h_mid - h_in).tolist(),
        "mlp": projected(h_out - h_mid).tolist(),
        "unattributed": unattributed.tolist(),
    }


def target_token_ids(tokenizer: object, target: str | Sequence[str] | None) -> list[int]:
    """First token of the reference answer as the model would write it (as given, and capitalised)."""
    if target is None:
        return []
    text = target if isinstance(target, str) else (target[0] if target else "")
    ids = set()
    for variant in {text.strip(), text.strip().capitalize()}:
        tokens = tokenizer(variant, add_special_tokens=False)["input_ids"] if variant else []
        if tokens:
            ids.add(int(tokens[0]))
    return sorted(ids)

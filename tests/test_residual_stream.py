"""The prompt pass's residual stream per decoder layer: update norms ||output - input|| per position checked
against Hugging Face's ``output_hidden_states`` differences (the last layer with the final norm taken out), and the
stream between the attention and MLP blocks checked against the blocks' own outputs."""

from __future__ import annotations

import torch
from torch import nn

from test_capture import batch, tiny  # noqa: F401  (the module-scoped fixture of every family's random tiny model)
from vrp_bench.capture import ResidualStreamCapture
from vrp_bench.models.instrumented import instrumented_generate


def raw_hidden_states(model: nn.Module, adapter, inputs) -> tuple[torch.Tensor, ...]:
    """HF's hidden states 0..L with the final norm replaced by identity (hidden state L before the norm)."""
    language_model = model.model.language_model
    norm = adapter.final_norm(model)
    assert language_model.norm is norm
    language_model.norm = nn.Identity()
    try:
        with torch.inference_mode():
            return model(**inputs, output_hidden_states=True).hidden_states
    finally:
        language_model.norm = norm


def capture(model, adapter) -> ResidualStreamCapture:
    layers = adapter.decoder_layers(model)
    return ResidualStreamCapture(layers, [adapter.residual_after_attention(layer) for layer in layers])


def test_update_norms_equal_hidden_state_differences(tiny):  # noqa: F811
    family, model, processor, adapter = tiny
    _, inputs = batch(model, processor, adapter)
    states = raw_hidden_states(model, adapter, inputs)
    layers = adapter.decoder_layers(model)
    hooks_before = [(len(layer._forward_hooks), len(layer._forward_pre_hooks)) for layer in layers]
    with torch.inference_mode(), capture(model, adapter) as stream:
        model(**inputs)
        model(**batch(model, processor, adapter, n=2)[1])  # a second call (another batch) is not kept
    captured = stream.stacked_update_norms()
    assert captured.shape == (inputs["input_ids"].shape[0], len(layers), inputs["input_ids"].shape[1])
    expected = torch.stack([torch.linalg.vector_norm((states[l + 1] - states[l]).float(), dim=-1)
                            for l in range(len(layers))], dim=1)
    torch.testing.assert_close(captured, expected, rtol=1e-5, atol=1e-5)
    h_in, _, h_out = stream.stacked_last()
    torch.testing.assert_close(h_in, torch.stack(states[:-1], dim=1)[:, :, -1].float())
    torch.testing.assert_close(h_out, torch.stack(states[1:], dim=1)[:, :, -1].float())
    # removed on exit (transformers keeps hooks of its own on the layers)
    assert [(len(layer._forward_hooks), len(layer._forward_pre_hooks)) for layer in layers] == hooks_before


def test_the_middle_of_a_layer_splits_its_write_into_the_attention_and_mlp_outputs(tiny):  # noqa: F811
    """h_l + a_l - h_l is the attention module's output and h_l+1 - (h_l + a_l) the MLP's (none of the tiny
    families norms a block's output before the residual add), read by independent hooks on those modules."""
    family, model, processor, adapter = tiny
    _, inputs = batch(model, processor, adapter)
    layers = adapter.decoder_layers(model)
    outputs: dict[tuple[str, int], torch.Tensor] = {}

    def keep(name: str, index: int):
        def hook(module, args, output):
            outputs.setdefault((name, index), (output[0] if isinstance(output, tuple) else output)[:, -1].float())
        return hook

    handles = [adapter.attention_module(layer).register_forward_hook(keep("attention", i)) for i, layer in enumerate(layers)]
    handles += [adapter.mlp_module(layer).register_forward_hook(keep("mlp", i)) for i, layer in enumerate(layers)]
    try:
        with torch.inference_mode(), capture(model, adapter) as stream:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    h_in, h_mid, h_out = stream.stacked_last()
    for i in range(len(layers)):
        torch.testing.assert_close(h_mid[:, i] - h_in[:, i], outputs["attention", i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(h_out[:, i] - h_mid[:, i], outputs["mlp", i], rtol=1e-4, atol=1e-5)


def test_traces_carry_the_prompt_pass_updates(tiny):  # noqa: F811
    """instrumented_generate keeps the prompt pass only: the mean over the image tokens and the last prompt
    position (left padding: the same index for every sample), equal to the reference differences."""
    family, model, processor, adapter = tiny
    docs, inputs = batch(model, processor, adapter)
    states = raw_hidden_states(model, adapter, inputs)
    kwargs = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": processor.tokenizer.pad_token_id}
    _, traces = instrumented_generate(model, adapter, processor, inputs, kwargs, [d["answer"] for d in docs])
    spans = adapter.image_token_span(inputs["input_ids"])
    n_layers = len(adapter.decoder_layers(model))
    for b, trace in enumerate(traces):
        norms = torch.stack([torch.linalg.vector_norm((states[l + 1][b] - states[l][b]).float(), dim=-1)
                             for l in range(n_layers)])
        torch.testing.assert_close(torch.from_numpy(trace.residual_update_last).float(), norms[:, -1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.from_numpy(trace.residual_update_image).float(), norms[:, spans[b]].mean(-1),
                                   rtol=1e-4, atol=1e-4)

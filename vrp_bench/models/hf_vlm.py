"""One transformers backend for every VLM family, parameterised by the family adapter.

``HFVLM`` loads any checkpoint through ``AutoModelForImageTextToText`` and the family's processor,
batches requests with left padding, generates (greedy by default; sampled requests are seeded one
by one so an answer never depends on the batch it came in), strips the prompt and cuts each answer
at the first ``until`` string. Each family is registered as ``<family>`` (default: the study's hub
checkpoint); ``register_hf_model`` registers another name for a family with another default
checkpoint (the tiny zoo's ``tiny_<family>`` in ``vrp_bench.zoo.models``), through exactly the same
loading code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any, ClassVar

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    BatchFeature,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import GenerationSettings, OptionScore, Request, Response
from vrp_bench.api.interventions import ImageTokenLayout, Intervenable, UnitSite, UnitSpace
from vrp_bench.api.model import VLM, register_model
from vrp_bench.checkpoint_location import STUDY_CHECKPOINTS, locate
from vrp_bench.models.answers import answer_text
from vrp_bench.models.families import FAMILIES, FamilyAdapter
from vrp_bench.models.instrumented import instrumented_generate
from vrp_bench.models.self_consistency import shared_prefill_samples

DTYPES = ("auto", "float32", "float16", "bfloat16")
KEPT_FROM_CHECKPOINT = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
"""What a checkpoint's generation_config may say: which tokens begin, end and pad its text."""


def pinned_generation_config(checkpoint: GenerationConfig) -> tuple[GenerationConfig, dict[str, Any]]:
    """(the base of every ``generate`` call, what of ``checkpoint`` it leaves out). transformers fills every
    setting a call leaves unset from the model's ``generation_config``, and some (min_p, forced_bos_token_id,
    sequence_bias, watermarking, ...) cannot be reset by a call at all. So the model's own is replaced by
    transformers' defaults plus only the checkpoint's token ids (``KEPT_FROM_CHECKPOINT``): decoding is what the
    task and the run ask for, never what a checkpoint's authors preferred (e.g. Qwen2-VL's repetition_penalty 1.05,
    top_k 1); what is left out is recorded in the report (``model.generation_config.checkpoint_not_used``)."""
    pinned = GenerationConfig(**{key: getattr(checkpoint, key) for key in KEPT_FROM_CHECKPOINT
                                 if getattr(checkpoint, key, None) is not None})
    defaults = effective_base(GenerationConfig())
    left_out = {key: value for key, value in checkpoint.to_dict().items()
                if key not in KEPT_FROM_CHECKPOINT and not key.startswith("_") and key != "transformers_version"
                and value is not None and value != defaults.get(key) and not (value is False and defaults.get(key) is None)}
    return pinned, _plain_settings(left_out)


def effective_base(config: GenerationConfig) -> dict[str, Any]:
    """What ``generate`` starts from with ``config`` as the model's: transformers' global defaults, then the
    values ``config`` sets (each call's own settings -- the task's generation_kwargs, self-consistency's -- go on
    top)."""
    defaults = getattr(config, "_get_default_generation_params", dict)()
    return _plain_settings({**defaults, **{k: v for k, v in config.to_dict().items() if v is not None
                                           and not k.startswith("_")}})


def _plain_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Generation settings as JSON values (nested configs become their dicts, other objects their text)."""
    return json.loads(json.dumps({k: v for k, v in settings.items() if k != "transformers_version"},
                                 sort_keys=True, default=lambda value: getattr(value, "to_dict", lambda: str(value))()))


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's config and of every weight's name, dtype, shape and bytes.

    The config is taken as sorted JSON without the fields that name where or with which
    transformers version it was loaded, so a copy of a checkpoint has the same fingerprint.
    """
    config = model.config.to_json_string(use_diff=False)
    config = re.sub(r'"(_name_or_path|transformers_version)": "[^"]*"', "", config)
    digest = hashlib.sha256(config.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""``device_map`` values that are accelerate's placement strategies, not a device."""


def resolve_device(name: str | None, spelled: str = "--device ") -> torch.device:
    """``--device`` as a torch device: None / "auto" -> the first of cuda, mps, cpu that this machine has; "cpu",
    "cuda", "cuda:N", "mps" as named. A device this machine does not have is a one-line UsageError (naming the
    option as ``spelled``: "--device ", or "device_map=" for a model arg)."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"{spelled}{name!r} is not a device; use one of {', '.join(DEVICES)}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise UsageError(f"{spelled}{name}: this machine has {count} CUDA device(s); use {spelled}cpu or auto")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"{spelled}{name}: MPS (Apple GPU) is not available here; use {spelled}cpu or auto")
    elif device.type != "cpu":
        raise UsageError(f"{spelled}{name!r}: VRP-Bench runs on {', '.join(DEVICES)}")
    return device


class HFVLM(VLM, Intervenable):
    """A transformers VLM of one family (set by subclasses: ``adapter_class``, ``default_pretrained``); it
    implements ``Intervenable``, so it can be ablated."""

    adapter_class: ClassVar[type[FamilyAdapter]]
    default_pretrained: ClassVar[str]

    def __init__(
        self,
        pretrained: str | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        device_map: str | None = None,
        attn_implementation: str | None = None,
        max_pixels: int | None = None,
        trust_remote_code: bool = False,
        capture: bool = True,
        sc_samples: int = 10,
        sc_temperature: float = 0.7,
        sc_top_p: float = 0.9,
        sc_top_k: int = 0,
        device: str | None = None,
    ) -> None:
        if sc_samples < 0 or sc_temperature <= 0 or not 0 < sc_top_p <= 1 or sc_top_k < 0:
            raise UsageError(
                f"model {self.name!r}: need sc_samples >= 0, sc_temperature > 0, 0 < sc_top_p <= 1, sc_top_k >= 0"
            )
        self.capture = bool(capture)
        self.self_consistency = {"k": int(sc_samples), "temperature": float(sc_temperature),
                                 "top_p": float(sc_top_p), "top_k": int(sc_top_k), "repetition_penalty": 1.0}
        if dtype not in DTYPES:
            raise UsageError(f"model {self.name!r}: dtype={dtype!r} is not one of {', '.join(DTYPES)}")
        self.pretrained = str(pretrained or self.default_pretrained)
        self.revision = revision
        hub = {"revision": revision, "trust_remote_code": trust_remote_code, **locate(self.pretrained, revision)}
        config = self._load(AutoConfig.from_pretrained, **hub)
        family = self.adapter_class.family
        if config.model_type != family:
            raise UsageError(
                f"{self.pretrained!r} is a {config.model_type!r} checkpoint, not {family!r}: "
                f"pick the model registered for its family"
            )
        self.processor = self._load(self.adapter_class.load_processor, max_pixels=max_pixels, **hub)
        self.processor.tokenizer.padding_side = "left"
        self.model = self._load(
            AutoModelForImageTextToText.from_pretrained,
            config=config,
            dtype=dtype,
            device_map=device_map,
            attn_implementation=attn_implementation,
            **hub,
        )
        if device_map is None:
            self.model.to(resolve_device(device))
        self.model.eval()
        self.model.generation_config, self.checkpoint_generation = pinned_generation_config(self.model.generation_config)
        self.adapter = self.adapter_class(self.model.config)
        self._fingerprint: str | None = None

    def _load(self, loader: Any, **kwargs: Any) -> Any:
        """Call a ``from_pretrained``-style loader on ``self.pretrained``; a checkpoint that cannot be found or
        read is the user's to fix (a ``pretrained=`` model arg): a one-line UsageError, exit 2."""
        try:
            return loader(self.pretrained, **kwargs)
        except (OSError, ValueError) as error:  # not found, offline, not a checkpoint of a known type
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(
                f"cannot load model {self.pretrained!r}: {reason} "
                f"(download it and pass --model_args pretrained=/path/to/local/dir)"
            ) from error

    @classmethod
    def check_args(cls, model_args: dict[str, Any]) -> None:
        """Also: the checkpoint can be had (``checkpoint_location.locate``) and a ``device_map`` that names a device
        names one this machine has."""
        super().check_args(model_args)
        device_map = model_args.get("device_map")
        if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
            resolve_device(device_map, spelled="device_map=")
        locate(str(model_args.get("pretrained") or cls.default_pretrained), model_args.get("revision"))

    @classmethod
    def check_device(cls, device: str | None) -> None:
        resolve_device(device)

    @property
    def prompt_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.name, self.adapter_class.family)))

    def describe(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.model)
        return {
            "pretrained": self.pretrained,
            "revision": self.revision,
            "family": self.adapter_class.family,
            "n_layers": self.n_layers,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.model.device),
            "attn_implementation": self.model.config._attn_implementation,
            "fingerprint": self._fingerprint,
            "capture": self.capture,
            "self_consistency": self.self_consistency,
            "generation_config": {
                "base": effective_base(self.model.generation_config),
                "checkpoint_not_used": self.checkpoint_generation,
            },
        }

    # --- generation ----------------------------------------------------------------------------

    def encode(self, requests: Sequence[Request]) -> BatchFeature:
        """The processor's left-padded batch for ``requests``, on the model's device."""
        prompts = [self.adapter.build_prompt(self.processor, r.prompt, len(r.images), r.messages) for r in requests]
        images = [list(r.images) for r in requests]
        inputs = self.processor(images=images if any(images) else None, text=prompts, padding=True, return_tensors="pt")
        inputs.pop("labels", None)
        return inputs.to(self.model.device, dtype=self.model.dtype)

    def generate(
        self, requests: Sequence[Request], *, hooks: Sequence[AbstractContextManager] = (),
        self_consistency: bool = True,
    ) -> list[Response]:
        responses: dict[int, Response] = {}
        with ExitStack() as active:
            for hook in hooks:
                active.enter_context(hook)
            for batch in self.batches(requests, len(requests)):
                answers = self._generate_batch([requests[index] for index in batch], self_consistency)
                responses.update(zip(batch, answers))
        return [responses[index] for index in range(len(requests))]

    def batches(self, requests: Sequence[Request], size: int) -> list[list[int]]:
        """Requests with the same decoding settings, all with or all without images, share a pass (at most
        ``size``); sampled requests go one by one, each under its own seed."""
        groups: dict[tuple[GenerationSettings, bool], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.generation, bool(request.images)), []).append(index)
        passes = []
        for (settings, _), indices in groups.items():
            step = max(1, size) if settings.greedy else 1
            passes += [indices[start:start + step] for start in range(0, len(indices), step)]
        return passes

    def _generate_batch(self, requests: list[Request], self_consistency: bool) -> list[Response]:
        """Answer one batch (greedy, or one seeded sampled request); with ``capture``, in one instrumented
        pass that also returns every sample's traces, plus its self-consistency answers.

        Only what belongs to one sample fails one sample: an input the processor refuses (the batch is
        retried one request at a time to find it) and running out of memory (retried in halves, then alone).
        Anything else is the run's problem and propagates."""
        try:
            inputs = self.encode(requests)
        except (ValueError, TypeError, OSError) as error:
            if len(requests) > 1:
                return [response for request in requests for response in self._generate_batch([request], self_consistency)]
            return [Response.failed(f"the processor refused this input: {type(error).__name__}: {error}")]
        try:
            return self._answer(requests, inputs, self_consistency)
        except RuntimeError as error:
            if not _out_of_memory(error):
                raise
            if len(requests) > 1:
                half = len(requests) // 2
                return (self._generate_batch(requests[:half], self_consistency)
                        + self._generate_batch(requests[half:], self_consistency))
            return [Response.failed(f"out of memory even alone: {error}")]

    def _answer(self, requests: list[Request], inputs: Any, self_consistency: bool) -> list[Response]:
        """The answers (and traces) of an encoded batch (one decoding setting)."""
        settings = requests[0].generation
        kwargs = self._generation_kwargs(settings)
        if not settings.greedy:
            torch.manual_seed(requests[0].seed)
        if self.capture:
            new_tokens, traces = instrumented_generate(
                self.model, self.adapter, self.processor, inputs, kwargs, [r.target for r in requests], settings.until
            )
        else:
            with torch.inference_mode():
                output = self.model.generate(**inputs, **kwargs)
            new_tokens, traces = output[:, inputs["input_ids"].shape[1] :], None
        responses = [Response(text=text) for text in self._decode(new_tokens, settings.until)]
        for index, response in enumerate(responses):
            if traces is not None:
                response.traces = traces[index]
                if self_consistency and self.self_consistency["k"]:
                    sampled = self._sample_answers(requests[index], settings)
                    response.traces = dataclasses.replace(response.traces, sc_answers=sampled)
        return responses

    def loglikelihood(self, requests: Sequence[Request], options: Sequence[str]) -> list[OptionScore]:
        """Each option's summed token log-probability after its request's prompt, through the same generation
        path as answers (``ForcedTokens`` makes greedy decoding follow the option; the log-probabilities are
        taken from the raw logits), so the cache, position and token-type handling of every family is the one
        ``generate`` uses. Requests with and without images are scored in separate passes."""
        scores: dict[int, OptionScore] = {}
        groups: dict[bool, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(bool(request.images), []).append(index)
        for indices in groups.values():
            batch = self._score_options([requests[i] for i in indices], [options[i] for i in indices])
            scores.update(zip(indices, batch))
        return [scores[index] for index in range(len(requests))]

    def _score_options(self, requests: list[Request], options: list[str]) -> list[OptionScore]:
        tokenizer = self.processor.tokenizer
        token_ids = [tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
        if any(not ids for ids in token_ids):
            if len(requests) > 1:
                return [s for r, o in zip(requests, options) for s in self._score_options([r], [o])]
            return [OptionScore(None, error=f"option {options[0]!r} has no tokens")]
        try:
            inputs = self.encode(requests)
        except (ValueError, TypeError, OSError) as error:
            if len(requests) > 1:
                return [s for r, o in zip(requests, options) for s in self._score_options([r], [o])]
            return [OptionScore(None, error=f"the processor refused this input: {type(error).__name__}: {error}")]
        steps = max(len(ids) for ids in token_ids)
        forced = ForcedTokens(token_ids, inputs["input_ids"].shape[1], self.processor.tokenizer.pad_token_id or 0)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, **self._generation_kwargs(GenerationSettings(max_new_tokens=steps)),
                logits_processor=LogitsProcessorList([forced]), output_logits=True, return_dict_in_generate=True,
            )
        logits = torch.stack(output.logits, dim=1).float().cpu()  # [batch, steps taken, vocab]
        results = []
        for row, ids in enumerate(token_ids):
            if logits.shape[1] < len(ids):
                results.append(OptionScore(None, error="generation ended before the option's last token"))
                continue
            target = torch.tensor(ids)
            row_logits = logits[row, : len(ids)]
            logprob = row_logits.log_softmax(-1).gather(-1, target[:, None]).sum()
            greedy = bool((row_logits.argmax(-1) == target).all())
            results.append(OptionScore(float(logprob), greedy, len(ids)))
        return results

    # --- the interventions interface -------------------------------------------------------------

    @property
    def captures(self) -> bool:
        return self.capture

    @property
    def n_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.model.parameters())

    @property
    def n_layers(self) -> int:
        return len(self.adapter.decoder_layers(self.model))

    def unit_site(self, layer: int, space: UnitSpace) -> UnitSite:
        if space == "residual":
            module, where = self.adapter.hidden_state_sites(self.model)[layer]
            return UnitSite(module, where, self.model.config.get_text_config().hidden_size)
        if layer < 1:
            raise ValueError("hidden state 0 (the embedding output) has no MLP units")
        down = self.adapter.mlp_down_projection(self.adapter.decoder_layers(self.model)[layer - 1])
        return UnitSite(down, "input", down.in_features, readout=down.weight)

    def image_token_layout(self, requests: Sequence[Request]) -> ImageTokenLayout:
        input_ids = self.encode(requests)["input_ids"].cpu()
        return ImageTokenLayout(self.adapter.image_token_span(input_ids), input_ids.shape[1],
                                self.adapter.decoder_layers(self.model)[0])

    def prefill(self, requests: Sequence[Request], hooks: Sequence[AbstractContextManager] = ()) -> None:
        with ExitStack() as active, torch.inference_mode():
            for hook in hooks:
                active.enter_context(hook)
            self.model(**self.encode(requests))

    def _decode(self, new_tokens: torch.Tensor, until: Sequence[str]) -> list[str]:
        return [answer_text(self.processor.tokenizer, row, until) for row in new_tokens.tolist()]

    def _sample_answers(self, request: Request, settings: GenerationSettings) -> list[str]:
        """K sampled answers to ``request`` from one shared prefill, seeded by the request."""
        sc = self.self_consistency
        kwargs = {**self._generation_kwargs(settings), "do_sample": True, "num_beams": 1,
                  "temperature": sc["temperature"], "top_p": sc["top_p"], "top_k": sc["top_k"]}
        samples = shared_prefill_samples(self.model, self.encode([request]), sc["k"], kwargs, seed=request.seed)
        return self._decode(samples.cpu(), settings.until)

    def _generation_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """Every decoding parameter that matters set explicitly, so a checkpoint's generation_config
        (e.g. Qwen2.5-VL's top_k=1) cannot silently change it."""
        kwargs = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": not settings.greedy,
            "num_beams": settings.num_beams,
            "repetition_penalty": 1.0,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
        }
        if not settings.greedy:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or 0)
        return kwargs


class ForcedTokens(LogitsProcessor):
    """Makes generation follow given token sequences (row i: ``token_ids[i]``, then padding): every other token's
    score becomes -inf. Applied after the checkpoint's own processors; raw logits are unaffected."""

    def __init__(self, token_ids: Sequence[Sequence[int]], prompt_length: int, pad_token_id: int) -> None:
        self.token_ids, self.prompt_length, self.pad_token_id = token_ids, prompt_length, pad_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(self.token_ids):
            forced[row, ids[step] if step < len(ids) else self.pad_token_id] = 0.0
        return forced


def register_hf_model(
    name: str, adapter: type[FamilyAdapter], pretrained: str, description: str, image_size: int | None = None
) -> type[HFVLM]:
    """Register, as ``--model name``, an ``HFVLM`` of ``adapter``'s family loading ``pretrained`` by default
    (``image_size``: the one resolution it suits, ``VLM.image_size``)."""
    attributes = {"adapter_class": adapter, "default_pretrained": pretrained, "description": description,
                  "image_size": image_size}
    return register_model(name)(type(f"HFVLM_{name}", (HFVLM,), attributes))


for _family, _adapter in FAMILIES.items():
    _checkpoint = STUDY_CHECKPOINTS[_family]
    register_hf_model(_family, _adapter, _checkpoint, f"transformers {_family}; default {_checkpoint}")


def _out_of_memory(error: RuntimeError) -> bool:
    """Whether ``error`` is an allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's message)."""
    text = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "not enough memory" in text

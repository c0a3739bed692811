"""Where a ``pretrained=`` checkpoint comes from (a local folder, the Hugging Face cache, the hub), decided
before transformers is asked to load it, so that a missing folder or an unreachable hub is one line at once.

Without this, a hub id on a machine with no network costs ~30 s of retries (two log lines per retry) before
transformers gives up, and a folder that does not exist is reported as a malformed repo id. ``locate``
answers: a local folder must exist and hold ``config.json``; a hub id is loaded from the cache only
(``local_files_only``) when the hub cannot be reached (one connection attempt, ``PROBE_SECONDS``), and is an
error when it is not in the cache either.
"""

from __future__ import annotations

import functools
import logging
import socket
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import constants, try_to_load_from_cache

from vrp_bench.api.errors import UsageError

log = logging.getLogger("vrp_bench")

STUDY_CHECKPOINTS = {
    "llava": "llava-hf/llava-1.5-7b-hf",
    "paligemma": "google/paligemma-3b-pt-224",
    "qwen2_vl": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
}
"""Each family (``models.families.FAMILIES``) -> the hub id of the study's checkpoint: the default ``pretrained``
of the model registered under the family's name."""

PROBE_SECONDS = 3.0
"""How long ``hub_reachable`` waits for a connection to the hub."""


def looks_like_folder(pretrained: str) -> bool:
    """Whether ``pretrained`` names a local folder rather than a hub repo id ("name" or "namespace/name"): it
    exists here, is absolute or starts with "~" or ".", or has more than one "/" (or a backslash)."""
    return (Path(pretrained).expanduser().exists() or pretrained.startswith(("/", "~", ".")) or pretrained.count("/") > 1
            or "\\" in pretrained)


@functools.lru_cache(maxsize=None)
def hub_reachable(endpoint: str) -> bool:
    """Whether a TCP connection to ``endpoint``'s host, or to the proxy the environment names for it
    (``HTTPS_PROXY``, ...), opens within ``PROBE_SECONDS`` (asked once per process)."""
    parts = urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def in_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the Hugging Face cache holds ``repo_id``'s config.json (at ``revision``)."""
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except ValueError:  # not a valid repo id: transformers reports it when it tries
        return True


def locate(pretrained: str, revision: str | None = None) -> dict[str, Any]:
    """The extra keyword arguments of the ``from_pretrained`` calls that load ``pretrained`` (``local_files_only``
    when the hub cannot be reached but the cache has the model), or a one-line ``UsageError`` when it cannot be
    loaded: a folder that is not there or holds no checkpoint, or a hub id that is neither reachable nor cached."""
    if looks_like_folder(pretrained):
        folder = Path(pretrained).expanduser()
        if not folder.is_dir():
            raise UsageError(f"pretrained={pretrained}: no such folder (give the folder of a checkpoint saved with "
                             "save_pretrained, or a hub repo id such as Qwen/Qwen2-VL-7B-Instruct)")
        if not (folder / "config.json").is_file():
            raise UsageError(f"pretrained={pretrained}: the folder has no config.json, so it is not a checkpoint "
                             "saved with save_pretrained (give the folder that holds config.json)")
        return {}
    cached = in_cache(pretrained, revision)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise UsageError(f"cannot load model {pretrained!r}: no such folder here, and HF_HUB_OFFLINE is set but the "
                             f"model is not in the Hugging Face cache ({constants.HF_HUB_CACHE}); download it where the "
                             "hub is reachable and pass --model_args pretrained=/path/to/folder")
        return {}
    if hub_reachable(constants.ENDPOINT):
        return {}
    if not cached:
        raise UsageError(f"cannot load model {pretrained!r}: no such folder here, the Hugging Face Hub "
                         f"({constants.ENDPOINT}) cannot be reached from this machine and the model is not in its cache "
                         f"({constants.HF_HUB_CACHE}); download it where the hub is reachable and pass --model_args "
                         "pretrained=/path/to/folder (set HF_HUB_OFFLINE=1 to skip the hub on an offline machine)")
    log.info("the Hugging Face Hub (%s) cannot be reached: loading %s from the cache (set HF_HUB_OFFLINE=1 to skip "
             "this check)", constants.ENDPOINT, pretrained)
    return {"local_files_only": True}

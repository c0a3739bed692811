"""``SampleCache``: finished samples kept on disk, so a re-run (after a crash, a kill, a Ctrl-C) skips them.

One file per sample, ``<cache dir>/<key[:2]>/<key>.npz``: the ``SampleRecord`` as JSON plus its arrays (hidden
states, attention maps), written to a temporary file and renamed, so a file is either whole or absent. The key
is the sha256 of everything the sample's outcome depends on:

- the model: ``VLM.describe()`` (checkpoint fingerprint, dtype, attention implementation, capture and
  self-consistency settings) and the device type (a CPU and a GPU do not compute the same bits);
- the task: its name and whole config (its version among them); the reliability signals registered (``signals.SIGNALS``); the
  vrp-bench version;
- the request: doc id, doc hash (fields, target, image pixels), prompt or messages, generation settings, seed.

A model without a fingerprint (e.g. one that is not a transformers checkpoint) is never cached: nothing would
tell two of its versions apart. A file that cannot be read, or whose stored key differs, is counted in
``corrupt`` and recomputed, never trusted. Failed samples are not cached (an out-of-memory error may not recur).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import vrp_bench
from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import write_files_atomically
from vrp_bench.api.instance import Request
from vrp_bench.api.model import VLM
from vrp_bench.api.task import Task
from vrp_bench.evaluator import SampleRecord
from vrp_bench.signals.catalogue import SIGNALS

log = logging.getLogger(__name__)

CACHE_FORMAT = "vrp-bench sample cache 1"
_ARRAY_FIELDS = ("hidden_states", "attention_maps")
"""``SampleRecord`` fields that hold name -> array (stored as npz members ``<field>/<name>``)."""


class SampleCache:
    """Finished ``SampleRecord``s of one model (module docstring); ``hits`` / ``stored`` / ``corrupt`` count
    this run's lookups."""

    def __init__(self, folder: Path, model: VLM) -> None:
        self.folder = Path(folder)
        description = dict(model.describe())
        device = str(description.pop("device", "cpu")).split(":")[0]
        self._model_key = {"model": description, "device": device}
        self.hits = self.stored = self.corrupt = 0

    @staticmethod
    def for_model(folder: Path | None, model: VLM) -> SampleCache | None:
        """The cache of ``model`` in ``folder``, or None (no folder, or a model without a fingerprint)."""
        if folder is None or not model.describe().get("fingerprint"):
            return None
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--cache_dir {folder}: cannot create it ({error.strerror or error}); give a writable "
                             "folder or --no_cache") from error
        return SampleCache(Path(folder), model)

    def key(self, task: Task, request: Request, doc_hash: str | None) -> str:
        """The sha256 of everything the sample's outcome depends on (module docstring)."""
        material = {
            "format": CACHE_FORMAT,
            "vrp_bench": vrp_bench.__version__,
            **self._model_key,
            "task": {"name": task.name, "config": task.config.__dict__},
            "signals": sorted(SIGNALS),
            "request": {"doc_id": request.doc_id, "doc_hash": doc_hash, "prompt": request.prompt,
                        "messages": request.messages, "generation": dataclasses.asdict(request.generation),
                        "seed": request.seed},
        }
        text = json.dumps(material, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def take(self, keys: list[str], doc_ids: list[int]) -> list[SampleRecord] | None:
        """The records of a whole batch (``keys[i]`` of doc ``doc_ids[i]``), or None when any is missing or
        unreadable (counted in ``corrupt``): a batch is reused whole or answered again whole, so it holds the same
        docs as in an uninterrupted run."""
        records = []
        for key, doc_id in zip(keys, doc_ids):
            record = self._load(key, doc_id)
            if record is None:
                return None
            records.append(record)
        self.hits += len(records)
        return records

    def _load(self, key: str, doc_id: int) -> SampleRecord | None:
        """The record stored under ``key``, or None (absent, or unreadable: counted in ``corrupt``)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return _decode(path.read_bytes(), key, doc_id)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            self.corrupt += 1
            log.warning("sample cache: %s is unreadable (%s); recomputing it", path, error)
            return None

    def store(self, key: str, record: SampleRecord) -> None:
        """Keep a finished record (a failed one is not kept), atomically."""
        if record.error is not None:
            return
        write_files_atomically({self._path(key): _encode(record, key)})
        self.stored += 1

    def summary(self) -> str:
        """One line for the log: what this run took from and added to the cache."""
        corrupt = f", {self.corrupt} unreadable recomputed" if self.corrupt else ""
        return f"sample cache {self.folder}: {self.hits} samples reused, {self.stored} stored{corrupt}"


def _encode(record: SampleRecord, key: str) -> bytes:
    """A record as npz bytes: ``record.json`` (every field but the arrays, and the key) + one member per array."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name not in _ARRAY_FIELDS}
    arrays = {f"{field}/{name}": np.asarray(array)
              for field in _ARRAY_FIELDS for name, array in getattr(record, field, {}).items()}
    header = json.dumps({"key": key, "record": fields}, default=_json_default).encode()
    buffer = io.BytesIO()
    np.savez(buffer, **{"record.json": np.frombuffer(header, dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _decode(content: bytes, key: str, doc_id: int) -> SampleRecord:
    """The record ``_encode`` wrote; ValueError when it is not the one stored under ``key`` for ``doc_id``."""
    with np.load(io.BytesIO(content), allow_pickle=False) as stored:
        header = json.loads(stored["record.json"].tobytes().decode())
        if header.get("key") != key or header["record"].get("doc_id") != doc_id:
            raise ValueError("the entry was stored under another key")
        record = SampleRecord(**header["record"])
        for member in stored.files:
            field, _, name = member.partition("/")
            if field in _ARRAY_FIELDS:
                getattr(record, field)[name] = stored[member]
    return record

"""Output of a run: the early writability check and JSON / JSONL text (written by ``api.files``)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vrp_bench.api.errors import UsageError


def check_writable(folder: Path) -> None:
    """Fail early (before any model runs) if ``folder`` cannot be created or written to.

    The check is real: the folder is created and a probe file written and removed there.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output path {folder}: {exc.strerror or exc}") from None


def _finite(value: Any) -> Any:
    """Replace NaN / infinity (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _native(value: Any) -> Any:
    """``json.dumps``' fallback: a numpy scalar as the Python number or bool it holds exactly; anything else that
    is not JSON-native (an array, an object) is a bug in what was built, so it raises TypeError."""
    if isinstance(value, np.generic) and value.ndim == 0 and not isinstance(value, (np.str_, np.bytes_, np.void)):
        return _finite(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable (convert it where the report is built)")


def json_text(data: Any) -> str:
    """Pretty JSON with non-finite numbers as null and numpy scalars as plain numbers."""
    return json.dumps(_finite(data), indent=2, ensure_ascii=False, default=_native) + "\n"


def jsonl_text(records: list[dict[str, Any]]) -> str:
    """One compact JSON object per line."""
    return "".join(json.dumps(_finite(r), ensure_ascii=False, default=_native) + "\n" for r in records)


def jsonl_lines(text: str) -> list[str]:
    """The records' lines of JSONL ``text``, split at "\\n" only: ``str.splitlines`` also splits at U+2028, U+0085
    and other characters that a JSON string written with ``ensure_ascii=False`` holds unescaped."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines

"""Output of a run: the early writability check and JSON / JSONL text (written by ``api.files``)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

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


def json_text(data: Any) -> str:
    """Pretty JSON with non-finite numbers as null and non-JSON objects as their ``str``."""
    return json.dumps(_finite(data), indent=2, ensure_ascii=False, default=str) + "\n"


def jsonl_text(records: list[dict[str, Any]]) -> str:
    """One compact JSON object per line."""
    return "".join(json.dumps(_finite(r), ensure_ascii=False, default=str) + "\n" for r in records)

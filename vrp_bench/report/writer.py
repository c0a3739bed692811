"""Atomic writing of a run's files: everything is written to temporary files first and renamed
into place only when all of them are complete, so a failed run leaves no half-written output."""

from __future__ import annotations

import json
import math
import os
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


def write_files_atomically(files: dict[Path, str]) -> None:
    """Write every file to a temporary sibling, then rename them all into place."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((Path(temporary), path))
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
        for temporary, path in staged:
            os.replace(temporary, path)
    except OSError as exc:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise UsageError(f"cannot write output: {exc.strerror or exc} ({exc.filename or ''})") from None

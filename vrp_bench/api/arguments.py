"""lmms-eval's ``k=v,k=v`` argument strings (``--model_args``, ``--gen_kwargs``), parsed as lmms-eval parses them."""

from __future__ import annotations

from typing import Any

from vrp_bench.api.errors import UsageError


def parse_key_values(text: str, flag: str) -> dict[str, Any]:
    """Parse ``k=v,k=v`` as lmms-eval does: true/false -> bool, numbers -> int/float, else str."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{flag}: expected key=value pairs separated by commas, got {item!r}")
        if key in values:
            raise UsageError(f"{flag}: {key!r} is given twice")
        values[key] = _coerce(raw.strip())
    return values


def _coerce(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw

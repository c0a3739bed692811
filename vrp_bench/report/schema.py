"""The report's JSON Schema (shipped as ``schema/vrp-report-3.json``) and validation against it."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from vrp_bench.api.errors import RunError

SCHEMA_ID = "vrp-report/3"
SCHEMA_FILE = Path(__file__).parent / "schema" / "vrp-report-3.json"
MESSAGE_CHARS = 200


@lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The shipped JSON Schema of ``vrp-report/3``."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def schema_problems(report: Any) -> list[str]:
    """Every violation of the schema, each as "<json path>: <message>" (empty: the report is valid)."""
    validator = jsonschema.Draft202012Validator(report_schema())
    problems = []
    for error in sorted(validator.iter_errors(report), key=lambda e: list(map(str, e.absolute_path))):
        error = best_match([error])  # into oneOf / anyOf branches: the deepest, most relevant failure
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        message = error.message if len(error.message) <= MESSAGE_CHARS else error.message[:MESSAGE_CHARS] + "..."
        problems.append(f"{path}: {message}")
    return problems


def require_valid(report: Any) -> None:
    """Refuse to write a report that breaks the schema (that is a bug of ours, not the user's)."""
    problems = schema_problems(report)
    if problems:
        raise RunError(f"internal error: the report breaks {SCHEMA_ID} at {problems[0]} ({len(problems)} problem(s))")

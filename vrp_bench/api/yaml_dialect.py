"""Reading task YAML in lmms-eval's dialect: ``!function`` references and ``include`` chains.

A dedicated loader class (PyYAML's global loaders are left untouched) turns ``!function
module.name`` into a ``FunctionRef`` that is resolved only when a task is built, so indexing
hundreds of YAML files never imports task code. ``include`` (a path or a list, relative to the
including file) is merged first; keys of the including file win.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vrp_bench.api.errors import UsageError


FUNCTION_TAG = "!function "
"""How a ``FunctionRef`` is spelled in YAML and wherever a config is written back (reports): ``!function module.name``."""


@dataclass(frozen=True)
class FunctionRef:
    """``!function module.attr`` written in ``yaml_dir``: a callable resolved on demand."""

    dotted_name: str
    yaml_dir: Path

    def __str__(self) -> str:
        return f"{FUNCTION_TAG}{self.dotted_name}"

    def resolve(self) -> Callable[..., Any]:
        """Import the function: ``module.py`` beside the YAML first, else an importable module."""
        module_name, _, attr = self.dotted_name.rpartition(".")
        if not module_name:
            raise UsageError(f"!function {self.dotted_name!r} in {self.yaml_dir}: write it as module.function")
        local_file = self.yaml_dir / (module_name.replace(".", "/") + ".py")
        if local_file.is_file():
            module = _load_file_module(local_file)
            where = str(local_file)
        else:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                if module_name.split(".")[0] not in sys.modules:
                    raise UsageError(
                        f"!function {self.dotted_name} in {self.yaml_dir}: no {local_file.name} beside the YAML "
                        f"and no importable module {module_name!r} ({exc})", cause="task code not found"
                    ) from None
                raise _import_failure(f"!function {self.dotted_name} in {self.yaml_dir}", exc) from None
            except Exception as exc:  # the module exists but fails while importing
                raise _import_failure(f"!function {self.dotted_name} in {self.yaml_dir}", exc) from None
            where = f"module {module_name}"
        function = getattr(module, attr, None)
        if not callable(function):
            raise UsageError(f"!function {self.dotted_name} in {self.yaml_dir}: {where} has no function {attr!r}",
                         cause="task code lacks a named function")
        return function


def _load_file_module(path: Path) -> Any:
    """Import a task's ``utils.py`` under a name unique to its folder (folders may share file names)."""
    unique_name = f"vrp_bench_task_code.{abs(hash(str(path.resolve())))}_{path.stem}"
    if unique_name in sys.modules:
        return sys.modules[unique_name]
    spec = importlib.util.spec_from_file_location(unique_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[unique_name]
        raise _import_failure(str(path), exc) from None
    return module


def _import_failure(where: str, exc: Exception) -> UsageError:
    """A one-line error for task code that fails while importing; its cause names the missing package, if any."""
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    cause = f"task code needs package {missing.split('.')[0]}" if missing else f"task code fails on import ({type(exc).__name__})"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return UsageError(f"{where}: importing task code failed: {type(exc).__name__}: {first_line}", cause=cause)


class TaskYamlLoader(yaml.SafeLoader):
    """SafeLoader plus ``!function``; never registered on PyYAML's shared loaders."""

    yaml_dir: Path = Path(".")


def _construct_function(loader: TaskYamlLoader, node: yaml.Node) -> FunctionRef:
    return FunctionRef(loader.construct_scalar(node), loader.yaml_dir)  # type: ignore[arg-type]


TaskYamlLoader.add_constructor("!function", _construct_function)


def parse_yaml_file(path: Path) -> dict[str, Any]:
    """Parse one YAML file (no includes); errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read task YAML ({exc.strerror})") from None
    loader = TaskYamlLoader(text)
    loader.yaml_dir = path.parent
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}{line}: malformed YAML: {exc.problem or exc.context}", cause="malformed YAML") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: malformed YAML: {exc}", cause="malformed YAML") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a task YAML must be a mapping of keys, found {type(data).__name__}",
                         cause="malformed YAML")
    return data


def load_task_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse ``path`` and merge its ``include`` chain (the first of a list wins; the file itself wins over all)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise UsageError(f"{path}: include cycle: {chain}", cause="include cycle")
    return merge_includes(parse_yaml_file(path), path, (*_seen, path))


def merge_includes(config: dict[str, Any], path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``config`` (written in the file ``path``: a whole file, or a task defined inline in a group) with its
    ``include`` files merged under it: of a list, the first include wins (lmms-eval merges the list from its last entry
    to its first), and ``config``'s own keys win over every include."""
    config = dict(config)
    includes = config.pop("include", None)
    if includes is None:
        return config
    merged: dict[str, Any] = {}
    for include in reversed([includes] if isinstance(includes, str) else list(includes)):
        include_path = Path(include)
        if not include_path.is_absolute():
            include_path = path.parent / include_path
        if not include_path.is_file():
            raise UsageError(f"{path}: include {include!r} not found (looked for {include_path})", cause="missing include")
        merged.update(load_task_yaml(include_path, _seen or (path.resolve(),)))
    merged.update(config)
    return merged

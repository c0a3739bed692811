"""The task index: every task, group and tag found in the shipped ``tasks/`` and ``--include_path``.

Selecting tasks works as in lmms-eval: names, comma lists, groups (a YAML with ``group`` and a
``task`` list), tags, shell wildcards and ``all``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.api.registry import suggest
from vrp_bench.api.task import LOCAL_BUILDERS, Task, TaskConfig
from vrp_bench.api.yaml_dialect import load_task_yaml


def builtin_tasks_dir() -> Path:
    """The folder of the tasks shipped with the package (the repository's ``tasks/``)."""
    import vrp_bench.tasks

    return Path(vrp_bench.tasks.__file__).parent


@dataclass
class TaskEntry:
    """One indexed task: its merged YAML and where it came from."""

    name: str
    yaml_path: Path
    raw: dict[str, Any]

    @property
    def data_offline(self) -> str:
        """Whether the task's data is on this machine: "yes", or "no (reason)"."""
        dataset_path = self.raw.get("dataset_path")
        kwargs = self.raw.get("dataset_kwargs") or {}
        base = self.yaml_path.parent
        if dataset_path in LOCAL_BUILDERS:
            files = kwargs.get("data_files")
            paths = list(_flatten(files))
            missing = [p for p in paths if "://" not in p and not (base / p).exists()]
            if not paths:
                return "no (no data_files)"
            return "yes" if not missing else f"no (missing {missing[0]})"
        if isinstance(dataset_path, str) and (base / dataset_path).exists():
            return "yes"
        return "no (hub dataset)"


def _flatten(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v)


class TaskIndex:
    """All tasks, groups and tags under the given folders (the shipped tasks always included)."""

    def __init__(self, include_paths: Iterable[Path] = ()) -> None:
        self.tasks: dict[str, TaskEntry] = {}
        self.groups: dict[str, list[str]] = {}
        self.group_sources: dict[str, Path] = {}
        folders: list[Path] = []
        for folder in [builtin_tasks_dir(), *(Path(p) for p in include_paths)]:
            if not folder.is_dir():
                raise UsageError(f"--include_path {folder} is not a folder")
            if folder.resolve() not in folders:
                folders.append(folder.resolve())
        for folder in folders:
            for path in sorted(folder.rglob("*.yaml")) + sorted(folder.rglob("*.yml")):
                self._add_file(path)
        for group, members in self.groups.items():
            for member in members:
                if member not in self.tasks and member not in self.groups:
                    raise UsageError(
                        f"{self.group_sources[group]}: group {group!r} lists unknown task {member!r}"
                        f"{suggest(member, list(self.tasks))}"
                    )

    def _add_file(self, path: Path) -> None:
        raw = load_task_yaml(path)
        if "group" in raw and isinstance(raw.get("task"), list):
            name = str(raw["group"])
            members = raw["task"]
            if not all(isinstance(m, str) for m in members):
                raise UsageError(f"{path}: group {name!r}: inline task definitions are not supported yet; list task names")
            if name in self.groups and name not in self.group_sources:  # already used as a tag
                raise UsageError(f"{path}: group {name!r} is also used as a tag; rename one")
            self._claim(name, path)
            self.groups[name] = list(members)
            self.group_sources[name] = path
            return
        if not isinstance(raw.get("task"), str):
            return  # a template meant for `include`, not a task
        name = raw["task"]
        self._claim(name, path)
        tags = raw.get("tag") or []
        entry = TaskEntry(name, path, raw)
        self.tasks[name] = entry
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag in self.tasks or tag in self.group_sources:
                raise UsageError(f"{path}: tag {tag!r} is already the name of a task or group; rename the tag")
            self.groups.setdefault(tag, []).append(name)

    def _claim(self, name: str, path: Path) -> None:
        """Reserve a task or group name; the same name defined twice is an error, never a silent override."""
        owner = self.tasks[name].yaml_path if name in self.tasks else self.group_sources.get(name)
        if owner is not None:
            raise UsageError(f"task or group {name!r} is defined twice: {owner} and {path}; rename one")

    def expand(self, name: str) -> list[str]:
        """Task names a group (recursively) or task name stands for."""
        if name in self.tasks:
            return [name]
        return [task for member in self.groups[name] for task in self.expand(member)]

    def select(self, spec: str) -> tuple[list[str], list[str], set[str]]:
        """Resolve ``--tasks`` into (task names in order, groups named or matched, optional tasks).

        Tasks reached only through ``all`` or a wildcard are optional: one whose data cannot be
        loaded is skipped with its reason. A task named directly or through a group must load.
        """
        words = [w.strip() for w in spec.split(",") if w.strip()]
        if not words:
            raise UsageError("--tasks is empty; name tasks, groups, wildcards or `all` (see `vrp-bench tasks`)")
        tasks: list[str] = []
        groups: list[str] = []
        required: set[str] = set()
        for word in words:
            if word == "all":
                matched = sorted(self.tasks)
            elif any(ch in word for ch in "*?["):
                matched = sorted(fnmatch.filter([*self.tasks, *self.groups], word))
                if not matched:
                    raise UsageError(f"--tasks pattern {word!r} matches no task or group")
            elif word in self.tasks or word in self.groups:
                matched = [word]
            else:
                hint = suggest(word, [*self.tasks, *self.groups])
                raise UsageError(f"unknown task {word!r}{hint}; run `vrp-bench tasks` to list them")
            for name in matched:
                if name in self.groups and name not in groups:
                    groups.append(name)
                expanded = self.expand(name)
                tasks.extend(t for t in expanded if t not in tasks)
                if matched == [word]:
                    required.update(expanded)
        return tasks, groups, set(tasks) - required

    def build(self, name: str) -> Task:
        """The task object of an indexed task (config validated, task code imported; data not loaded)."""
        entry = self.tasks[name]
        return Task(TaskConfig.from_yaml_dict(entry.raw, entry.yaml_path))

    def groups_of(self, task: str) -> list[str]:
        """Groups and tags that list ``task`` directly."""
        return sorted(g for g, members in self.groups.items() if task in members)

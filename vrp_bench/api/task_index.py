"""The task index: every task, group and tag found in the shipped ``tasks/`` and ``--include_path``.

Selecting tasks works as in lmms-eval: names, comma lists, groups (a YAML with ``group`` and a
``task`` list), tags, shell wildcards and ``all``.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.api.registry import suggest
from vrp_bench.api.task import LOCAL_BUILDERS, Task, TaskConfig
from vrp_bench.api.yaml_dialect import FunctionRef, load_task_yaml, merge_includes

log = logging.getLogger("vrp_bench")


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

    def data_offline(self, dataset_path: Any = None) -> str:
        """Whether the task's data is on this machine: "yes", or "no (reason)". ``dataset_path``: where it is
        read from instead of its YAML's (``TaskIndex.dataset_paths``)."""
        dataset_path = dataset_path or self.raw.get("dataset_path")
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


GROUP_ONLY_KEYS = frozenset({"group", "task", "group_alias", "aggregate_metric_list", "metadata"})
"""The keys of an lmms-eval group config (anything else would be applied to every member task)."""


UNREADABLE = frozenset({"malformed YAML", "unreadable YAML", "missing include", "include cycle"})
"""Causes that hide a file's task names (so an unknown name may be one of them)."""


@dataclass(frozen=True)
class IndexProblem:
    """A YAML file (or one definition in it) the index could not use, and why."""

    path: Path
    cause: str
    """A short category, for counting (``UsageError.cause``)."""
    message: str


class TaskIndex:
    """All tasks, groups and tags under the given folders (the shipped tasks always included).

    Like lmms-eval, indexing never stops at one bad file: a file that cannot be read, a Python-class task, a
    group listing a task that does not exist are recorded in ``problems`` (and ``unusable``, by name) and the
    rest is indexed; a name defined twice keeps its first definition, with a warning naming both files.
    ``dataset_paths`` redirects datasets (a YAML's ``dataset_path`` -> a local folder or file) without editing
    the YAML, e.g. to run lmms-eval's own tasks on local copies of their hub datasets.
    """

    def __init__(self, include_paths: Iterable[Path] = (), dataset_paths: Mapping[str, str] | None = None) -> None:
        self.tasks: dict[str, TaskEntry] = {}
        self.groups: dict[str, list[str]] = {}
        self.group_sources: dict[str, Path] = {}
        self.problems: list[IndexProblem] = []
        self.unusable: dict[str, str] = {}
        """Names defined in a file that could not be used -> why (so selecting one says why, not "unknown")."""
        self.dataset_paths = dict(dataset_paths or {})
        self.n_files = 0
        folders: list[Path] = []
        for folder in [builtin_tasks_dir(), *(Path(p) for p in include_paths)]:
            if not folder.is_dir():
                raise UsageError(f"--include_path {folder} is not a folder")
            if folder.resolve() not in folders:
                folders.append(folder.resolve())
        for folder in folders:
            for path in sorted(folder.rglob("*.yaml")) + sorted(folder.rglob("*.yml")):
                if "__pycache__" not in path.parts and ".ipynb_checkpoints" not in path.parts:
                    self.n_files += 1
                    self._add_file(path)
        self._drop_broken_groups()

    def _problem(self, path: Path, cause: str, message: str, name: str | None = None) -> None:
        if not path.is_relative_to(builtin_tasks_dir()):
            log.warning("%s", message)
        self.problems.append(IndexProblem(path, cause, message))
        if name is not None and name not in self.tasks and name not in self.groups:
            self.unusable.setdefault(name, message)

    def _add_file(self, path: Path) -> None:
        try:
            raw = load_task_yaml(path)
        except UsageError as exc:
            self._problem(path, exc.cause or "unreadable YAML", str(exc))
            return
        if "class" in raw:
            name = str(raw.get("task"))
            self._problem(path, "Python-class task", f"{path}: task {name!r} is a Python class ({raw['class'] if isinstance(raw['class'], FunctionRef) else repr(raw['class'])}); "
                          "VRP-Bench runs YAML-defined tasks only", name)
        elif "group" in raw and isinstance(raw.get("task"), list):
            self._add_group(raw, path)
        elif isinstance(raw.get("task"), str):
            self._add_task(raw["task"], path, raw)
        # else: a template meant for `include`, not a task

    def _add_group(self, config: dict[str, Any], path: Path) -> str | None:
        """Index a group config (and the groups and tasks it defines inline); returns its name, or None."""
        name = str(config["group"])
        members: list[str] = []
        for member in config["task"]:
            if isinstance(member, str):
                members.append(member)
            elif isinstance(member, dict) and "group" in member and isinstance(member.get("task"), list):
                nested = self._add_group(member, path)
                if nested is not None:
                    members.append(nested)
            elif isinstance(member, dict) and isinstance(member.get("task"), str):
                task = member["task"]
                if task in self.tasks:
                    self._problem(path, "group overrides a task's keys",
                                  f"{path}: group {name!r} redefines keys of task {task!r}; VRP-Bench runs tasks as their "
                                  "own YAML defines them (write the variant as a task with its own name)", name)
                    return None
                try:
                    self._add_task(task, path, merge_includes(member, path))
                except UsageError as exc:
                    self._problem(path, exc.cause or "unreadable YAML", str(exc), name)
                    return None
                members.append(task)
            else:
                self._problem(path, "malformed group", f"{path}: group {name!r} lists {member!r}: not a task name, "
                              "a task config or a group config", name)
                return None
        ignored = sorted(k for k in config if k not in GROUP_ONLY_KEYS)
        if ignored:
            log.warning("%s: group %r: key %r is ignored (VRP-Bench applies no group-level task overrides)",
                        path, name, ignored[0])
        if not self._claim(name, path):
            return None
        if name in self.groups:  # until now a tag: lmms-eval lets the group replace it
            log.warning("%s: group %r replaces the tag of the same name", path, name)
        self.groups[name] = members
        self.group_sources[name] = path
        return name

    def _add_task(self, name: str, path: Path, raw: dict[str, Any]) -> None:
        if not self._claim(name, path):
            return
        self.tasks[name] = TaskEntry(name, path, raw)
        tags = raw.get("tag") or []
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag in self.tasks or tag in self.group_sources:
                log.warning("%s: tag %r is already the name of a task or group; the tag is not registered", path, tag)
                continue
            self.groups.setdefault(tag, []).append(name)

    def _claim(self, name: str, path: Path) -> bool:
        """Reserve a task or group name; a name defined twice keeps its first definition (as lmms-eval), with
        a warning naming both files."""
        owner = self.tasks[name].yaml_path if name in self.tasks else self.group_sources.get(name)
        if owner is None:
            return True
        log.warning("task or group %r is defined twice: %s (used) and %s (ignored)", name, owner, path)
        self.problems.append(IndexProblem(path, "name defined twice", f"{path}: {name!r} is already defined in {owner}"))
        return False

    def _drop_broken_groups(self) -> None:
        """Remove groups that list a task or group that does not exist (repeatedly: a group of a dropped group
        goes too), each recorded as a problem."""
        while True:
            broken = {group: member for group, members in self.groups.items() for member in members
                      if member not in self.tasks and member not in self.groups}
            if not broken:
                return
            for group, member in broken.items():
                source = self.group_sources.get(group, Path("(tag)"))
                self._problem(source, "group lists an unknown task", f"{source}: group {group!r} lists unknown task "
                              f"{member!r}{suggest(member, list(self.tasks))}")
                self.unusable[group] = self.problems[-1].message
                del self.groups[group]
                self.group_sources.pop(group, None)

    def expand(self, name: str) -> list[str]:
        """Task names a group (recursively) or task name stands for."""
        if name in self.tasks:
            return [name]
        return [task for member in self.groups[name] for task in self.expand(member)]

    def select(self, spec: str) -> tuple[list[str], list[str], set[str]]:
        """Resolve ``--tasks`` into (task names in order, groups named or matched, optional tasks).

        Tasks reached only through ``all`` or a wildcard are optional: one whose data is not on this machine (a
        hub dataset) or cannot be loaded is skipped with its reason, so ``all`` never downloads. A task named
        directly or through a group must load (and may download).
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
            elif word in self.unusable:
                raise UsageError(self.unusable[word])
            else:
                hint = suggest(word, [*self.tasks, *self.groups])
                unread = [p for p in self.problems if p.cause in UNREADABLE]
                if unread:
                    hint += f" ({len(unread)} task file(s) could not be read, e.g. {unread[0].message})"
                raise UsageError(f"unknown task {word!r}{hint}; run `vrp-bench tasks` to list them")
            for name in matched:
                if name in self.groups and name not in groups:
                    groups.append(name)
                expanded = self.expand(name)
                tasks.extend(t for t in expanded if t not in tasks)
                if matched == [word]:
                    required.update(expanded)
        return tasks, groups, set(tasks) - required

    def data_offline(self, name: str) -> str:
        """Whether task ``name``'s data is on this machine (after ``dataset_paths``): "yes" or "no (reason)"."""
        entry = self.tasks[name]
        return entry.data_offline(self.dataset_paths.get(entry.raw.get("dataset_path")))

    def build(self, name: str) -> Task:
        """The task object of an indexed task (config validated, task code imported; data not loaded), its
        dataset redirected when ``dataset_paths`` names its ``dataset_path``."""
        entry = self.tasks[name]
        raw = entry.raw
        if raw.get("dataset_path") in self.dataset_paths:
            raw = {**raw, "dataset_path": self.dataset_paths[raw["dataset_path"]]}
        return Task(TaskConfig.from_yaml_dict(raw, entry.yaml_path))

    def check(self, names: Iterable[str] | None = None) -> dict[str, UsageError]:
        """Build every task (or ``names``) as a run would, without loading data: the tasks that cannot be built,
        with the reason (its ``cause`` says which kind)."""
        failures = {}
        for name in sorted(self.tasks) if names is None else names:
            try:
                self.build(name)
            except UsageError as exc:
                failures[name] = exc
        return failures

    def problem_counts(self) -> dict[str, int]:
        """Files (or definitions) not indexed, by cause, most frequent first."""
        return dict(Counter(p.cause for p in self.problems).most_common())

    def groups_of(self, task: str) -> list[str]:
        """Groups and tags that list ``task`` directly."""
        return sorted(g for g, members in self.groups.items() if task in members)

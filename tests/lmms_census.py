"""Build every task YAML of the installed lmms-eval package with lmms-eval's own loader and with VRP-Bench's.

Run as ``python tests/lmms_census.py lmms|vrp``; prints JSON: {"built": [task names], "failed": {name: cause}}.
Each side runs in its own process: building imports ~1,700 task modules, some of which change global state.
"lmms-eval builds a task" means what its ``TaskManager`` does before loading data: the YAML read with
``!function`` resolved (``load_yaml_config(mode="full")``) and ``TaskConfig(**config)``; for VRP-Bench,
``TaskIndex.build`` (``TaskConfig.from_yaml_dict`` + ``Task``: task code imported, metrics and filters checked).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from pathlib import Path


def lmms_eval_census() -> dict:
    from loguru import logger

    from lmms_eval import utils
    from lmms_eval.api.task import TaskConfig
    from lmms_eval.tasks import TaskManager

    logger.remove()
    built, failed = [], {}
    for name, info in sorted(TaskManager(verbosity="ERROR").task_index.items()):
        if info["type"] != "task":
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                TaskConfig(**utils.load_yaml_config(info["yaml_path"], mode="full"))
            built.append(name)
        except BaseException as exc:  # noqa: BLE001 - task code raises anything; each is one failed task
            failed[name] = type(exc).__name__
    return {"built": built, "failed": failed}


def vrp_census() -> dict:
    import lmms_eval

    from vrp_bench.api.task_index import TaskIndex

    logging.disable(logging.WARNING)
    folder = Path(lmms_eval.__file__).parent / "tasks"
    index = TaskIndex([folder])
    names = [name for name, entry in index.tasks.items() if entry.yaml_path.is_relative_to(folder)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        failures = index.check(names)
    return {"built": sorted(set(names) - set(failures)), "failed": {n: e.cause or str(e) for n, e in failures.items()},
            "problems": index.problem_counts()}


if __name__ == "__main__":
    print(json.dumps(lmms_eval_census() if sys.argv[1] == "lmms" else vrp_census()))

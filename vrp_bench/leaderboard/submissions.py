"""The board's submissions as the build reads them: every run under ``<root>/submissions/``.

Each folder ``<root>/submissions/<folder>/`` holds the files of one or more runs of one model (``vrp-bench
leaderboard submit`` places a run there; more seeds of the same checkpoint share the folder), each run a
``*_results.json`` with the files that share its stem (``report.run_files``). The folder name is a slug, safe in
a path; the name shown is the report's ``model.name``, which can be any text (the board escapes it).

Reading one run: the report (``saved_run.read_report``: JSON without NaN, valid against the schema), its
per-sample and ablation records (``saved_run.load_run``), and the sha256 of every file the report lists that
lies beside it (``saved_run.check_listed_files``: a file edited after the run is refused). A run that fails any of
these keeps its one-line ``problem`` and is listed on the board as not ranked, never silently dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.report.run_files import RESULTS_SUFFIX, RunFiles
from vrp_bench.report.saved_run import SavedRun, check_listed_files, load_run

SUBMISSIONS = "submissions"
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def slug(text: str) -> str:
    """``text`` as a file name that is safe in a path and a URL: runs of other characters than letters, digits
    and ``._+-`` become ``-``, and it never starts with ``.`` or ``-`` (nor is empty)."""
    cleaned = UNSAFE.sub("-", text).lstrip(".-")
    return cleaned or "run"


@dataclass
class Submission:
    """One submitted run: where it lies, its page name (``slug``), the run as read, or why it could not be read."""

    results_path: Path
    slug: str
    run: SavedRun | None
    problem: str | None = None

    @property
    def folder(self) -> Path:
        return self.results_path.parent

    @property
    def report(self) -> dict[str, Any]:
        assert self.run is not None, "a submission with a problem has no report"
        return self.run.report

    @property
    def name(self) -> str:
        """The model's name as its report records it (the folder name when the report cannot be read)."""
        return self.report["model"]["name"] if self.run is not None else self.folder.name

    @property
    def seed(self) -> int | None:
        return self.report["config"].get("seed") if self.run is not None else None

    @property
    def location(self) -> str:
        """The results file relative to the board's root (``submissions/<folder>/<file>``)."""
        return f"{SUBMISSIONS}/{self.folder.name}/{self.results_path.name}"

    def label(self, names: list[str]) -> str:
        """The run's name, with its seed when ``names`` (the names shown beside it) holds the name again."""
        return f"{self.name} (seed {self.seed})" if names.count(self.name) > 1 else self.name


def read_submission(results_path: Path, page: str, root: Path) -> Submission:
    """The run of ``results_path`` (module docstring); a ``Submission`` with ``problem`` set if it fails a check
    (paths in it relative to the board's ``root``, so the board reads the same on every machine)."""
    try:
        run = load_run(results_path)
        check_listed_files(results_path, run.report)
    except UsageError as exc:
        return Submission(results_path, page, None, str(exc).replace(f"{root}{os.sep}", ""))
    return Submission(results_path, page, run)


def read_submissions(root: Path) -> list[Submission]:
    """Every run under ``<root>/submissions/``, in folder then file order (none when the folder is missing or
    empty; a folder without a report is one ``Submission`` with its problem). Page names are the folder's slug,
    followed by the run's stem when the folder holds several runs."""
    folder = root / SUBMISSIONS
    found: list[Submission] = []
    pages: set[str] = set()
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() \
        else []
    for model_folder in folders:
        runs = sorted(model_folder.glob(f"*{RESULTS_SUFFIX}"))
        if not runs:
            found.append(Submission(model_folder / f"*{RESULTS_SUFFIX}", slug(model_folder.name), None,
                                    f"{model_folder.name}/ holds no *{RESULTS_SUFFIX}"))
        for results_path in runs:
            stem = RunFiles.of(results_path).stem
            page = slug(model_folder.name if len(runs) == 1 else f"{model_folder.name}-{stem}")
            while page in pages:  # two folder names that differ only in unsafe characters
                page += "_"
            pages.add(page)
            found.append(read_submission(results_path, page, root))
    return found

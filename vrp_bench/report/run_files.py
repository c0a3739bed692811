"""The layout of a run folder, for writing and reading alike: the one place its file names are built and parsed.

A run writes ``<output_path>/<model>/`` files that share a UTC-timestamp stem:

- ``<stem>_results.json``: the report;
- ``<stem>_samples_<task>.jsonl``: per-sample records (``log_samples``);
- ``<stem>_ablation_<task>.jsonl``: after an ablation, one record per doc and condition (``log_samples``);
- ``<stem>_traces_<task>.npz``: hidden states and attention maps (``save_traces``);
- ``<stem>_probes_<position>.npz`` / ``.json``: the trained probes of a hidden-state position.

The report's ``files`` holds the "sha256:<hex>" of each file written beside it, by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vrp_bench.api.errors import UsageError

RESULTS_SUFFIX = "_results.json"
STAMP_FORMAT = "%Y-%m-%dT%H-%M-%S.%f"
TRACES_INFIX = "_traces_"
TRACES_SUFFIX = ".npz"


@dataclass(frozen=True)
class RunFiles:
    """The files of one run: ``folder`` and the ``stem`` every file name starts with."""

    folder: Path
    stem: str

    @classmethod
    def for_run(cls, output_path: Path | str, model: str, started: float) -> RunFiles:
        """Where a run of ``model`` that started at ``started`` (a Unix time) writes under ``output_path``."""
        return cls(Path(output_path) / model, datetime.fromtimestamp(started, timezone.utc).strftime(STAMP_FORMAT))

    @classmethod
    def of(cls, results_path: Path) -> RunFiles:
        """The run a results file belongs to (its siblings share the stem before ``_results.json``)."""
        return cls(results_path.parent, results_path.name.removesuffix(RESULTS_SUFFIX))

    @staticmethod
    def find_results(path: Path) -> Path:
        """The results file named by ``path``: the file itself, or the only ``*_results.json`` in a folder."""
        if path.is_file():
            return RunFiles.not_samples(path)
        if not path.is_dir():
            raise UsageError(f"{path} is neither a results file nor a folder")
        candidates = sorted(path.glob(f"*{RESULTS_SUFFIX}"))
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise UsageError(f"{path} must hold exactly one *{RESULTS_SUFFIX} (found {found}); name the file")
        return candidates[0]

    @staticmethod
    def not_samples(path: Path) -> Path:
        """``path``, unless it is a JSONL file of per-sample records given where a results file is meant."""
        if path.suffix == ".jsonl":
            raise UsageError(f"{path} holds per-sample records, not a run's results: give its *{RESULTS_SUFFIX} or "
                             "its folder")
        return path

    @property
    def results(self) -> Path:
        return self.folder / f"{self.stem}{RESULTS_SUFFIX}"

    def samples(self, task: str) -> Path:
        return self.folder / f"{self.stem}_samples_{task}.jsonl"

    def ablation(self, task: str) -> Path:
        return self.folder / f"{self.stem}_ablation_{task}.jsonl"

    def traces(self, task: str) -> Path:
        return self.folder / f"{self.stem}{TRACES_INFIX}{task}{TRACES_SUFFIX}"

    def probes(self, position: str) -> Path:
        """The stem path of a position's probe files (``scoring.probes.encode_probes`` adds .npz and .json)."""
        return self.folder / f"{self.stem}_probes_{position}"

    def saved_traces(self) -> list[Path]:
        """Every traces file of this run in its folder (whichever tasks they name), sorted."""
        return sorted(self.folder.glob(f"{self.stem}{TRACES_INFIX}*{TRACES_SUFFIX}"))

    @staticmethod
    def traces_task(path: Path) -> str:
        """The task a traces file (``<stem>_traces_<task>.npz``) holds; task names may contain "_"."""
        return path.name.removesuffix(TRACES_SUFFIX).split(TRACES_INFIX, 1)[1]

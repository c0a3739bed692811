"""A non-editable install must carry every subpackage and the shipped tasks with their data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_contains_packages_tasks_and_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("vrp_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in (REPO / "vrp_bench").rglob("__init__.py"):
        assert f"{package.relative_to(REPO).as_posix()}" in names, f"{package} is not packaged (pyproject packages)"
    assert "vrp_bench/report/schema/vrp-report-3.json" in names
    shipped = [p for p in (REPO / "tasks").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in shipped:
        assert f"vrp_bench/tasks/{path.relative_to(REPO / 'tasks').as_posix()}" in names, f"{path} is not packaged"

"""``vrp-bench leaderboard build``: the board's files from its submissions, written all at once.

``build_leaderboard(root)`` reads every run under ``<root>/submissions/`` (``submissions``), ranks the comparable
ones (``ranking``) and writes ``<root>/LEADERBOARD.md`` (``markdown``) and the static site ``<root>/site/``
(``site``) with one ``api.files.write_files_atomically`` call: either every file is the new board or none changed.
``site/`` is generated: files in it that the new board does not have (the page of a removed run) are deleted after
the write. With no submissions (the folder empty or missing) the board says so.
"""

from __future__ import annotations

from pathlib import Path

from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import write_files_atomically
from vrp_bench.leaderboard.markdown import leaderboard_markdown
from vrp_bench.leaderboard.ranking import (
    RANK_RESAMPLES,
    RANK_SEED,
    Board,
    describe,
    rank_board,
)
from vrp_bench.leaderboard.site import site_files
from vrp_bench.leaderboard.submissions import read_submissions

MARKDOWN = "LEADERBOARD.md"
SITE = "site"


def build_leaderboard(root: Path, resamples: int = RANK_RESAMPLES, seed: int = RANK_SEED) -> tuple[Board, list[Path]]:
    """Build the board at ``root`` (module docstring); the board and the written paths (the Markdown first)."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: run from the repository root or pass --root")
    board = rank_board(read_submissions(root), resamples, seed)
    others = [describe(submission) for submission, _ in board.not_comparable]
    contents: dict[Path, str | bytes] = {root / MARKDOWN: leaderboard_markdown(board)}
    contents.update({root / SITE / relative: text for relative, text in site_files(board, others).items()})
    write_files_atomically(contents)
    site = root / SITE
    for stale in sorted(p for p in site.rglob("*") if p.is_file() and p not in contents):
        stale.unlink()
    for folder in sorted((p for p in site.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return board, list(contents)

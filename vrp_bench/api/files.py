"""Atomic file output: a file appears complete or not at all.

Every writer of the package goes through here, so a failed or interrupted command never leaves a
half-written report, sample log, probe or dataset file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vrp_bench.api.errors import UsageError


def _temporary_sibling(path: Path) -> tuple[int, str]:
    """(open handle, name) of a new temporary file beside ``path``, with the permissions a plain ``open`` would give
    it (mkstemp makes it private: 0600), so the file it becomes is as readable as any other the user writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(name, 0o666 & ~current_umask())
    return handle, name


def current_umask() -> int:
    """The process's umask (the permission bits a new file or folder does not get)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; moved onto ``path`` only if the block succeeds."""
    handle, name = _temporary_sibling(path)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _encoded(content: str | bytes) -> bytes:
    """The bytes written for ``content``: text as UTF-8, bytes as they are."""
    return content.encode("utf-8") if isinstance(content, str) else content


def content_hash(content: str | bytes) -> str:
    """The "sha256:<hex>" of the bytes ``write_files_atomically`` writes for ``content``."""
    return f"sha256:{hashlib.sha256(_encoded(content)).hexdigest()}"


def write_files_atomically(files: dict[Path, str | bytes]) -> None:
    """Write every file (text as UTF-8, or bytes) to a temporary sibling, then rename them all into place.

    An OS error (full disk, no permission) is a one-line ``UsageError`` and no target file is touched.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content in files.items():
            handle, temporary = _temporary_sibling(path)
            staged.append((Path(temporary), path))
            with os.fdopen(handle, "wb") as stream:
                stream.write(_encoded(content))
                stream.flush()
                os.fsync(stream.fileno())  # on disk before the rename: a crash leaves the old file or the new one
        for temporary, path in staged:
            os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(f"cannot write output: {exc.strerror or exc} ({exc.filename or ''})") from None
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


@contextmanager
def removed_if_left_empty(folders: list[Path]) -> Iterator[None]:
    """Run the block; if it fails (or is interrupted), remove every folder it created among ``folders`` and their
    parents, and their subfolders, that it left empty: a failed run leaves no empty output folder behind (a folder
    that holds something, such as finished samples in a cache, stays)."""
    created: list[Path] = []
    for folder in folders:
        path = Path(folder).absolute()
        while not path.exists() and path not in created:
            created.append(path)
            path = path.parent
    try:
        yield
    except BaseException:
        for top in (path for path in created if path.parent not in created):
            for folder, _, _ in os.walk(top, topdown=False):  # subfolders before their parent
                with contextlib.suppress(OSError):  # not empty: it stays
                    Path(folder).rmdir()
        raise

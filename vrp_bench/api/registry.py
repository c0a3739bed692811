"""Name -> object registries with close-match suggestions for typos.

Models, metrics and aggregations are plugged in through registries, so adding one is a
decorated definition, never an edit of the code that uses it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from vrp_bench.api.errors import UsageError

T = TypeVar("T")


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """A " (did you mean ...?)" hint listing the closest choices, or "" when none is close."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


class Registry(Generic[T]):
    """A named collection of objects of one kind (``kind`` is used in error messages; ``listing`` is the command
    that lists the entries, when there is one: otherwise an unknown name's error lists them itself)."""

    def __init__(self, kind: str, listing: str | None = None) -> None:
        self.kind = kind
        self.listing = listing
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``; a duplicate name is an error."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    @contextmanager
    def registered(self, name: str, obj: T) -> Iterator[T]:
        """``obj`` registered under ``name`` for the duration of a ``with`` block (tests, notebooks)."""
        self.register(name)(obj)
        try:
            yield obj
        finally:
            del self._entries[name]

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name is a ``UsageError`` with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.unknown(name, list(self._entries)) from None

    def unknown(self, name: str, known: list[str]) -> UsageError:
        """The error for ``name``, which is none of ``known`` (the names it is suggested from)."""
        hint = suggest(name, known)
        where = f"run `{self.listing}` to list them" if self.listing else f"known: {', '.join(sorted(known)) or 'none'}"
        return UsageError(f"unknown {self.kind} {name!r}{hint}; {where}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        """Entries sorted by name."""
        return sorted(self._entries.items())

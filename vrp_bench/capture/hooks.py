"""Adding a capture's hooks all or none, and taking them off again."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def register_all(registrations: Iterable[Callable[[], Any]]) -> list[Any]:
    """Call each registration (a ``module.register_forward_*hook`` call) and return their handles; if one raises,
    the hooks already added are removed first."""
    handles: list[Any] = []
    try:
        for register in registrations:
            handles.append(register())
    except BaseException:
        remove_all(handles)
        raise
    return handles


def remove_all(handles: Iterable[Any]) -> None:
    """Remove every hook of ``handles``."""
    for handle in handles:
        handle.remove()

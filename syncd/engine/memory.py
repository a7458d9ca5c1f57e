"""Handing memory a cycle has freed back to the operating system.

A cycle of a large school allocates tens of megabytes (answers, records, diffs) and frees them
when it ends, but glibc keeps freed heap memory for reuse, so an idle process of many schools
holds the peak of every school's last cycle. ``malloc_trim(0)`` returns what is free. It is
glibc's: elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_freed_memory"]


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the heap's free memory back (after a cycle; cheap next to the cycle itself)."""
    if _TRIM is not None:
        _TRIM(0)

"""Handing freed memory back to the system after a burst (large decodes, thousands of connections)."""

from __future__ import annotations

import contextlib
import ctypes


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc keeps them otherwise); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)

"""Keeping Python's cyclic garbage collector off the objects that live as long as the service.

TensorFlow and the loaded SavedModels hold some 300,000 Python objects. A full collection (the oldest
generation) walks every one of them, about 150 ms on two shared cores with the GIL held, so every request in
flight waits behind it; the request path allocates enough to start one every few thousand requests, which is
the long tail of latency under load. So once models are loaded, everything alive is frozen: moved to a
permanent generation that collections skip. Dropping a version unfreezes, collects its cycles once, and
freezes what is left.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Exempt every object alive now from future collections (after start-up and after each load)."""
    gc.collect()
    gc.freeze()


def release_unloaded() -> None:
    """Let a collection free what a dropped version left in cycles, then freeze the rest again."""
    gc.unfreeze()
    freeze_long_lived()

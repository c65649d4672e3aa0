"""Long-lived objects are kept out of the garbage collector's way, and a dropped version's cycles still go."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.serving import heap
from tests.conftest import make_settings, wait_until_ready


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_frozen_objects_are_skipped_by_full_collections_until_released() -> None:
    cycle = Cycle()
    alive = weakref.ref(cycle)
    heap.freeze_long_lived()

    del cycle
    gc.collect()
    assert alive() is not None  # frozen: a full collection no longer looks at it
    assert gc.get_freeze_count() > 0

    heap.release_unloaded()
    assert alive() is None  # unfrozen, collected, and the rest frozen again
    assert gc.get_freeze_count() > 0


def test_loading_a_version_freezes_what_it_left_alive(tiny_store: Path) -> None:
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings(tiny_store))) as client:
        wait_until_ready(client)
        frozen = gc.get_freeze_count()

    # TensorFlow, the SavedModel and the app: a full collection now walks a small part of the heap.
    assert frozen > 10 * len(gc.get_objects(generation=2))

"""Where the evaluation classifier is cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.datasets import default_cache_dir


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    assert default_cache_dir() == tmp_path / "genserve"

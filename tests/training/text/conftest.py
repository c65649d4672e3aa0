"""The tiny char-rnn, trained once per session on the procedural grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.text.tiny import train_tiny_text


@pytest.fixture(scope="session")
def tiny_text_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-store")
    return train_tiny_text(root / "model_store", root / "runs" / "grammar-rnn")

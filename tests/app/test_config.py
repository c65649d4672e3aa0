"""Settings come from GENSERVE_* variables, with checked limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSERVE_MODEL_STORE", "/srv/models")
    monkeypatch.setenv("GENSERVE_PORT", "9000")
    monkeypatch.setenv("GENSERVE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("GENSERVE_ALLOWED_BATCH_SIZES", "4,8,16")
    settings = Settings()
    assert settings.model_store == Path("/srv/models")
    assert (settings.host, settings.port) == ("127.0.0.1", 9000)
    assert settings.allowed_batch_sizes == [4, 8, 16]
    assert settings.warmup_batch_sizes == [4, 8, 16]


def test_defaults_match_the_documented_limits() -> None:
    settings = Settings()
    assert (settings.max_n, settings.port, settings.max_batch_size) == (64, 8000, 64)
    assert settings.warmup_batch_sizes == [1, 8, 64]


def test_allowed_batch_sizes_must_end_at_the_batch_size() -> None:
    with pytest.raises(ValidationError, match="GENSERVE_ALLOWED_BATCH_SIZES"):
        Settings(max_batch_size=32, allowed_batch_sizes=[8, 16])

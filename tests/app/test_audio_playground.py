"""The playground with a sound generator: its panel plays the WAV of POST /generate in an <audio> element, within
the page's content security policy. Needs headless Chromium, as the other browser tests do."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from bench.processes import running_service, service_env
from tests.app.audio_models import SAMPLE_RATE, SAMPLES, TONE, publish_tones
from tests.app.test_playground import Page, browser

__all__ = ["browser"]  # the browser fixture, shared with the other playground tests


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app` over the two tones, once both are loaded."""
    root = tmp_path_factory.mktemp("audio-playground")
    env = service_env(publish_tones(root / "model_store"), clean=True, default_model=TONE)
    with running_service(env, root / "server.log", timeout_s=120) as (_, base_url):
        deadline = time.monotonic() + 120
        while not all(m["latest_available"] for m in httpx.get(f"{base_url}/models").json()["models"]):
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.2)
        yield base_url


@pytest.fixture(scope="module")
def page(browser: webdriver.Chrome, server: str, tmp_path_factory: pytest.TempPathFactory) -> Page:
    browser.get(f"{server}/")
    return Page(browser, server, tmp_path_factory.mktemp("audio-playground-screenshots"))


def test_a_sound_generator_plays_its_clips_in_an_audio_element(page: Page) -> None:
    page.wait_for("return !document.getElementById('sound-panel').hidden;")
    assert page.script("return document.getElementById('images-panel').hidden;")
    assert page.script("return document.getElementById('walk-panel').hidden;")
    page.type_into("sound-count", "2")
    page.driver.find_element(By.ID, "sound-button").click()
    duration = page.wait_for(
        """const audio = document.getElementById("sound");
        return !audio.hidden && audio.readyState >= 1 && audio.duration;"""
    )
    gap_s = 0.25
    assert duration == pytest.approx(2 * SAMPLES / SAMPLE_RATE + gap_s, abs=0.01)
    assert "seeds 42-43" in page.text("sound-caption")
    assert page.console_errors() == []
    page.screenshot("sound")


def test_the_page_allows_blob_media_and_nothing_else_new(server: str) -> None:
    policy = httpx.get(f"{server}/playground").headers["content-security-policy"]
    assert "media-src 'self' blob:" in policy

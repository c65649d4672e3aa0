"""The playground page: served from the package, and driven in a real browser.

The browser tests run headless Chromium (Debian's `chromium` and `chromium-driver`) against one real server
process over the bundled models. Without chromium or chromedriver they are skipped, except under CI (the CI
variable set), which installs both and must run them. Each test leaves a screenshot in a temporary folder;
docs/images/playground.png, shown in the README, is written when it is missing: delete it and run these tests
to take it again.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.main import create_app
from app.server.api_keys import MISSING_KEY
from bench.processes import running_service, service_env
from tests.app.helpers import decode_base64_png, decode_png
from tests.conftest import make_settings
from tests.deploy.support import require_tool

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "model_store"
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "playground.png"
DIGITS = ROOT / "docs" / "inputs"
DESKTOP = (1280, 1000)
# The README's screenshot: the model, its images and a walk, as a laptop shows them.
DOCS_VIEW = (1280, 1120)
PHONE = (390, 844)
WAIT_S = 60.0


# ---------------------------------------------------------------------------------------------------------------
# The page as a file the service serves (no browser, no lifespan)


@pytest.fixture(scope="module")
def bare_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path_factory.mktemp("empty-store"))))


def test_the_root_redirects_to_the_playground(bare_client: TestClient) -> None:
    response = bare_client.get("/", follow_redirects=False)

    assert response.status_code == 307
    assert response.headers["location"] == "http://testserver/playground"


def test_the_playground_page_and_its_files_come_from_the_package(bare_client: TestClient) -> None:
    page = bare_client.get("/playground")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, media_type in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
        assert f'"playground/static/{asset}"' in page.text
        response = bare_client.get(f"/playground/static/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
    # Offline: nothing the page names is fetched from another host.
    assert "http://" not in page.text and "https://" not in page.text


def test_the_playground_is_not_part_of_the_api_schema(bare_client: TestClient) -> None:
    paths = bare_client.get("/openapi.json").json()["paths"]

    assert "/playground" not in paths and "/" not in paths


def test_the_playground_page_stays_open_when_api_keys_are_on(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("team-a: 0123456789abcdef0123\n")
    client = TestClient(create_app(make_settings(tmp_path, api_keys_file=keys)))

    assert client.get("/playground").status_code == 200
    assert client.get("/playground/static/playground.js").status_code == 200
    assert client.get("/", follow_redirects=False).status_code == 307
    refused = client.get("/models")
    assert refused.status_code == 401 and refused.json()["error"]["message"] == MISSING_KEY


# ---------------------------------------------------------------------------------------------------------------
# In a browser


@dataclass
class Page:
    """The browser on the playground, the server's address, and where screenshots go."""

    driver: webdriver.Chrome
    base_url: str
    screenshots: Path

    def script(self, source: str, *arguments: Any) -> Any:
        return self.driver.execute_script(source, *arguments)

    def wait_for(self, source: str, *arguments: Any, timeout_s: float = WAIT_S) -> Any:
        """Until the script returns a truthy value; that value."""
        return WebDriverWait(self.driver, timeout_s, poll_frequency=0.05).until(
            lambda _: self.script(source, *arguments), message=source
        )

    def type_into(self, element_id: str, text: str) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        field.send_keys(text)

    def choose_model(self, name: str) -> None:
        Select(self.driver.find_element(By.ID, "model")).select_by_value(name)

    def wait_for_image(self, element_id: str, source_part: str = "") -> str:
        """Until the image shows the answer of a request whose URL holds `source_part`; that URL."""
        source: str = self.wait_for(
            """const img = document.getElementById(arguments[0]);
            const source = img.dataset.source || "";
            return !img.hidden && img.complete && img.naturalWidth > 0 && source.includes(arguments[1])
                && img.closest("[aria-busy='true']") === null && source;""",
            element_id,
            source_part,
        )
        return source

    def pixels(self, element_id: str) -> np.ndarray:
        """The image's pixels as the page decoded them [H, W, RGBA], read back through a canvas."""
        data_url = self.script(
            """const img = document.getElementById(arguments[0]);
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            canvas.getContext("2d").drawImage(img, 0, 0);
            return canvas.toDataURL("image/png");""",
            element_id,
        )
        return decode_png(base64.b64decode(data_url.split(",", 1)[1]))

    def console_errors(self) -> list[dict[str, Any]]:
        """Errors the page logged since the last call."""
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    @contextlib.contextmanager
    def emulating(self, width: int, height: int, *, mobile: bool) -> Iterator[None]:
        """The page laid out on a screen of `width` x `height` CSS pixels (a phone's when `mobile`)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            self.wait_for("return window.innerWidth === arguments[0];", width)
            yield
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def text(self, element_id: str) -> str:
        return str(self.script("return document.getElementById(arguments[0]).textContent;", element_id))


def latest_version(base_url: str, name: str) -> dict[str, Any]:
    """What GET /models says of the newest available version of model `name`."""
    [model] = [m for m in httpx.get(f"{base_url}/models").json()["models"] if m["name"] == name]
    [version] = [v for v in model["versions"] if v["version"] == model["latest_available"]]
    return version


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root, in a container
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app` over the bundled models, as `make run` serves them, once every model is loaded."""
    env = service_env(BUNDLED, clean=True, default_model="mnist-dcgan")
    log = tmp_path_factory.mktemp("playground-server") / "server.log"
    with running_service(env, log, timeout_s=180) as (_, base_url):
        deadline = time.monotonic() + 180
        while not all(m["latest_available"] for m in httpx.get(f"{base_url}/models").json()["models"]):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield base_url


@pytest.fixture(scope="module")
def page(browser: webdriver.Chrome, server: str, tmp_path_factory: pytest.TempPathFactory) -> Page:
    """The playground, opened from the server's root as a browser would, and shown to the module's tests in turn."""
    browser.get(f"{server}/")
    return Page(browser, server, tmp_path_factory.mktemp("playground-screenshots"))


def test_the_root_opens_the_playground_without_console_errors(page: Page) -> None:
    assert page.driver.current_url == f"{page.base_url}/playground"
    page.wait_for_image("grid", "seed=42")
    version = latest_version(page.base_url, "mnist-dcgan")
    chosen = Select(page.driver.find_element(By.ID, "model")).first_selected_option.text
    assert chosen == f"mnist-dcgan (version {version['version']})"
    evaluation = page.script(
        """const terms = document.querySelectorAll('#model-info dt');
        return Object.fromEntries([...terms].map((term) => [term.textContent, term.nextSibling.textContent]));"""
    )
    assert evaluation["FID (lower is better)"] == f"{version['evaluation']['fid']:.3g}"
    assert evaluation["samples scored"] == f"{version['evaluation']['num_samples']:,}"
    links = {
        link.text: link.get_attribute("href") for link in page.driver.find_elements(By.CSS_SELECTOR, "nav a")
    }
    assert links == {"API docs": f"{page.base_url}/docs", "Metrics": f"{page.base_url}/metrics"}
    page.screenshot("opened")
    assert page.console_errors() == []


def test_the_grid_for_seed_42_has_the_pixels_of_generate(page: Page) -> None:
    source = page.wait_for_image("grid", "seed=42")
    shown = page.pixels("grid")

    served = httpx.post(f"{page.base_url}/generate", params={"model": "mnist-dcgan", "seed": 42, "n": 16})
    assert served.status_code == 200
    assert source == "generate?model=mnist-dcgan&seed=42&n=16"
    expected = decode_png(served.content)
    assert shown.shape[:2] == expected.shape[:2]
    # A grey PNG drawn on the page's canvas: red, green and blue each hold the grey level.
    assert np.array_equal(shown[..., 0], expected[..., 0])
    assert page.script("return document.getElementById('grid').alt;") == (
        "16 images generated by mnist-dcgan (seeds 42-57)"
    )


def test_changing_the_seed_changes_the_image(page: Page) -> None:
    before = page.pixels("grid")

    page.type_into("seed", "43")
    page.wait_for_image("grid", "seed=43")

    assert not np.array_equal(page.pixels("grid"), before)
    assert page.text("grid-caption").endswith(", seeds 43-58")
    assert page.console_errors() == []


def test_one_image_comes_from_its_permanent_address(page: Page) -> None:
    version = latest_version(page.base_url, "mnist-dcgan")["version"]

    page.type_into("count", "1")
    source = page.wait_for_image("grid", "images/43.png")

    assert source == f"models/mnist-dcgan/versions/{version}/images/43.png"
    shown = page.pixels("grid")[..., 0]
    fetched = httpx.get(f"{page.base_url}/{source}")
    assert fetched.status_code == 200
    assert np.array_equal(shown, decode_png(fetched.content)[..., 0])
    # The image (not a grid of one) that POST /generate draws from the same seed.
    generated = httpx.post(
        f"{page.base_url}/generate", params={"model": "mnist-dcgan", "seed": 43, "n": 1, "format": "json"}
    )
    assert generated.status_code == 200
    [image] = generated.json()["images"]
    assert np.array_equal(shown, decode_base64_png(image["png_base64"])[..., 0])
    link = page.driver.find_element(By.CSS_SELECTOR, "#grid-caption a").get_attribute("href")
    assert link == f"{page.base_url}/{source}"
    page.type_into("count", "16")
    page.wait_for_image("grid", "n=16")
    assert page.console_errors() == []


def test_the_walk_slider_steps_through_the_frames_and_links_the_animation(page: Page) -> None:
    page.driver.find_element(By.ID, "walk-button").click()
    page.wait_for_image("walk-animation", "format=gif")
    page.wait_for("return !document.getElementById('walk-slider').disabled;")
    first = page.pixels("walk-frame")

    slider = page.driver.find_element(By.ID, "walk-slider")
    slider.send_keys(Keys.END)

    assert page.text("walk-position") == "16 of 16"
    assert not np.array_equal(page.pixels("walk-frame"), first)
    link = page.driver.find_element(By.ID, "walk-link").get_attribute("href")
    assert link is not None
    animation = httpx.get(link)
    assert animation.status_code == 200 and animation.headers["content-type"] == "image/gif"
    page.screenshot("walk")
    if not DOCS_SCREENSHOT.exists():
        with page.emulating(*DOCS_VIEW, mobile=False):
            page.script("window.scrollTo(0, 0);")
            shutil.copyfile(page.screenshot("docs"), DOCS_SCREENSHOT)
    assert page.console_errors() == []


def test_a_refused_request_shows_the_services_message(page: Page) -> None:
    page.type_into("count", "999")

    message = page.wait_for(
        "const error = document.getElementById('images-error'); return !error.hidden && error.textContent;"
    )

    assert message == "422: n: must be between 1 and 64, got 999"
    page.screenshot("refused")
    page.type_into("count", "16")
    page.wait_for_image("grid", "n=16")
    assert page.script("return document.getElementById('images-error').hidden;") is True
    page.console_errors()  # the browser logs the 422 itself


def test_text_streams_into_the_output(page: Page) -> None:
    page.choose_model("fortunes-rnn")
    page.wait_for("return !document.getElementById('text-panel').hidden;")
    page.type_into("prompt", "The ")
    page.type_into("max-tokens", "400")
    page.type_into("text-seed", "7")
    # Every length the output takes, recorded in the page as it changes.
    page.script(
        """window.lengths = [];
        new MutationObserver(() => window.lengths.push(
            document.getElementById('text-continuation').textContent.length))
            .observe(document.getElementById('text-output'), {childList: true, subtree: true, characterData: true});"""
    )

    page.driver.find_element(By.ID, "text-button").click()
    page.wait_for("return document.getElementById('text-status').textContent.includes('ended by');")

    lengths = page.script("return window.lengths;")
    streamed = page.text("text-continuation")
    assert len(set(lengths)) > 10, lengths  # it grew a piece at a time, not all at once
    assert lengths == sorted(lengths) and lengths[-1] == len(streamed) > 0
    assert page.text("text-prompt") == "The "
    whole = httpx.post(
        f"{page.base_url}/generate",
        json={
            "model": "fortunes-rnn",
            "prompt": "The ",
            "max_new_tokens": 400,
            "temperature": 0.8,
            "seed": 7,
        },
    )
    assert whole.status_code == 200
    assert streamed == whole.json()["completions"][0]["text"]
    page.screenshot("text")
    assert page.console_errors() == []


def test_a_stroke_on_the_pad_comes_back_reconstructed(page: Page) -> None:
    page.choose_model("mnist-vae")
    pad = page.driver.find_element(By.ID, "pad")
    page.script("arguments[0].scrollIntoView({block: 'center'});", pad)

    # A "1": one stroke down the middle of the pad (offsets from its centre).
    ActionChains(page.driver).move_to_element_with_offset(pad, 10, -90).click_and_hold().move_by_offset(
        -5, 60
    ).move_by_offset(-5, 60).move_by_offset(-5, 60).release().perform()
    page.wait_for_image("reconstruction", "reconstruct?model=mnist-vae")
    page.wait_for_image("neighbours")

    compared = page.pixels("reconstruction")[..., 0].astype(float)
    drawn, rebuilt = np.array_split(compared, 2, axis=0)
    assert drawn.max() > 200 and rebuilt.max() > 100  # a stroke went in, a stroke came out
    assert np.corrcoef(drawn.ravel(), rebuilt.ravel())[0, 1] > 0.5  # in the same place
    neighbours = page.pixels("neighbours")
    assert neighbours.shape[1] > neighbours.shape[0]  # a grid of 4 columns and 2 rows
    assert page.script("return document.documentElement.scrollWidth <= window.innerWidth;")
    page.screenshot("drawn")
    assert page.console_errors() == []


def test_a_finger_on_the_pad_draws_too(page: Page) -> None:
    page.choose_model("mnist-vae")
    pad = page.driver.find_element(By.ID, "pad")
    page.script("arguments[0].scrollIntoView({block: 'center'});", pad)
    finger = ActionBuilder(page.driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))

    # A "7": across the top, then down to the left.
    finger.pointer_action.move_to(pad, -70, -80).pointer_down().move_by(120, 0).move_by(-60, 160).pointer_up()
    finger.perform()
    page.wait_for_image("reconstruction", "reconstruct?model=mnist-vae")

    drawn, rebuilt = np.array_split(page.pixels("reconstruction")[..., 0].astype(float), 2, axis=0)
    assert drawn.max() > 200 and np.corrcoef(drawn.ravel(), rebuilt.ravel())[0, 1] > 0.5
    assert page.console_errors() == []


def test_an_uploaded_digit_comes_back_reconstructed(page: Page) -> None:
    page.choose_model("mnist-vae")

    page.driver.find_element(By.ID, "upload").send_keys(str(DIGITS / "mnist-test-7.png"))
    page.wait_for("return document.getElementById('reconstruction').alt.startsWith('mnist-test-7.png');")
    page.wait_for_image("reconstruction", "reconstruct?model=mnist-vae")

    served = httpx.post(
        f"{page.base_url}/reconstruct",
        params={"model": "mnist-vae", "compare": "true"},
        files={"image": (DIGITS / "mnist-test-7.png").read_bytes()},
    )
    assert served.status_code == 200
    assert np.array_equal(page.pixels("reconstruction")[..., 0], decode_png(served.content)[..., 0])
    assert page.console_errors() == []


def test_the_page_fits_a_phone_screen(page: Page) -> None:
    width, height = PHONE
    with page.emulating(width, height, mobile=True):
        for model in ("mnist-vae", "mnist-cdcgan", "fortunes-rnn"):
            page.choose_model(model)
            # Nothing sticks out sideways: no horizontal scrolling.
            assert page.script("return document.documentElement.scrollWidth;") == width, model
            page.screenshot(f"phone-{model}")

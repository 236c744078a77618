"""End to end in real headless Chromium (Debian's chromium + chromium-driver), on the shipped model."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.app.conftest import png_bytes, serve
from tests.conftest import ROOT, SHIPPED

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.skipif(not SHIPPED.exists(), reason="needs the shipped checkpoint"),
]


@pytest.fixture(scope="module")
def shipped_server() -> Iterator[str]:
    with serve(SHIPPED) as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def _stroke(driver, pad, points: list[tuple[int, int]]) -> None:
    """Drag the mouse through ``points`` (pad pixels, origin top-left)."""
    from selenium.webdriver.common.action_chains import ActionChains

    size = pad.size
    chain = ActionChains(driver, duration=20)
    x0, y0 = points[0]
    chain.move_to_element_with_offset(pad, x0 - size["width"] // 2, y0 - size["height"] // 2).click_and_hold()
    for (xa, ya), (xb, yb) in itertools.pairwise(points):
        for _ in range(5):  # intermediate moves, like a real hand
            chain.move_by_offset(round((xb - xa) / 5), round((yb - ya) / 5))
    chain.release().perform()


def _wait_answer(driver, expected_status: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = driver.find_element("id", "status").text
        if expected_status in status:
            return driver.find_element("id", "digit").text
        time.sleep(0.1)
    raise AssertionError(f"no answer; status: {driver.find_element('id', 'status').text!r}")


def _heat_spread(driver) -> float:
    """Standard deviation of the heatmap canvas' pixel brightness: 0 for a blank canvas."""
    return driver.execute_script(
        "const c = document.getElementById('heat');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let s = 0, s2 = 0, n = 0;"
        "for (let i = 0; i < d.length; i += 4) { const v = d[i] + d[i+1] + d[i+2]; s += v; s2 += v*v; n++; }"
        "return Math.sqrt(s2 / n - (s / n) ** 2);"
    )


@pytest.mark.parametrize(
    ("digit", "strokes"),
    [
        ("1", [[(140, 40), (140, 240)]]),
        ("7", [[(70, 50), (210, 50), (120, 240)]]),
    ],
)
def test_browser_draw_digit_predicts_it(browser, shipped_server, digit, strokes):
    browser.get(shipped_server + "/")
    pad = browser.find_element("id", "pad")
    for points in strokes:
        _stroke(browser, pad, points)
    browser.find_element("id", "predict").click()
    shown = _wait_answer(browser, "Read your drawing")
    browser.save_screenshot(str(ARTIFACTS / f"draw-{digit}.png"))
    assert shown == digit
    bars = browser.find_elements("css selector", "#bars li")
    assert len(bars) == 10 and "top" in bars[int(digit)].get_attribute("class")


def test_browser_upload_mnist_digit_shows_answer_and_heatmap(browser, shipped_server, mnist_root, tmp_path):
    from training.data import load_split

    test = load_split(mnist_root, train=False)
    path = tmp_path / "mnist-digit.png"
    path.write_bytes(png_bytes(test.images[1].numpy()))
    browser.get(shipped_server + "/")
    browser.find_element("id", "file").send_keys(str(path))
    shown = _wait_answer(browser, "Read mnist-digit.png")
    assert shown == str(int(test.labels[1]))
    assert browser.find_element("id", "heat").get_attribute("data-rendered") == "true"
    assert _heat_spread(browser) > 10, "the heatmap canvas is blank"
    browser.find_element("css selector", "input[name=map][value=head]").click()
    assert browser.find_element("id", "head-pick").is_displayed()
    browser.save_screenshot(str(ARTIFACTS / "upload.png"))


def test_browser_error_message_for_a_rejected_image(browser, shipped_server, tmp_path):
    path = tmp_path / "blank.png"
    import numpy as np

    path.write_bytes(png_bytes(np.full((50, 50), 255, np.uint8)))
    browser.get(shipped_server + "/")
    browser.find_element("id", "file").send_keys(str(path))
    deadline = time.monotonic() + 10
    while "No digit found" not in (status := browser.find_element("id", "status")).text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "No digit found" in status.text and "error" in status.get_attribute("class")


def test_browser_upload_a_letter_says_not_a_digit(browser, shipped_server, tmp_path):
    from tests.app.test_shipped_http import typed

    path = tmp_path / "letter.png"
    path.write_bytes(typed("K"))
    browser.get(shipped_server + "/")
    browser.find_element("id", "file").send_keys(str(path))
    assert _wait_answer(browser, "Read letter.png") == "not a digit"
    assert "closest digit" in browser.find_element("id", "confidence").text
    browser.save_screenshot(str(ARTIFACTS / "not-a-digit.png"))


def test_browser_keyboard_operable_controls(browser, shipped_server):
    browser.get(shipped_server + "/")
    for control in browser.find_elements("css selector", "button, input, select, canvas#pad"):
        if control.get_attribute("type") == "file":
            assert browser.find_element("css selector", "label[for=file]")
            continue
        assert control.get_attribute("tabindex") != "-1"
    assert shutil.which("chromium") or os.path.exists(CHROMIUM)


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_browser_docs_render_offline_under_their_content_security_policy(browser, shipped_server, path, rendered):
    browser.get(shipped_server + path)
    deadline = time.monotonic() + 20
    while not browser.find_elements("css selector", rendered) and time.monotonic() < deadline:
        time.sleep(0.2)
    browser.save_screenshot(str(ARTIFACTS / f"docs{path.replace('/', '-')}.png"))
    assert browser.find_elements("css selector", rendered), f"{path} rendered nothing"
    assert "/v1/predict" in browser.find_element("tag name", "body").text
    # ReDoc's "powered by" logo comes from its CDN: refused, as anything from elsewhere should be
    logs = [e["message"] for e in browser.get_log("browser")]
    refused = [m for m in logs if "Content Security Policy" in m and "https://cdn.redoc.ly/" not in m]
    assert not refused, refused

"""The web page in headless Chromium: upload a photo, ask, and watch the streamed answer arrive.

Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`) and the `selenium`
package; without them the test is skipped, saying what is missing.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

from llava_mini.inference.generate import SHIPPED_MODEL_DIR, LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.serve.app import ServerLimits, ServerState, create_app, serve_in_thread
from llava_mini.serve.media import MediaPolicy

PHOTO = Path(__file__).resolve().parents[2] / "assets" / "extreme_ironing.jpg"
QUESTION = "What is the man doing?"


def find_browser() -> tuple[str, str]:
    """Paths of a Chromium binary and its driver ($CHROMIUM / $CHROMEDRIVER override); skips when absent."""
    browser = os.environ.get("CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        pytest.skip(f"{missing} not installed (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed (pip install selenium)"
    )
    binary, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    # An explicit driver path keeps Selenium Manager from downloading one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    """The shipped model when it is present, else a random tiny one (the answer is then noise)."""
    shipped = (SHIPPED_MODEL_DIR / "config.json").is_file()
    assistant = LlavaMini.load(None if shipped else write_random_model(tmp_path_factory.mktemp("model")))
    state = ServerState(assistant, "llava-mini-page", MediaPolicy(), ServerLimits(max_new_tokens=64))
    with serve_in_thread(create_app(state)) as url:
        yield url


def test_upload_a_photo_ask_and_read_the_streamed_answer(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(PHOTO))
    browser.find_element(By.ID, "question").send_keys(QUESTION)
    browser.find_element(By.ID, "send").click()
    answer = WebDriverWait(browser, 120).until(
        lambda page: page.find_element(By.CSS_SELECTOR, "#answer-1[data-done='true']")
    )
    assert "error" not in answer.get_attribute("class"), answer.text
    assert browser.find_element(By.CSS_SELECTOR, "#log .user").text == QUESTION
    assert (
        browser.find_element(By.CSS_SELECTOR, "#log img.thumb").get_attribute("src").startswith("data:image/")
    )

    # The page streamed what the API answers to the same request (greedy decoding).
    url = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    request = {
        "model": "llava-mini-page",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 64,
    }
    expected = httpx.post(server + "/v1/chat/completions", json=request, timeout=120).json()
    expected_text = expected["choices"][0]["message"]["content"]
    assert expected_text.strip(), "the model answered nothing; the comparison would prove little"
    assert answer.text.strip() == expected_text.strip()

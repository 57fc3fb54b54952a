"""The web page in headless Chromium: attach an image or a video, see the preview, stream an answer, stop one,
see the compressor's heat maps, read the server's error for a corrupt file; on a desktop and a phone-width window.

Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`; `.ci/run` installs
them) and the `selenium` package. Without them the tests are skipped, saying what is missing, except in CI
(CI=true), where a missing browser fails them. Each state is saved as a screenshot under the test's temporary
folder, and no test may leave an unexpected error in the browser's console.
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

STATIC = Path(__file__).resolve().parents[2] / "src" / "llava_mini" / "serve" / "static"
PICTURE = STATIC / "example-count.png"
CLIP = STATIC / "example-motion.mp4"
MODEL_ID = "llava-mini-page"
WAIT_S = 60


def unavailable(reason: str):
    """Skip, or fail in CI: there the browser tests must run on every landing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium and chromium-driver)")
    pytest.skip(reason)


def find_browser() -> tuple[str, str]:
    """Paths of a Chromium binary and its driver ($CHROMIUM / $CHROMEDRIVER override)."""
    browser = os.environ.get("CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        unavailable(f"{missing} not installed (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
    except ImportError:
        unavailable("selenium not installed (pip install selenium)")
    binary, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager from downloading one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


def start_server(assistant: LlavaMini):
    state = ServerState(
        assistant, MODEL_ID, MediaPolicy(video_fps=assistant.config.video_fps), ServerLimits(max_new_tokens=512)
    )
    return serve_in_thread(create_app(state))


@pytest.fixture(scope="module")
def server():
    """The shipped model (it answers the example pictures and clips of its world correctly)."""
    with start_server(LlavaMini.load(SHIPPED_MODEL_DIR)) as url:
        yield url


@pytest.fixture(scope="module")
def rambling_server(tmp_path_factory):
    """A random tiny model with C = 2 (4 queries): greedy decoding rambles on without an end token, long enough
    to be stopped."""
    directory = write_random_model(tmp_path_factory.mktemp("model"), compressor_size=2)
    with start_server(LlavaMini.load(directory)) as url:
        yield url


@pytest.fixture
def page(browser, tmp_path):
    """The browser with an empty console; afterwards, the console must hold no errors but the expected ones."""
    browser.set_window_size(1280, 900)
    browser.get("about:blank")
    browser.get_log("browser")
    expected: list[str] = []
    yield browser, tmp_path, expected
    errors = [
        entry["message"] for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in expected)
    ]
    assert not errors, f"console errors: {errors}"


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def wait_for(driver, selector: str, timeout: float = WAIT_S):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, selector))


def ask(driver, text: str, max_tokens: int | None = None) -> None:
    if max_tokens is not None:
        field = by_css(driver, "#max-tokens")
        field.clear()
        field.send_keys(str(max_tokens))
    by_css(driver, "#question").send_keys(text)
    by_css(driver, "#send").click()


def api_answer(url: str, messages: list[dict]) -> dict:
    request = {"model": MODEL_ID, "messages": messages, "max_tokens": 64}
    return httpx.post(url + "/v1/chat/completions", json=request, timeout=WAIT_S).json()


def data_url(path: Path, kind: str) -> str:
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def canvas_is_drawn(driver, canvas) -> bool:
    """The canvas holds more than one colour (the picture under a heat map)."""
    return driver.execute_script(
        "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const seen = new Set(); for (let i = 0; i < d.length; i += 4) seen.add(d[i] << 16 | d[i+1] << 8 | d[i+2]);"
        "return c.width > 0 && seen.size > 8;",
        canvas,
    )


def test_image_preview_streamed_answer_heat_map_and_token_counts(page, server):
    driver, folder, _ = page
    driver.get(server + "/")
    by_css(driver, "#file").send_keys(str(PICTURE))
    preview = wait_for(driver, "#preview img")
    assert preview.get_attribute("src").startswith("data:image/png;base64,")
    assert by_css(driver, "#attachment").is_displayed()
    driver.save_screenshot(str(folder / "1-image-attached.png"))

    question = "How many objects are there?"
    ask(driver, question)
    answer = wait_for(driver, "#answer-1[data-done='true']")
    heat = wait_for(driver, ".msg.user .sees[data-drawn='true']")
    driver.save_screenshot(str(folder / "2-image-answered.png"))

    assert answer.get_attribute("data-state") == "done", answer.text
    assert by_css(driver, ".msg.user .text").text == question
    assert by_css(driver, ".msg.user .media img").get_attribute("src").startswith("data:image/")
    canvases = heat.find_elements("css selector", "canvas")
    assert len(canvases) == 1 and canvas_is_drawn(driver, canvases[0])
    assert not by_css(driver, "#attachment").is_displayed()  # the attachment went with the question

    # The page streamed what the API answers to the same request (greedy decoding), and its counts are the API's.
    content = [{"type": "image_url", "image_url": {"url": data_url(PICTURE, "image/png")}}, {"type": "text", "text": question}]
    expected = api_answer(server, [{"role": "user", "content": content}])
    expected_text = expected["choices"][0]["message"]["content"].strip()
    assert expected_text, "the model answered nothing; the comparison would prove little"
    assert by_css(driver, "#answer-1 .text").text.strip() == expected_text
    stats = by_css(driver, "#answer-1 .stats")
    assert stats.get_attribute("data-vision-tokens") == "1"
    assert stats.get_attribute("data-baseline-vision-tokens") == "64"  # 8 x 8 patches, as LLaVA-1.5 would feed
    assert stats.get_attribute("data-prompt-tokens") == str(expected["usage"]["prompt_tokens"])
    assert int(stats.get_attribute("data-first-token-ms")) >= 0

    assert expected_text == "4"  # the shipped model counts the example's objects right

    # A follow-up without a new picture: the history goes along, and the answer comes in a new bubble.
    follow_up = "What colour is the triangle?"
    ask(driver, follow_up)
    wait_for(driver, "#answer-2[data-done='true']")
    assert by_css(driver, "#answer-2").get_attribute("data-state") == "done"
    history = [
        {"role": "user", "content": content},
        {"role": "assistant", "content": expected_text},
        {"role": "user", "content": follow_up},
    ]
    assert by_css(driver, "#answer-2 .text").text.strip() == api_answer(server, history)["choices"][0]["message"]["content"].strip()
    assert len(driver.find_elements("css selector", ".msg.assistant")) == 2


def test_video_preview_and_a_heat_map_per_frame(page, server):
    driver, folder, _ = page
    driver.get(server + "/")
    by_css(driver, "#file").send_keys(str(CLIP))
    preview = wait_for(driver, "#preview video")
    assert preview.get_attribute("src").startswith("data:video/mp4;base64,")
    ask(driver, "Where is the cross moving?")
    wait_for(driver, "#answer-1[data-done='true']")
    strip = wait_for(driver, ".msg.user .sees[data-drawn='true']")
    driver.save_screenshot(str(folder / "video-answered.png"))

    assert by_css(driver, "#answer-1 .text").text.strip() == "down"
    content = [{"type": "video_url", "video_url": {"url": data_url(CLIP, "video/mp4")}}, {"type": "text", "text": "x"}]
    inspection = httpx.post(
        server + "/v1/inspect", json={"model": MODEL_ID, "messages": [{"role": "user", "content": content}]}
    ).json()
    frames = inspection["media"][0]["pictures"]
    assert frames > 1
    canvases = strip.find_elements("css selector", "canvas")
    assert len(canvases) == frames and all(canvas_is_drawn(driver, c) for c in canvases)
    assert by_css(driver, "#answer-1 .stats").get_attribute("data-vision-tokens") == str(frames)


def test_an_example_fills_the_attachment_and_the_question(page, server):
    driver, folder, _ = page
    driver.get(server + "/")
    by_css(driver, ".examples button[data-file='example-word.png']").click()
    wait_for(driver, "#preview img")
    assert by_css(driver, "#question").get_attribute("value") == "Read the word in the image."
    by_css(driver, "#send").click()
    wait_for(driver, "#answer-1[data-done='true']")
    driver.save_screenshot(str(folder / "example-answered.png"))
    assert by_css(driver, "#answer-1 .text").text.strip() == "toy"


def test_a_dropped_clip_is_previewed_and_answered(page, server):
    driver, folder, _ = page
    driver.get(server + "/")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/static/example-order.mp4').then(r => r.blob()).then(blob => {"
        "  const data = new DataTransfer();"
        "  data.items.add(new File([blob], 'dropped.mp4', {type: 'video/mp4'}));"
        "  const zone = document.getElementById('dropzone');"
        "  for (const type of ['dragover', 'drop'])"
        "    zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));"
        "  done();"
        "});"
    )
    wait_for(driver, "#preview video")
    assert by_css(driver, "#attachment-name").text == "Video: dropped.mp4"
    ask(driver, "Which shape appears last?")
    wait_for(driver, "#answer-1[data-done='true']")
    driver.save_screenshot(str(folder / "dropped-answered.png"))
    assert by_css(driver, "#answer-1 .text").text.strip() == "square"


def test_stop_cancels_the_stream_and_the_next_question_is_answered(page, rambling_server):
    driver, folder, _ = page
    driver.get(rambling_server + "/")
    by_css(driver, "#file").send_keys(str(PICTURE))
    # 512 tokens (the server's limit) without an end; on a quiet CPU the random model writes 256 in under
    # 0.5 s, so Stop is pressed as soon as the answer streams
    ask(driver, "How many objects are there?", max_tokens=512)
    wait_for(driver, "#answer-1[data-state='streaming']")
    assert not by_css(driver, "#stop").get_attribute("disabled")
    by_css(driver, "#stop").click()
    wait_for(driver, "#answer-1[data-done='true']")
    driver.save_screenshot(str(folder / "stopped.png"))
    assert by_css(driver, "#answer-1").get_attribute("data-state") == "stopped"  # aborted, not finished
    assert by_css(driver, "#stop").get_attribute("disabled")
    assert not by_css(driver, "#send").get_attribute("disabled")
    maps = wait_for(driver, ".msg.user .sees[data-drawn='true']").find_elements("css selector", "figure")
    assert [m.text for m in maps] == [f"query {q}" for q in range(1, 5)]  # one heat map per query for C > 1
    assert by_css(driver, "#answer-1 .stats").get_attribute("data-vision-tokens") == "4"

    ask(driver, "And now?", max_tokens=4)  # the UI is ready again and the server answers the next question
    wait_for(driver, "#answer-2[data-done='true']")
    assert by_css(driver, "#answer-2").get_attribute("data-state") == "done"


def test_a_corrupt_file_shows_the_servers_error(page, server):
    driver, folder, expected_console = page
    expected_console.append("status of 400")  # the browser logs the refused requests
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 8)
    driver.get(server + "/")
    by_css(driver, "#file").send_keys(str(broken))
    ask(driver, "What is in the image?")
    error = wait_for(driver, ".msg.assistant.error")
    driver.save_screenshot(str(folder / "corrupt-file.png"))
    assert "not a readable image" in error.text and "HTTP 400" in error.text, error.text
    assert not driver.find_elements("css selector", ".sees")  # the error is said once, not again for the attention
    assert error.get_attribute("role") == "alert"
    assert not by_css(driver, "#send").get_attribute("disabled")

    # The bad turn is not kept: the next question (with a good picture) is answered.
    by_css(driver, "#file").send_keys(str(PICTURE))
    ask(driver, "How many objects are there?")
    wait_for(driver, "#answer-2[data-done='true']")
    assert by_css(driver, "#answer-2 .text").text.strip() == "4"


def test_phone_width_fits_and_everything_is_labelled(page, server):
    driver, folder, _ = page
    driver.set_window_size(390, 844)
    driver.get(server + "/")
    from selenium.webdriver.common.keys import Keys

    by_css(driver, "#file").send_keys(str(PICTURE))
    by_css(driver, "#question").send_keys("How many objects are there?" + Keys.ENTER)  # Enter sends
    wait_for(driver, "#answer-1[data-done='true']")
    wait_for(driver, ".msg.user .sees[data-drawn='true']")
    driver.save_screenshot(str(folder / "phone.png"))
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input, textarea, button')].filter(e =>"
        " !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.id || e.outerHTML)"
    )
    assert unlabelled == []

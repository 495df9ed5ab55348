"""The web page in a real browser: Debian's chromium driven by Playwright against `vlfuse serve` on
loopback. Upload an image, ask, see the answer and the heatmap; search, see ranked images.

Run with `python -m pytest -m browser tests/serve/test_browser.py` (excluded by default, like `slow`).
Needs `apt-get install chromium` and `pip install -e ".[browser]"` (never `playwright install`: it
downloads browsers; this uses the system one). Set VLFUSE_WEB_SCREENSHOT=path to keep the page's
screenshot (bench/web_page.py makes docs/web_page.png the same way, with trained models).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package only)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run, trained_retrieval, shapes_root, cli_environment, tmp_path_factory):
    from vlfuse.index import build_index

    index = tmp_path_factory.mktemp("browser_index") / "idx"
    build_index(trained_retrieval.model_dir, images=shapes_root / "images" / "train", out=index)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vlfuse.cli", "serve", str(trained_run.model_dir), str(trained_retrieval.model_dir),
         "--index", str(index), "--examples", str(shapes_root / "images" / "test"), "--port", str(port),
         "--log-level", "warning"], env=cli_environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    import httpx

    while True:
        try:
            httpx.get(url + "/health", timeout=2)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"vlfuse serve did not start: {process.stdout.read()}")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_upload_ask_see_answer_and_heatmap_then_search(browser, server, shapes_root, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(server)
    page.wait_for_function("document.getElementById('status').textContent.includes('VQA')")
    image = sorted((shapes_root / "images" / "train").iterdir())[0]
    page.set_input_files("#image-file", str(image))
    page.fill("#question", "What is the shape of the red object?")
    page.click("#ask")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0 || "
                           "document.getElementById('ask-error').textContent.length > 0", timeout=60_000)
    assert page.text_content("#ask-error") == ""
    assert "%" in page.text_content("#answer")
    heat = page.wait_for_selector("#heatmap:not(.hidden)")
    assert heat.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") >= 256  # a decoded picture

    page.click(".examples img")  # an example image works the same way
    page.click("#ask")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")

    page.fill("#query", "a red circle")
    page.fill("#k", "5")
    page.click("#search")
    page.wait_for_function("document.querySelectorAll('#results img').length === 5 && "
                           "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)
    screenshot = Path(os.environ.get("VLFUSE_WEB_SCREENSHOT") or tmp_path / "web_page.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_page_shows_a_json_error_as_a_message(browser, server):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.getElementById('status').textContent.includes('VQA')")
    page.click("#ask")  # no image chosen
    assert "choose an image" in page.text_content("#ask-error")
    page.set_input_files("#image-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}])
    page.fill("#question", "What is the shape of the red object?")
    page.click("#ask")
    page.wait_for_function("document.getElementById('ask-error').textContent.length > 0")
    assert "not an image" in page.text_content("#ask-error")

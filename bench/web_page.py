"""A screenshot of the web page in use: `vlfuse serve` on loopback, Debian's chromium via Playwright;
an image uploaded, a question asked (answer + heatmap), a text search run (ranked images).

    nice -n 5 python bench/web_page.py --serve runs/vqa_shapes/model runs/retrieval_shapes/model \
        --index runs/shapes_index --image data/shapes/images/test/test_000001.png \
        --question "What is the shape of the object closest to the red object?" \
        --query "a red triangle at the bottom, a green circle at the bottom left" --out docs/web_page.png

Needs `apt-get install chromium` and `pip install playwright` (not `playwright install`).
tests/serve/test_browser.py checks the same steps on tiny models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import start_server  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs="+", required=True, metavar="MODEL_DIR")
    parser.add_argument("--index")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--query")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path("docs/web_page.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server, url = start_server(args.serve, args.index, 16, 5.0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(url)
            page.wait_for_function("document.getElementById('status').textContent.length > 12")
            page.set_input_files("#image-file", str(args.image))
            page.fill("#question", args.question)
            page.click("#ask")
            page.wait_for_selector("#heatmap:not(.hidden)", timeout=120_000)
            print("answer:", page.text_content("#answer"), "|", page.text_content("#top"))
            if args.query:
                page.fill("#query", args.query)
                page.fill("#k", str(args.k))
                page.click("#search")
                page.wait_for_function(f"document.querySelectorAll('#results img').length === {args.k} && "
                                       "[...document.querySelectorAll('#results img')].every(i => i.complete)",
                                       timeout=120_000)
                print("search:", [c.text_content() for c in page.query_selector_all("#results figcaption")])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()

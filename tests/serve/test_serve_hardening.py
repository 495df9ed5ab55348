"""The server under hostile use (issue 17): no request can make it hold much memory or wait forever,
it reads no file outside the indexed folders, and it answers only to its own names and pages.

Each test fails on the server before these bounds (huge heatmaps, every upload decoded at once,
no cap on requests, any items.jsonl path served, any Host and Origin answered).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="the server's search needs faiss-cpu (pip install 'vlfuse[serve]')")
pytest.importorskip("fastapi", reason="the server needs FastAPI (pip install 'vlfuse[serve]')")

from helpers import QUESTION, assert_json_error, count_forward_calls, local_client, make_client, upload  # noqa: E402

from vlfuse.errors import ConfigError  # noqa: E402
from vlfuse.serve import ServeSettings, Service, create_app  # noqa: E402


def png(width: int, height: int) -> bytes:
    """A large picture that compresses to little: what slips under an upload cap."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (width, height), (200, 200, 200))
    ImageDraw.Draw(picture).ellipse((width // 6, height // 6, width // 2, height // 2), fill=(255, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_bytes(shapes_root) -> bytes:
    return sorted((shapes_root / "images" / "train").iterdir())[2].read_bytes()


@contextmanager
def model_thread_held(service: Service):
    """The model thread busy until the block ends: requests queue up behind it."""
    release = threading.Event()
    service.executor.submit(release.wait)
    try:
        yield
    finally:
        release.set()


def wait_until(condition, what: str, tries: int = 400) -> None:
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"never happened: {what}")


# --------------------------------------------------------------------------- one request's work is bounded

def test_explain_paints_a_huge_image_at_a_bounded_size(trained_run):
    import vlfuse
    from PIL import Image

    big = png(2400, 1200)  # 2.9 megapixels: a map per word at this size is 23 MB (float64) each
    with make_client([trained_run.model_dir]) as client:
        for method in ("attention", "occlusion"):
            response = client.post("/explain", files=upload(big), data={"question": QUESTION, "method": method})
            assert response.status_code == 200, response.text
            heatmap = Image.open(io.BytesIO(base64.b64decode(response.json()["heatmap_png"])))
            assert heatmap.size == (512, 256)  # scaled down to serve.images.DISPLAY_SIDE, the aspect kept
        answered = client.post("/answer", files=upload(big), data={"question": QUESTION}).json()
    # the model still reads the upload resized once to its input, as the Python API does
    expected = vlfuse.load(trained_run.model_dir).predict(big, QUESTION)
    assert response.json()["answer"] == answered["answer"] == expected.answer
    assert answered["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert response.json()["confidence"] == pytest.approx(expected.confidence, abs=1e-5)


def test_huge_uploads_decode_one_at_a_time_and_leave_as_model_inputs(trained_run, image_bytes):
    service = Service.load([trained_run.model_dir])
    decoding, peak, lock = [0], [0], threading.Lock()
    decode = service.decode

    def counted(data: bytes):
        picture = decode(data)
        if picture.width * picture.height > 4_000_000:
            with lock:
                decoding[0] += 1
                peak[0] = max(peak[0], decoding[0])
            time.sleep(0.2)  # long enough for the others to start, were they allowed to
            with lock:
                decoding[0] -= 1
        return picture

    service.decode = counted
    big = png(2100, 2100)  # 4.4 megapixels: the large lane
    with local_client(create_app(service)) as client, ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda data: client.post("/answer", files=upload(data), data={"question": QUESTION}),
                                [big, big, big, big, image_bytes]))
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert peak[0] == 1  # never two large images decoded at once
    # what leaves the decoder (and waits in the queue) is the model's input, not the picture
    from vlfuse.data.images import image_tensor

    model_input = asyncio.run(service.model_input(big, "vqa"))
    assert model_input.shape == (3, 32, 32) and model_input.equal(image_tensor(big, 32))


def test_an_image_over_the_pixel_budget_is_refused_before_decoding(trained_run):
    with make_client([trained_run.model_dir], max_pixels=1_000_000) as client:
        assert_json_error(client.post("/answer", files=upload(png(1200, 1000)), data={"question": QUESTION}), 400,
                          "1200x1000", "max_pixels=1000000")


def test_a_full_server_answers_503_with_retry_after(trained_run, image_bytes):
    service = Service.load([trained_run.model_dir], settings=ServeSettings(max_pending=2, max_batch=1))
    ask = {"files": upload(image_bytes), "data": {"question": QUESTION}}
    with local_client(create_app(service)) as client, ThreadPoolExecutor(2) as pool:
        with model_thread_held(service):
            waiting = [pool.submit(client.post, "/answer", **ask) for _ in range(2)]
            wait_until(lambda: client.get("/health").json()["in_progress"]["requests"] == 2, "2 requests admitted")
            refused = client.post("/answer", **ask)
            assert_json_error(refused, 503, "busy", "retry")
            assert refused.headers["retry-after"] == "1"
        assert [w.result().status_code for w in waiting] == [200, 200]  # the admitted ones are answered
        assert client.post("/answer", **ask).status_code == 200  # and there is room again


def test_a_request_over_its_time_budget_gets_503(trained_run, image_bytes):
    service = Service.load([trained_run.model_dir], settings=ServeSettings(timeout_s=1.0))
    with local_client(create_app(service)) as client, model_thread_held(service):
        late = client.post("/answer", files=upload(image_bytes), data={"question": QUESTION})
        assert_json_error(late, 503, "time budget of 1 s")
        assert late.headers["retry-after"] == "1"
        assert client.get("/health").json()["in_progress"]["requests"] == 0


def test_serve_settings_are_checked(cli_main, trained_run):
    with pytest.raises(ConfigError, match="max_pending must be >= 1"):
        ServeSettings(max_pending=0)
    with pytest.raises(ConfigError, match="timeout_s > 0"):
        ServeSettings(timeout_s=0)
    result = cli_main("serve", trained_run.model_dir, "--max-pending", "0")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "max_pending" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- files, hosts and origins

@pytest.fixture
def private_index(trained_retrieval, copy_shapes, tmp_path) -> Path:
    """An index of a private copy of the train images, free to be tampered with."""
    from vlfuse.index import build_index

    images = copy_shapes() / "images" / "train"
    return build_index(trained_retrieval.model_dir, images=images, out=tmp_path / "idx").save(tmp_path / "idx")


def test_indexed_images_are_served_only_from_the_indexed_folders_and_only_if_images(
        trained_retrieval, private_index, tmp_path):
    items = [json.loads(line) for line in (private_index / "items.jsonl").read_text().splitlines()]
    folder = Path(items[0]["path"]).parent
    assert json.loads((private_index / "index.json").read_text())["folders"] == [str(folder)]  # recorded at build
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    outside_png = tmp_path / "elsewhere.png"
    outside_png.write_bytes(Path(items[1]["path"]).read_bytes())
    (folder / "notes.png").write_text("password=hunter2\n")  # inside the folder, but not an image
    (folder / "link.png").symlink_to(secret)  # inside by name, outside in fact
    for n, path in enumerate([secret, outside_png, folder / "notes.png", folder / "link.png"]):
        items[n]["path"] = str(path)
    (private_index / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))

    with make_client([trained_retrieval.model_dir], private_index) as client:
        for n, why in [(0, "outside the folders"), (1, "outside the folders"), (2, "not an image"),
                       (3, "outside the folders")]:
            response = client.get(f"/images/{n}")
            assert_json_error(response, 404, f"indexed image {n} is not served", why)
            assert "hunter2" not in response.text
        served = client.get("/images/4")
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.content == Path(items[4]["path"]).read_bytes()
        assert_json_error(client.get("/images/999"), 404, "no image 999")


def test_only_the_servers_own_host_names_are_answered(trained_run):
    with make_client([trained_run.model_dir]) as client:
        for host in ("evil.example", "evil.example:8000", "localhost.evil.example", ""):
            assert_json_error(client.get("/health", headers={"host": host}), 400, "--allowed-host")
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "192.168.1.20"):
            assert client.get("/health", headers={"host": host}).status_code == 200, host
    with make_client([trained_run.model_dir], allowed_hosts=("vlfuse.lan",)) as client:
        assert client.get("/health", headers={"host": "vlfuse.lan:8000"}).status_code == 200
        assert client.get("/health", headers={"host": "localhost"}).status_code == 400


def test_cross_origin_posts_are_refused_before_any_work(trained_run, image_bytes):
    service = Service.load([trained_run.model_dir])
    calls = count_forward_calls(service)
    ask = {"files": upload(image_bytes), "data": {"question": QUESTION}}
    with local_client(create_app(service)) as client:
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
            assert_json_error(client.post("/answer", headers={"origin": origin}, **ask), 403, "cross-origin",
                              "--cors-origin")
        assert calls == []  # nothing decoded or run
        assert client.post("/answer", headers={"origin": "http://127.0.0.1"}, **ask).status_code == 200  # the page
        read = client.get("/health", headers={"origin": "http://evil.example"})
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers  # CORS closed
    with make_client([trained_run.model_dir], cors_origins=("http://app.example",)) as client:
        allowed = client.post("/answer", headers={"origin": "http://app.example"}, **ask)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.example"
        assert client.post("/answer", headers={"origin": "http://evil.example"}, **ask).status_code == 403

"""The HTTP server through the real app (FastAPI's TestClient) on tiny models trained in the session:
answers, explanations, matching, search, JSON errors, upload limits, content sniffing, which model
serves what, and micro-batching (counted forward passes).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="the server's search needs faiss-cpu (pip install 'vlfuse[serve]')")
pytest.importorskip("fastapi", reason="the server needs FastAPI (pip install 'vlfuse[serve]')")

from vlfuse.errors import ConfigError  # noqa: E402
from vlfuse.serve import ServeSettings, Service, create_app  # noqa: E402
from helpers import QUESTION, assert_json_error, count_forward_calls, local_client, make_client, upload  # noqa: E402
from conftest import captioning_config  # noqa: E402

@pytest.fixture(scope="module")
def index_dir(trained_retrieval, shapes_root, tmp_path_factory) -> Path:
    from vlfuse.index import build_index

    out = tmp_path_factory.mktemp("serve_index") / "idx"
    build_index(trained_retrieval.model_dir, images=shapes_root / "images" / "train", out=out)
    return out


@pytest.fixture(scope="module")
def image_bytes(shapes_root) -> bytes:
    return sorted((shapes_root / "images" / "train").iterdir())[2].read_bytes()


@pytest.fixture(scope="module")
def client(trained_run, trained_retrieval, index_dir, shapes_root):
    with make_client([trained_run.model_dir, trained_retrieval.model_dir], index_dir,
                     examples=shapes_root / "images" / "test") as c:
        yield c


# --------------------------------------------------------------------------- VQA

def test_answer_matches_the_python_api(client, trained_run, image_bytes):
    import vlfuse

    response = client.post("/answer", files=upload(image_bytes), data={"question": QUESTION, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = vlfuse.load(trained_run.model_dir).predict(image_bytes, QUESTION, top_k=3)
    assert body["answer"] == expected.answer and body["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert [t["answer"] for t in body["top"]] == [a for a, _ in expected.top]
    assert len(body["top"]) == 3


def test_explain_returns_the_answer_and_a_heatmap_png(client, image_bytes):
    from PIL import Image

    for method in ("attention", "gradcam", "saliency", "occlusion"):
        response = client.post("/explain", files=upload(image_bytes), data={"question": QUESTION, "method": method})
        assert response.status_code == 200, response.text
        body = response.json()
        answered = client.post("/answer", files=upload(image_bytes), data={"question": QUESTION}).json()
        assert body["answer"] == answered["answer"] and body["method"] == method
        picture = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
        assert picture.format == "PNG" and min(picture.size) >= 256  # the 32-px image scaled up for the page
    assert_json_error(client.post("/explain", files=upload(image_bytes), data={"question": QUESTION,
                                                                             "method": "magic"}), 400, "method")


def test_the_image_kind_is_sniffed_from_the_bytes(client, image_bytes):
    # a PNG sent as text with a .txt name is still a PNG
    assert client.post("/answer", files=upload(image_bytes, "notes.txt", "text/plain"),
                       data={"question": QUESTION}).status_code == 200
    # text sent as a PNG is not an image, whatever it claims
    assert_json_error(client.post("/answer", files=upload(b"GIF89a? no: just text", "cat.png"),
                                  data={"question": QUESTION}), 400, "not an image")
    truncated = image_bytes[: len(image_bytes) // 2]
    assert_json_error(client.post("/answer", files=upload(truncated), data={"question": QUESTION}), 400, "image")


def test_bad_requests_get_json_errors(client, image_bytes):
    assert_json_error(client.post("/answer", files=upload(image_bytes), data={"question": "   "}), 400,
                      "empty question")
    assert_json_error(client.post("/answer", data={"question": QUESTION}), 422, "image")
    assert_json_error(client.post("/answer", files=upload(image_bytes), data={"question": QUESTION, "top_k": 0}),
                      400, "top_k")
    assert_json_error(client.post("/answer", files=upload(image_bytes), data={"question": QUESTION,
                                                                            "top_k": "many"}), 422, "top_k")
    assert_json_error(client.post("/search", json={"text": "", "k": 3}), 400, "empty text")
    assert_json_error(client.post("/search", content=b"{not json", headers={"content-type": "application/json"}),
                      422)
    assert_json_error(client.get("/no/such/page"), 404)
    assert_json_error(client.get("/answer"), 405)
    assert_json_error(client.get("/images/999"), 404, "no image 999")


def test_uploads_over_the_limit_get_413(trained_run, image_bytes):
    with make_client([trained_run.model_dir], max_upload_bytes=4000) as small:
        big = image_bytes + b"\0" * 5000
        assert_json_error(small.post("/answer", files=upload(big), data={"question": QUESTION}), 413, "4000")

        def chunked():  # no Content-Length: counted as it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nWhat?\r\n"
            yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
            for _ in range(10):
                yield b"\0" * 1000
            yield b"\r\n--b--\r\n"

        response = small.post("/answer", content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert_json_error(response, 413, "too large")
        assert small.post("/answer", files=upload(image_bytes), data={"question": QUESTION}).status_code == 200


# --------------------------------------------------------------------------- retrieval

def test_search_by_text_and_image_and_the_indexed_images(client, index_dir, image_bytes):
    response = client.post("/search", json={"text": "a red circle", "k": 4})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4] and all("path" not in r for r in results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    items = [json.loads(line) for line in (index_dir / "items.jsonl").read_text().splitlines()]
    first = client.get(results[0]["url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content == Path(items[results[0]["position"]]["path"]).read_bytes()

    reranked = client.post("/search", json={"text": "a red circle", "k": 4, "rerank": True}).json()["results"]
    assert all(r["match"] is not None for r in reranked)
    assert {r["position"] for r in reranked} == {r["position"] for r in results}

    by_image = client.post("/search/image", files=upload(image_bytes), data={"k": 2}).json()["results"]
    assert len(by_image) == 2 and by_image[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert Path(items[by_image[0]["position"]]["path"]).read_bytes() == image_bytes
    assert_json_error(client.post("/search", json={"text": "x", "k": 1000}), 400, "k must be")


def test_match_scores_an_image_against_a_text(client, image_bytes):
    body = client.post("/match", files=upload(image_bytes), data={"text": "a red circle"}).json()
    assert -1 <= body["similarity"] <= 1 and 0 <= body["match_probability"] <= 1
    assert_json_error(client.post("/match", files=upload(image_bytes), data={"text": ""}), 400, "empty text")


def test_health_openapi_page_and_examples(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["vqa"]["answers"] > 0 and health["index"]["images"] == 14
    assert health["retrieval"]["can_rerank"] is True and health["examples"] == 1
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/answer", "/explain", "/match", "/search", "/search/image", "/health"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text and 'id="ask"' in page.text
    examples = client.get("/examples").json()
    assert len(examples) == 1 and client.get(examples[0]["url"]).status_code == 200


# --------------------------------------------------------------------------- which models serve what

def test_each_endpoint_says_which_model_it_lacks(trained_run, trained_retrieval, image_bytes):
    with make_client([trained_run.model_dir]) as vqa_only:
        assert_json_error(vqa_only.post("/search", json={"text": "a red circle"}), 404, "no retrieval model")
        assert_json_error(vqa_only.post("/match", files=upload(image_bytes), data={"text": "x"}), 404,
                          "no retrieval model")
        assert vqa_only.get("/health").json()["retrieval"] is None
    with make_client([trained_retrieval.model_dir]) as retrieval_only:
        assert_json_error(retrieval_only.post("/answer", files=upload(image_bytes), data={"question": QUESTION}),
                          404, "no VQA model")
        assert_json_error(retrieval_only.post("/search", json={"text": "x"}), 404, "no image index")
        assert retrieval_only.post("/match", files=upload(image_bytes), data={"text": "x"}).status_code == 200


def test_service_refuses_what_it_cannot_serve(trained_run, trained_retrieval, index_dir, tmp_path):
    from vlfuse.index import ModelMismatchError

    with pytest.raises(ConfigError, match="two vqa models"):
        Service.load([trained_run.model_dir, trained_run.model_dir])
    with pytest.raises(ConfigError, match="retrieval model that built it"):
        Service.load([trained_run.model_dir], index_dir)
    other = Path(shutil.copytree(trained_retrieval.model_dir, tmp_path / "other"))
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("seed: 0", "seed: 1"))
    with pytest.raises(ModelMismatchError, match="another model"):
        Service.load([other], index_dir)


def test_cli_serve_refuses_a_bad_combination(cli_main, trained_run, index_dir):
    result = cli_main("serve", trained_run.model_dir, "--index", index_dir)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "retrieval model" in result.stderr


# --------------------------------------------------------------------------- micro-batching

def concurrent_answers(client, images: list[bytes], questions: list[str]) -> list[dict]:
    def one(pair):
        image, question = pair
        response = client.post("/answer", files=upload(image), data={"question": question})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(len(images)) as pool:
        return list(pool.map(one, zip(images, questions)))


def test_concurrent_requests_share_one_forward_pass(trained_run, shapes_root):
    import vlfuse

    files = sorted((shapes_root / "images" / "train").iterdir())[:8]
    images = [f.read_bytes() for f in files]
    questions = [QUESTION, "Is the red object on the left?", "How many objects have the same shape as the "
                 "green object?", "What is the shape of the blue object?"] * 2
    predictor = vlfuse.load(trained_run.model_dir)
    expected = [predictor.predict(i, q) for i, q in zip(images, questions)]

    service = Service.load([trained_run.model_dir], settings=ServeSettings(max_batch=8, max_wait_ms=300))
    calls = count_forward_calls(service)
    with local_client(create_app(service)) as batched:
        answers = concurrent_answers(batched, images, questions)
    assert len(calls) < len(images) and max(calls) > 1, calls  # fewer passes than requests
    assert sum(calls) == len(images) and service.answer_batcher.batch_sizes == calls
    for got, want in zip(answers, expected):  # each row answered as if alone (padding changes nothing)
        assert got["answer"] == want.answer and got["confidence"] == pytest.approx(want.confidence, abs=1e-4)

    unbatched = Service.load([trained_run.model_dir], settings=ServeSettings(max_batch=1))
    calls = count_forward_calls(unbatched)
    with local_client(create_app(unbatched)) as one_by_one:
        concurrent_answers(one_by_one, images[:4], questions[:4])
    assert calls == [1, 1, 1, 1]


def test_micro_batcher_caps_batches_and_passes_errors_to_every_request():
    from vlfuse.serve.batching import MicroBatcher

    def double(items):
        if "boom" in items:
            raise ValueError("bad batch")
        return [2 * x for x in items]

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(double, pool, max_batch=3, max_wait_ms=50)
            await batcher.start()
            results = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
            failed = await asyncio.gather(batcher.submit("boom"), batcher.submit("x"), return_exceptions=True)
            await batcher.stop()
            return results, failed, batcher.batch_sizes

    results, failed, sizes = asyncio.run(scenario())
    assert results == [0, 2, 4, 6, 8, 10, 12]
    assert sizes[:3] == [3, 3, 1] and max(sizes) <= 3
    assert all(isinstance(f, ValueError) for f in failed)


# --------------------------------------------------------------------------- the real server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a second process importing torch: ~10-20 s on a busy 2-core machine; tests/serve/test_browser.py too
def test_vlfuse_serve_answers_on_loopback(trained_run, cli_environment, image_bytes):
    import httpx

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vlfuse.cli", "serve", str(trained_run.model_dir), "--port",
                               str(port), "--log-level", "warning", "--allowed-host", "vlfuse.lan"],
                              env=cli_environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {server.stdout.read()}")
                time.sleep(0.3)
        assert health.json()["vqa"] is not None
        for host, status in (("vlfuse.lan", 200), ("evil.example", 400)):  # --allowed-host; DNS rebinding
            assert httpx.get(f"http://127.0.0.1:{port}/health", headers={"host": host}).status_code == status
        answer = httpx.post(f"http://127.0.0.1:{port}/answer", files=upload(image_bytes),
                            data={"question": QUESTION}, timeout=30)
        assert answer.status_code == 200 and answer.json()["answer"]
    finally:
        server.terminate()
        server.wait(timeout=30)


# --------------------------------------------------------------------------- captioning

@pytest.fixture(scope="module")
def captioning_dir(shapes_root, tmp_path_factory) -> Path:
    """A tiny captioning model (CAPTIONING_TINY), trained here."""
    from vlfuse.tasks import train

    out = tmp_path_factory.mktemp("serve_captioning") / "run"
    return train(captioning_config(shapes_root, out), progress=False).model_dir


def test_caption_endpoint_batches_and_matches_the_python_api(captioning_dir, trained_run, shapes_root):
    import vlfuse

    files = sorted((shapes_root / "images" / "train").iterdir())[:4]
    captioner = vlfuse.load(captioning_dir)
    expected = [captioner.caption(f) for f in files]
    service = Service.load([captioning_dir, trained_run.model_dir], settings=ServeSettings(max_batch=4,
                                                                                           max_wait_ms=300))
    with local_client(create_app(service)) as client:
        assert client.get("/health").json()["captioning"]["model_dir"] == str(captioning_dir)

        def one(path):
            return client.post("/caption", files=upload(path.read_bytes())).json()

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(one, files))
        assert [g["caption"] for g in got] == expected
        assert len(service.caption_batcher.batch_sizes) < 4  # at least two shared a decoding pass
        assert_json_error(client.post("/caption", files=upload(b"not an image")), 400, "not an image")
        assert client.post("/answer", files=upload(files[0].read_bytes()),
                           data={"question": QUESTION}).status_code == 200  # the VQA model beside it
    with make_client([trained_run.model_dir]) as vqa_only:
        assert_json_error(vqa_only.post("/caption", files=upload(files[0].read_bytes())), 404,
                          "no captioning model")

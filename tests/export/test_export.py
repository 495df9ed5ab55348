"""vlfuse export: the tiny trained model as ONNX (fp32 and int8) against PyTorch, through the Python
API, the CLI and the server; the numpy region proposal against find_regions; bad input.

The fp32 graph must give the PyTorch logits within FP32_MAX_DIFF on batches of other sizes than the
one traced (dynamic batch and sequence axes) and the same answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="export needs onnx + onnxruntime (pip install 'vlfuse[export]')")
pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript (pip install 'vlfuse[export]')")

from conftest import SRC  # noqa: E402

FP32_MAX_DIFF = 1e-4  # max |logit difference| allowed between the fp32 graph and PyTorch
QUESTIONS = ["What is the shape of the red object?", "Is the green object on the left?",
             "How many objects have the same shape as the blue object?", "What is the shape of the object "
             "closest to the gray object?"]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The tiny trained model exported once (fp32) for the whole module."""
    from vlfuse.export import export_model

    info = export_model(trained_run.model_dir, tmp_path_factory.mktemp("export") / "onnx")
    return info


def split_batches(shapes_root, predictor):
    """The tiny data's images with every question, as batches of 1, 2 and all images."""
    from vlfuse.data.tokenizer import encode_ids, pad_ids
    from vlfuse.data.images import image_tensor

    files = sorted((shapes_root / "images" / "train").iterdir())[:5]
    images = torch.stack([image_tensor(f, predictor.config.data.image_size) for f in files])
    for count in (1, 2, len(files)):
        questions = [q for _ in range(count) for q in QUESTIONS[: 1 + count % 4]]
        ids, mask = pad_ids(encode_ids(predictor.tokenizer, questions, predictor.config.data.max_question_length))
        per_image = len(questions) // count
        yield images[:count], ids, mask, torch.arange(count).repeat_interleave(per_image)


def test_fp32_graph_gives_the_pytorch_logits(exported, trained_run, shapes_root):
    import vlfuse

    torch_model, onnx_model = vlfuse.load(trained_run.model_dir), vlfuse.load(exported["out_dir"])
    assert type(onnx_model).__name__ == "ExportedPredictor" and onnx_model.info["precision"] == "fp32"
    for batch in split_batches(shapes_root, torch_model):
        want, got = torch_model.logits(*batch), onnx_model.logits(*batch)
        assert got.shape == want.shape and got.shape[0] == len(batch[1])
        assert float((got - want).abs().max()) < FP32_MAX_DIFF
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        # row pairing (image_index None), as the server batches requests
        rows = batch[0][batch[3]]
        assert float((onnx_model.logits(rows, *batch[1:3]) - want).abs().max()) < FP32_MAX_DIFF
    check = exported["check"]
    assert check["max_abs_diff"] < FP32_MAX_DIFF and check["same_answers"] == check["questions"]


def test_exported_folder_predicts_like_the_model_in_python(exported, trained_run, shapes_root):
    import vlfuse

    image = sorted((shapes_root / "images" / "test").iterdir())[0]
    want = vlfuse.load(trained_run.model_dir).predict_many(image, QUESTIONS, top_k=3)
    got = vlfuse.load(exported["out_dir"]).predict_many(image, QUESTIONS, top_k=3)
    for g, w in zip(got, want):
        assert g.answer == w.answer and [a for a, _ in g.top] == [a for a, _ in w.top]
        assert g.confidence == pytest.approx(w.confidence, abs=1e-5)


def test_cli_exports_int8_and_predicts_from_both_folders(cli_main, exported, trained_run, shapes_root, tmp_path):
    out = tmp_path / "int8"
    result = cli_main("export", trained_run.model_dir, "--format", "onnx", "--int8", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"Wrote {out} (int8: model.onnx)" in result.stdout and "same answer for" in result.stdout
    info = json.loads((out / "export.json").read_text())
    assert info["precision"] == "int8" and info["graphs"]["model.onnx"][:4] == ["images", "input_ids", "attention_mask",
                                                                  "image_index"]
    fp32 = Path(exported["out_dir"]) / "model.onnx"
    assert (out / "model.onnx").stat().st_size < 0.6 * fp32.stat().st_size
    assert info["check"]["max_abs_diff"] < 0.5  # int8 weights move the logits, a little

    image = sorted((shapes_root / "images" / "test").iterdir())[0]
    answers = []
    for folder in (trained_run.model_dir, exported["out_dir"], out):
        result = cli_main("predict", folder, "--image", image, "--question", QUESTIONS[0], "--top-k", "2")
        assert result.returncode == 0, result.stderr
        answers.append(result.stdout.splitlines())
    assert answers[1] == answers[0]  # fp32: the same answer and the same printed probabilities
    assert len(answers[2]) == 3


def test_server_answers_from_the_exported_folder_like_pytorch(exported, trained_run, shapes_root):
    pytest.importorskip("fastapi", reason="the server needs FastAPI (pip install 'vlfuse[serve]')")
    from fastapi.testclient import TestClient

    import vlfuse
    from vlfuse.serve import ServeSettings, Service, create_app

    image = sorted((shapes_root / "images" / "train").iterdir())[1].read_bytes()
    want = vlfuse.load(trained_run.model_dir).predict(image, QUESTIONS[1], top_k=3)
    service = Service.load([exported["out_dir"]], settings=ServeSettings(max_batch=4))
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        files = {"image": ("image.png", image, "image/png")}
        body = client.post("/answer", files=files, data={"question": QUESTIONS[1], "top_k": 3}).json()
        assert body["answer"] == want.answer and body["confidence"] == pytest.approx(want.confidence, abs=1e-5)
        assert client.get("/health").json()["vqa"]["model_dir"] == exported["out_dir"]
        refused = client.post("/explain", files=files, data={"question": QUESTIONS[1]})
        assert refused.status_code == 400 and "exported (ONNX) model" in refused.json()["error"]


def test_numpy_region_proposal_matches_find_regions(shapes_root):
    from vlfuse.data.images import image_tensor
    from vlfuse.encoders.regions import find_regions
    from vlfuse.export.proposal import find_regions as find_regions_numpy

    files = sorted((shapes_root / "images" / "train").iterdir())[:6]
    images = torch.stack([image_tensor(f, 32) for f in files]).float() / 255
    images[-1] = 0.5  # a blank image: the whole image is the one region
    for max_regions in (10, 2):
        want = find_regions(images, max_regions)
        got = find_regions_numpy(images.numpy(), max_regions)
        assert np.array_equal(got["region_mask"], want.mask.numpy()) and got["region_mask"][-1].sum() == 1
        for name, field in (("region_boxes", want.boxes), ("region_centroids", want.centroids),
                            ("region_colors", want.colors), ("region_areas", want.areas)):
            np.testing.assert_allclose(got[name], field.numpy(), atol=1e-6, err_msg=name)


def test_bad_exports_and_folders_are_refused(cli_main, exported, trained_run, tmp_path):
    from vlfuse.errors import ConfigError, DataError
    from vlfuse.export.exporter import _refuse as refuse
    from vlfuse.export import load_exported

    cases = [(("export", trained_run.model_dir, "--format", "tflite"), "unknown export format 'tflite'"),
             (("export", exported["out_dir"]), "already an exported model")]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    cases.append((("export", trained_run.model_dir, "--out", tmp_path / "busy"), "other files in it"))
    for args, message in cases:
        result = cli_main(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"

    for task, scene_graphs, message in (("captioning", None, "vlfuse export takes vqa, matching, classification, "
                                         "retrieval"), ("vqa", "scenes.json", "trained with scene graphs")):
        config = SimpleNamespace(task=task, data=SimpleNamespace(scene_graphs=scene_graphs))
        with pytest.raises(ConfigError, match=message):
            refuse(SimpleNamespace(config=config), tmp_path)

    broken = shutil.copytree(exported["out_dir"], tmp_path / "broken")
    (broken / "model.onnx").unlink()
    with pytest.raises(DataError, match="model.onnx is missing"):
        load_exported(broken)
    (broken / "export.json").write_text("{")
    with pytest.raises(DataError, match="export.json"):
        load_exported(broken)


def test_import_vlfuse_loads_no_onnx():
    code = "import sys, vlfuse, vlfuse.cli, vlfuse.export; print(sorted(m for m in sys.modules if 'onnx' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": ""}).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("config_path, answers", [
    (Path("configs") / "matching_shapes.yaml", ["false", "true"]),
    # relative and anchored geometry: distance ranks computed by comparison, which the exporter traces
    (Path("src") / "vlfuse" / "configs" / "demo.yaml", ["yes", "no", "circle", "square", "1", "2"]),
    # single-stream's joint geometry: each word's place follows its attention from layer to layer
    (Path("configs") / "fusions" / "single_stream.yaml", ["yes", "no", "circle", "square", "1", "2"]),
])
def test_region_model_exports_with_its_proposal_outside_the_graph(trained_run, shapes_root, tmp_path, config_path,
                                                                  answers):
    """An untrained region-encoder model of a shipped config: the graph plus the numpy proposal give the
    PyTorch logits."""
    import vlfuse
    from vlfuse.config import load_config
    from vlfuse.data.answers import AnswerVocab
    from vlfuse.data.tokenizer import load_tokenizer
    from vlfuse.export import export_model
    from vlfuse.models.factory import build_task_model
    from vlfuse.models.saved import save_model_dir

    from conftest import REPO

    config = load_config(REPO / config_path, ["data.image_size=32"])
    tokenizer = load_tokenizer(trained_run.model_dir / "tokenizer.json")
    torch.manual_seed(0)
    model = build_task_model(config, tokenizer.get_vocab_size(), len(answers)).eval()
    source = save_model_dir(tmp_path / "source", model, config, tokenizer, AnswerVocab(answers))
    info = export_model(source, tmp_path / "onnx")
    assert info["region_proposal"] == {"max_regions": 10, "threshold": 0.25, "min_area": 4}
    torch_model, onnx_model = vlfuse.load(source), vlfuse.load(info["out_dir"])
    for batch in split_batches(shapes_root, torch_model):
        assert float((onnx_model.logits(*batch) - torch_model.logits(*batch)).abs().max()) < FP32_MAX_DIFF


@pytest.mark.slow
def test_retrieval_model_exports_as_embedding_and_matching_graphs(trained_retrieval, shapes_root, tmp_path):
    """image.onnx, text.onnx and match.onnx give the PyTorch embeddings and ITM scores; an index the
    PyTorch model built opens and searches with the export; serve takes it as the retrieval model."""
    from vlfuse.export import export_model
    from vlfuse.index import build_index, open_index
    from vlfuse.predict import load_encoder

    info = export_model(trained_retrieval.model_dir, tmp_path / "retrieval_onnx")
    assert set(info["graphs"]) == {"image.onnx", "text.onnx", "match.onnx"}
    torch_encoder, onnx_encoder = (load_encoder(d) for d in (trained_retrieval.model_dir, info["out_dir"]))
    assert type(onnx_encoder).__name__ == "ExportedRetrievalEncoder" and onnx_encoder.dim == torch_encoder.dim
    assert onnx_encoder.logit_scale == pytest.approx(torch_encoder.logit_scale)  # re-ranking weighs by it
    files = sorted((shapes_root / "images" / "train").iterdir())[:5]
    texts = ["a red circle", "a blue square at the top left and a green triangle", "gray"]
    np.testing.assert_allclose(onnx_encoder.embed_images(files), torch_encoder.embed_images(files), atol=FP32_MAX_DIFF)
    np.testing.assert_allclose(onnx_encoder.embed_texts(texts), torch_encoder.embed_texts(texts), atol=FP32_MAX_DIFF)
    images = torch.stack([torch_encoder.image_tensor(f) for f in files])
    for got, want in zip(onnx_encoder.match(images, texts[1]), torch_encoder.match(images, texts[1])):
        np.testing.assert_allclose(got, want, atol=FP32_MAX_DIFF)
    torch_encoder.model.flip_average = onnx_encoder.config.retrieval.flip_average = True  # each photo with its mirror
    np.testing.assert_allclose(onnx_encoder.embed_images(files), torch_encoder.embed_images(files), atol=FP32_MAX_DIFF)
    for got, want in zip(onnx_encoder.match(images, texts[1]), torch_encoder.match(images, texts[1])):
        np.testing.assert_allclose(got, want, atol=FP32_MAX_DIFF)
    torch_encoder.model.flip_average = onnx_encoder.config.retrieval.flip_average = False

    index_dir = tmp_path / "index"
    build_index(trained_retrieval.model_dir, images=shapes_root / "images" / "train", out=index_dir)
    want = open_index(index_dir, torch_encoder).search_vectors(torch_encoder.embed_texts(texts), 3)
    got = open_index(index_dir, onnx_encoder).search_vectors(onnx_encoder.embed_texts(texts), 3)
    assert [[h.position for h in row] for row in got] == [[h.position for h in row] for row in want]

"""`vlfuse export MODEL_DIR --format onnx [--int8]`: a saved model as an ONNX folder for onnxruntime.

The folder holds the model's config.yaml, tokenizer and answers (unchanged), its graphs (graphs.py:
model.onnx, or a retrieval model's image / text / match graphs) and export.json (each graph's inputs,
the precision, the region proposal settings, and how closely the export matched PyTorch on a check
batch). torch.onnx's dynamo exporter traces the graphs (torch 2.13's TorchScript exporter still runs,
but its graph of the tiny test model was 0.24 logits off PyTorch on a batch of another shape); int8 is
onnxruntime's dynamic quantization (int8 MatMul/Gemm weights, activations quantized at run time).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..models.saved import ANSWER_TASKS, ANSWERS, CONFIG, TOKENIZER, load_model_dir
from .info import EXPORT_INFO
from .graphs import dynamic_shapes, graph_inputs, input_names, proposal_settings, task_graphs

EXPORTED_TASKS = (*ANSWER_TASKS, "retrieval")
OPSET = 18
FP32_TOLERANCE = 1e-3  # max |logit difference| an fp32 export may show on the check batch


def check_batch(size: int, vocab: int, max_length: int, images: int = 3, questions: int = 5):
    """Scenes of a few coloured boxes on a grey ground (so region encoders find objects) and random
    questions of unequal lengths, each question about one of the images."""
    rng = np.random.default_rng(0)
    pictures = np.full((images, 3, size, size), 128, np.uint8)
    for picture in pictures:
        for _ in range(3):
            x, y = rng.integers(0, size - size // 4, 2)
            picture[:, y: y + size // 5, x: x + size // 5] = rng.integers(0, 256, (3, 1, 1))
    lengths = np.linspace(2, max(2, max_length), questions).astype(int)
    ids = torch.zeros(questions, lengths.max(), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.from_numpy(rng.integers(1, vocab, n))
    mask = torch.arange(ids.shape[1])[None] < torch.from_numpy(lengths)[:, None]
    index = torch.from_numpy(rng.integers(0, images, questions))
    return torch.from_numpy(pictures), ids, mask, index


def example_args(graph, batch: tuple, proposal: dict | None) -> tuple[torch.Tensor, ...]:
    """A check batch as `graph`'s positional inputs (pairs row-aligned for a graph that pairs rows)."""
    images, ids, mask, index = batch
    names = input_names(graph)
    feeds = graph_inputs(names, proposal, images=images[index] if graph.aligned else images, input_ids=ids,
                         attention_mask=mask, image_index=index)
    return tuple(torch.from_numpy(feeds[name]) for name in names)


def _trace(graph, args: tuple, path: Path) -> None:
    """torch.onnx (dynamo) with dynamic batch and sequence axes; quiet unless it fails."""
    quiet = logging.getLogger("torch.onnx")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph.eval(), args, dynamo=True, verbose=False, opset_version=OPSET,
                                        input_names=input_names(graph), output_names=list(graph.outputs),
                                        dynamic_shapes=dynamic_shapes(graph))
    except Exception as exc:  # the exporter's own messages are pages long: keep the first line
        model = graph.model
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"torch.onnx could not export this model ({type(model.image_encoder).__name__}, "
                          f"{type(getattr(model, 'fusion', None)).__name__}): {reason}") from None
    finally:
        quiet.level = level
    program.save(str(path))
    _drop_source_notes(path)


def _drop_source_notes(path: Path) -> None:
    """The exporter notes each node's Python source (metadata_props): about a tenth of the file, no use to
    onnxruntime."""
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:
        del node.metadata_props[:]
    onnx.save(graph, str(path))


def _quantize(fp32: Path, out: Path) -> None:
    """onnxruntime's pre-processing (shape inference, graph optimisation: it lets the quantizer find
    every MatMul), then dynamic quantization to int8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)


def _refuse(saved, model_dir: Path) -> None:
    task = saved.config.task
    if task not in EXPORTED_TASKS:
        raise ConfigError(f"{model_dir} holds a {task} model: vlfuse export takes {', '.join(EXPORTED_TASKS)} models")
    if saved.config.data.scene_graphs:
        raise ConfigError(f"{model_dir} was trained with scene graphs (data.scene_graphs): their encoding runs "
                          "outside any graph, so it cannot be exported")


def export_model(model_dir: str | Path, out_dir: str | Path | None = None, *, int8: bool = False,
                 fmt: str = "onnx") -> dict:
    """Export a saved model directory; returns export.json's contents (out_dir: MODEL_DIR_onnx[_int8])."""
    if fmt != "onnx":
        raise ConfigError(f"unknown export format {fmt!r}: expected onnx")
    model_dir = Path(model_dir)
    if (model_dir / EXPORT_INFO).is_file():
        raise DataError("is already an exported model: export the PyTorch model directory it came from",
                        path=model_dir)
    saved = load_model_dir(model_dir)
    _refuse(saved, model_dir)
    out = Path(out_dir) if out_dir else model_dir.with_name(model_dir.name + ("_onnx_int8" if int8 else "_onnx"))
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_INFO).is_file():  # an earlier export is replaced
        raise ConfigError(f"--out {out} is a folder with other files in it: give a new or empty folder")
    data, proposal = saved.config.data, proposal_settings(saved.model)
    example = check_batch(data.image_size, saved.tokenizer.get_vocab_size(), data.max_question_length, 2, 3)
    graphs = task_graphs(saved.model, saved.config.task)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, graph in graphs.items():
            fp32 = Path(tmp) / name
            _trace(graph, example_args(graph, example, proposal), fp32)
            _quantize(fp32, out / name) if int8 else shutil.move(fp32, out / name)
    from ..tasks.retrieval.querybank import BANK_FILE  # the query bank: an index ranks with it

    for name in (CONFIG, TOKENIZER, "tokenizer.sha256", ANSWERS, BANK_FILE):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    info = {"format": "onnx", "precision": "int8" if int8 else "fp32", "task": saved.config.task,
            "graphs": {name: input_names(graph) for name, graph in graphs.items()}, "opset": OPSET,
            "region_proposal": proposal, "source": str(model_dir.resolve()), "torch": torch.__version__}
    if saved.config.task == "retrieval":  # an index built by the PyTorch model opens with the export
        from ..index.fingerprint import model_fingerprint

        info["fingerprint"] = model_fingerprint(model_dir)
        info["logit_scale"] = float(saved.model.head.scale)  # re-ranking weighs the first stage by it
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    info["check"] = parity_check(saved, out, int8)
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {**info, "out_dir": str(out)}


def parity_check(saved, out: Path, int8: bool) -> dict:
    """The export against PyTorch on a batch of other sizes than the traced one (so the dynamic axes
    are exercised): max |difference| of every output and how many answers (or best matches) agree.
    An fp32 export that drifts past FP32_TOLERANCE is an exporter bug: refused, folder removed."""
    from .runtime import load_exported

    data = saved.config.data
    batch = check_batch(data.image_size, saved.tokenizer.get_vocab_size(), data.max_question_length)
    pairs = (_retrieval_outputs if saved.config.task == "retrieval" else _answer_outputs)(saved, load_exported(out),
                                                                                          batch)
    diff = max(float((got - want).abs().max()) for got, want in pairs)
    got, want = pairs[0]
    same = int((got.argmax(-1) == want.argmax(-1)).sum())
    if not int8 and not diff <= FP32_TOLERANCE:
        shutil.rmtree(out)
        raise ConfigError(f"the ONNX graph does not reproduce the model (max |difference| {diff:.3g} > "
                          f"{FP32_TOLERANCE}): export refused")
    return {"max_abs_diff": diff, "same_answers": same, "questions": len(want)}


@torch.no_grad()
def _answer_outputs(saved, exported, batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(exported.logits(*batch), saved.model(*batch)[0].float())]


@torch.no_grad()
def _retrieval_outputs(saved, exported, batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(text x image similarity, its reference) first, whose best image per text is compared; then
    the image and text embeddings and, for a model that re-ranks, its re-ranking scores."""
    images, ids, mask, _ = batch
    model = saved.model
    image_emb, text_emb = model.embed_images(images), model(images, ids, mask)[1]  # flip_average: both ways
    got_images = torch.from_numpy(exported.embed_image_tensors(images))
    got_texts = torch.from_numpy(exported.embed_text_ids(ids, mask))
    pairs = [(got_texts @ got_images.T, text_emb @ image_emb.T), (got_images, image_emb), (got_texts, text_emb)]
    if model.can_rerank:
        image, text = model.encode_images(images[:1].expand(len(ids), -1, -1, -1)), model.encode_texts(ids, mask)
        want = model.rerank_scores(image, text)[1]
        pairs.append((torch.from_numpy(exported.match_ids(images[:1].expand(len(ids), -1, -1, -1), ids, mask)[1]),
                      want))
    return pairs

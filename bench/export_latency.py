"""PyTorch vs its ONNX exports (fp32, int8): logit difference, answer agreement and accuracy on a whole
split, size on disk, batch-1 latency.

    python bench/export_latency.py runs/vqa/model                      # exports next to it if missing
    python bench/export_latency.py MODEL --onnx DIR --int8 DIR --split test --threads 1 --calls 300

Every question of the split is answered by all three, one image at a time with all of its questions
(as `Predictor.predict_many` runs). Latency is one image and one question per call, from decoded
inputs (uint8 image, token ids) to logits: the ONNX figures include the numpy region proposal where
the model has one. Torch and onnxruntime run on `--threads` threads each.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from bench.measure import latency_percentiles
from vlfuse.data.answers import normalize_answer
from vlfuse.data.loading import read_split
from vlfuse.data.tokenizer import encode_ids, pad_ids
from vlfuse.data.vqa_dataset import group_by_image
from vlfuse.data.images import image_tensor
from vlfuse.export.proposal import find_regions


def exported(model_dir: Path, folder: Path | None, int8: bool) -> Path:
    """The export folder given, or the default one next to the model (written if missing)."""
    from vlfuse.export import export_model, is_exported

    folder = folder or model_dir.with_name(model_dir.name + ("_onnx_int8" if int8 else "_onnx"))
    if not is_exported(folder):
        export_model(model_dir, folder, int8=int8)
    return folder


def split_inputs(predictor, split: str):
    """(uint8 image [1, 3, S, S], ids, mask, image_index, truths) per image of the split."""
    config = predictor.config
    for group in group_by_image(read_split(config.data, split).samples):
        ids, mask = pad_ids(encode_ids(predictor.tokenizer, [s.question for s in group.samples],
                                       config.data.max_question_length))
        images = image_tensor(group.image_path, config.data.image_size).unsqueeze(0)
        truths = [None if s.answer is None else normalize_answer(s.answer) for s in group.samples]
        yield (images, ids, mask, torch.zeros(len(ids), dtype=torch.long)), truths


def compare_on_split(predictors: dict, split: str) -> dict:
    """Per predictor: max |logit - PyTorch logit|, answers equal to PyTorch's, accuracy."""
    reference = predictors["pytorch"]
    stats = {name: {"max_abs_diff": 0.0, "same_answers": 0, "correct": 0} for name in predictors}
    questions = 0
    for batch, truths in split_inputs(reference, split):
        want = reference.logits(*batch)
        questions += len(truths)
        for name, predictor in predictors.items():
            got = want if predictor is reference else predictor.logits(*batch)
            s = stats[name]
            s["max_abs_diff"] = max(s["max_abs_diff"], float((got - want).abs().max()))
            s["same_answers"] += int((got.argmax(-1) == want.argmax(-1)).sum())
            s["correct"] += sum(reference.answers[i] == t for i, t in zip(got.argmax(-1).tolist(), truths))
    for s in stats.values():
        s["agreement"], s["accuracy"] = s["same_answers"] / questions, s["correct"] / questions
    return {"questions": questions, **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--onnx", type=Path, help="fp32 export (default MODEL_DIR_onnx, exported if missing)")
    parser.add_argument("--int8", type=Path, help="int8 export (default MODEL_DIR_onnx_int8, exported if missing)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results/export_vqa.json"))
    args = parser.parse_args()

    import vlfuse

    torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's thread count
    folders = {"pytorch": args.model_dir, "onnx_fp32": exported(args.model_dir, args.onnx, False),
               "onnx_int8": exported(args.model_dir, args.int8, True)}
    predictors = {name: vlfuse.load(folder) for name, folder in folders.items()}
    result = {"model_dir": str(args.model_dir), "split": args.split, "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              **compare_on_split(predictors, args.split)}
    batch, _ = next(split_inputs(predictors["pytorch"], args.split))
    one = (batch[0], batch[1][:1], batch[2][:1], batch[3][:1])
    for name, predictor in predictors.items():
        weights = folders[name] / ("model.safetensors" if name == "pytorch" else "model.onnx")
        p50, p99 = latency_percentiles(lambda: predictor.logits(*one), calls=args.calls, warmup=10)
        result[name].update(size_mb=weights.stat().st_size / 2**20, p50_ms=p50, p99_ms=p99)
        proposal = getattr(predictor, "info", {}).get("region_proposal")
        if proposal:  # of which: the numpy region proposal outside the graph
            pixels = one[0].numpy().astype("float32") / 255
            result[name]["proposal_p50_ms"] = latency_percentiles(lambda: find_regions(pixels, **proposal),
                                                                  calls=args.calls, warmup=10)[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{result['questions']} questions of {args.split}; {args.threads} thread(s)")
    print("| | max \\|Δ logit\\| vs PyTorch | same answer as PyTorch | accuracy % | size MB | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in predictors:
        s = result[name]
        print(f"| {name} | {s['max_abs_diff']:.2g} | {s['same_answers']}/{result['questions']} | "
              f"{100 * s['accuracy']:.2f} | {s['size_mb']:.2f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
    for name in predictors:
        if "proposal_p50_ms" in result[name]:
            print(f"{name}: of which numpy region proposal p50 {result[name]['proposal_p50_ms']:.2f} ms")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()

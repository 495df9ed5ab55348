"""Peak resident memory of training the model of a config for a few steps (run in its own process).

python -m bench.memory_probe configs/vqa_shapes.yaml --steps 10
Batches are the config's own shape (train.batch_images images, each with its questions); the
encoders see real-sized images, so the number is what `vlfuse train` of that config needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vlfuse.config import load_config
from vlfuse.models.factory import build_model


def _status_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process in MB. Not getrusage's ru_maxrss: that keeps
    the parent's peak across fork + exec, so a child would report the benchmark's own memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--questions-per-image", type=int, default=20)
    args = parser.parse_args()
    config = load_config(args.config, [])
    before = _status_mb("VmRSS")
    vocab, answers, images = 64, 32, config.train.batch_images
    questions, length = images * args.questions_per_image, config.data.max_question_length
    model = build_model(config, vocab, answers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    pixels = torch.randint(0, 256, (images, 3, config.data.image_size, config.data.image_size), dtype=torch.uint8)
    ids = torch.randint(1, vocab, (questions, min(length, 16)))
    image_index = torch.arange(images).repeat_interleave(args.questions_per_image)
    labels = torch.randint(0, answers, (questions,))
    for _ in range(args.steps):
        optimizer.zero_grad(set_to_none=True)
        logits, _ = model(pixels, ids, torch.ones_like(ids), image_index)
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
    print(json.dumps({"config": args.config, "peak_rss_mb": round(_status_mb("VmHWM"), 1),
                      "before_model_mb": round(before, 1), "images_per_batch": images,
                      "questions_per_batch": questions,
                      "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()

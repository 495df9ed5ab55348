"""Learning-rate range test (Smith 2017) for a VQA config (a script, not a test).

Trains the config's model from scratch for `--steps` steps on its train split while the learning
rate grows geometrically from `--low` to `--high`, and prints the smoothed training loss against
the learning rate. The rate where the loss falls fastest, and the one where it turns back up
(diverges), bracket a good peak: take about a third of the point where it turns. Uses the
config's batch size, weight decay and precision; reads only the train split.

    OMP_NUM_THREADS=1 nice python -m bench.lr_range src/vlfuse/configs/demo.yaml \\
        --set data.root=data/shapes4k --steps 150
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from vlfuse.config import load_config
from vlfuse.data.vqa_dataset import IGNORE_INDEX
from vlfuse.models.factory import build_model

from .vqa_step import make_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--low", type=float, default=1e-4)
    parser.add_argument("--high", type=float, default=3e-2)
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    batches, vocab, classes = make_batches(config, args.steps)
    torch.manual_seed(config.seed)
    model = build_model(config, vocab, classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.low, weight_decay=config.train.weight_decay)
    bf16 = config.train.precision.startswith("bf16")
    smoothed, best = None, float("inf")
    for i, batch in enumerate(batches):
        lr = args.low * (args.high / args.low) ** (i / max(1, args.steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_index"])
        loss = F.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE_INDEX)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip or float("inf"))
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.9 * smoothed + 0.1 * loss.item()
        best = min(best, smoothed)
        print(f"step {i:4d}  lr {lr:.2e}  loss {loss.item():.4f}  smoothed {smoothed:.4f}", flush=True)
        if smoothed > 4 * best:  # diverged: nothing more to learn from higher rates
            break


if __name__ == "__main__":
    main()

"""Seconds per training step of a generation config's two stages, float32 against bf16 autocast (a script).

Builds the config's VQ-VAE and prior and times AdamW steps at `train.batch_images` on random inputs of
the training shapes (images of data.image_size, captions of data.max_question_length tokens, code
grids): a step's cost depends on the shapes, not the values. Wall seconds, median of `--calls`, at the
thread count OMP_NUM_THREADS gives; run it on quiet cores, one at a time, for numbers that mean much.

    OMP_NUM_THREADS=2 python -m bench.generation_step configs/generation_shapes.yaml
    OMP_NUM_THREADS=2 python -m bench.generation_step configs/generation_shapes.yaml --set model.dim=192
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.measure import seconds_per_call, training_step
from vlfuse.config import load_config
from vlfuse.tasks.generation.predict import build_generator


def stage_steps(config, bf16: bool) -> dict:
    """{"VQ-VAE": step, "prior": step}: one AdamW step of each stage on inputs of the training shapes."""
    torch.manual_seed(config.seed)
    size, batch, g = config.data.image_size, config.train.batch_images, config.generation
    model = build_generator(config, vocab_size=64).train()
    images = torch.rand(batch, 3, size, size)
    side = model.prior.grid
    codes = torch.randint(0, g.codes, (batch, side, side))
    ids = torch.randint(0, 64, (batch, config.data.max_question_length))
    mask = torch.ones_like(ids, dtype=torch.bool)

    def vq_loss() -> torch.Tensor:
        out = model.vqvae(images)
        return out["reconstruction"] + g.commitment * out["commitment"]

    def prior_loss() -> torch.Tensor:
        drop = torch.rand(batch) < g.caption_dropout
        logits = model.prior(codes, ids, mask, drop).float()
        return F.cross_entropy(logits.flatten(0, 1), codes.flatten())

    return {"VQ-VAE": training_step(model.vqvae, vq_loss, bf16), "prior": training_step(model.prior, prior_loss, bf16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    print(f"threads {torch.get_num_threads()}, batch {config.train.batch_images}, prior width {config.model.dim}, "
          f"{config.generation.layers} layers")
    rows = {precision: {stage: seconds_per_call(step, warmup=3, calls=args.calls)
                        for stage, step in stage_steps(config, precision == "bf16").items()}
            for precision in ("fp32", "bf16")}
    print(f"{'':<6}{'VQ-VAE s/step':>15}{'prior s/step':>15}")
    for precision, seconds in rows.items():
        print(f"{precision:<6}{seconds['VQ-VAE']:>15.3f}{seconds['prior']:>15.3f}")


if __name__ == "__main__":
    main()

"""Seconds per training step of a generation config's two stages, float32 against bf16 autocast (a script).

Builds the config's VQ-VAE and prior and times AdamW steps of each stage's training loss at
`train.batch_images` on random inputs of the training shapes (images of data.image_size, captions of
data.max_question_length tokens): a step's cost depends on the shapes, not the values. Wall seconds, median of `--calls`, at the
thread count OMP_NUM_THREADS gives; run it on quiet cores, one at a time, for numbers that mean much.

    OMP_NUM_THREADS=2 python -m bench.generation_step configs/generation_shapes.yaml
    OMP_NUM_THREADS=2 python -m bench.generation_step configs/generation_shapes.yaml --set model.dim=192
"""

from __future__ import annotations

import argparse

import torch

from bench.measure import seconds_per_call, training_step
from vlfuse.config import load_config
from vlfuse.tasks.generation.module import GenerationModule
from vlfuse.tasks.generation.predict import build_generator


def stage_steps(config, bf16: bool) -> dict:
    """{"VQ-VAE": step, "prior": step}: one AdamW step of each stage, its loss as training computes it
    (GenerationModule.losses), on a batch of the training shapes."""
    torch.manual_seed(config.seed)
    size, batch, vocab = config.data.image_size, config.train.batch_images, 64
    model = build_generator(config, vocab).train()
    module = GenerationModule(model, config.generation, config.train, vq_steps=1, total_steps=2).train()
    inputs = {"images": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8),
              "input_ids": torch.randint(0, vocab, (batch, config.data.max_question_length))}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"], dtype=torch.bool)
    return {"VQ-VAE": training_step(model.vqvae, lambda: module.losses(inputs, "vq")["loss"], bf16),
            "prior": training_step(model.prior, lambda: module.losses(inputs, "prior")["loss"], bf16)}


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

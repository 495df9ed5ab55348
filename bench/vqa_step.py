"""Seconds per training step of a VQA config, with and without the region cache and bf16 (a script).

Builds the config's model, takes `--batches` batches of the config's train split as training
would (every question of each image), and times AdamW steps over them, variants interleaved
round by round so that load from other jobs falls on every variant alike. It reports CPU seconds
(process time) per step: on a CPU shared with other jobs that is the work a step costs, where wall
time mostly measures the neighbours; run it with OMP_NUM_THREADS=1 so the two agree on quiet cores.

  fp32        the config as it is (region cache on after the first pass over the batches)
  fp32 nocache  model.image_encoder.cache_regions=0: connected components searched every step
  bf16        bf16 autocast of forward and loss (train.precision=bf16-mixed), region cache on

    OMP_NUM_THREADS=1 nice python -m bench.vqa_step src/vlfuse/configs/demo.yaml --set data.root=data/shapes4k
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vlfuse.config import load_config
from vlfuse.data.answers import AnswerVocab
from vlfuse.data.loading import read_split
from vlfuse.data.tokenizer import build_tokenizer
from vlfuse.data.vqa_dataset import IGNORE_INDEX, GroupedVQADataset, collate_groups
from vlfuse.models.factory import build_model

VARIANTS = {"fp32": ([], False), "fp32 nocache": (["model.image_encoder.cache_regions=0"], False),
            "bf16": ([], True)}


def make_batches(config, count: int) -> tuple[list[dict], int, int]:
    read = read_split(config.data, "train")
    size = config.train.batch_images
    kept = set(list(dict.fromkeys(s.image_path for s in read.samples))[: size * count])
    samples = [s for s in read.samples if s.image_path in kept]
    tokenizer = build_tokenizer([s.question for s in read.samples])
    answers = AnswerVocab.build((s.answer for s in read.samples), config.data.max_answers)
    data = GroupedVQADataset(samples, tokenizer, answers, config.data.image_size, config.data.max_question_length,
                             read.skipped, progress=False)
    batches = [collate_groups([data[j] for j in range(i * size, (i + 1) * size)], with_samples=False)
               for i in range(count)]
    return batches, tokenizer.get_vocab_size(), len(answers)


def make_step(config, vocab: int, classes: int, bf16: bool):
    torch.manual_seed(config.seed)
    model = build_model(config, vocab, classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)

    def step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_index"])
        F.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE_INDEX).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches; each round steps over all")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = load_config(args.config, args.set)
    batches, vocab, classes = make_batches(base, args.batches)
    steps = {name: make_step(load_config(args.config, args.set + extra), vocab, classes, bf16)
             for name, (extra, bf16) in VARIANTS.items()}
    for step in steps.values():  # warm-up pass: fills the region cache, as the first epoch does
        for batch in batches:
            step(batch)
    seconds = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.process_time()
            for batch in batches:
                step(batch)
            seconds[name].append((time.process_time() - start) / len(batches))
    print(f"batch: {base.train.batch_images} images, {batches[0]['input_ids'].shape[0]} questions, "
          f"{torch.get_num_threads()} threads")
    reference = statistics.median(seconds["fp32 nocache"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:13s} {median:.3f} CPU s/step  ({reference / median:.2f}x the uncached fp32 step)")


if __name__ == "__main__":
    main()

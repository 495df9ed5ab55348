"""Peak memory and image throughput of one training epoch's data, loaded whole vs streamed (a script, not a test).

The training split of a config (default: the built-in shapes benchmark) is written once as tar
shards; then, each in a fresh process so that peak memory is its own, one epoch of batches is
built the way `vlfuse train` builds them (`prepare_vqa`'s datasets and `collate_groups`, no model):

  1. whole: `GroupedVQADataset` decodes every image into one tensor first (the default);
  2. stream: `StreamedVQADataset` (data.stream: true) decodes images as the shards go by, with 0
     and with 2 DataLoader workers.

Memory is the process's peak resident set (ru_maxrss, plus the workers' own peak); with
--image-size 224 the decoded split alone is 9,000 x 3 x 224 x 224 bytes = 1.35 GB.

    nice -n 5 python -m bench.stream_memory [--image-size 224] [--shards runs/bench_stream/shards]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vqa_shapes.yaml"
OUT = Path(__file__).resolve().parent / "results" / "stream_memory.json"


def _config(args, *extra: str):
    from vlfuse.config import load_config

    return load_config(args.config, [f"data.image_size={args.image_size}", "train.batch_images=32", *extra])


def _write_shards(args) -> None:
    from vlfuse.data.loading import read_split
    from vlfuse.data.shards import write_shards

    if (args.shards / "shards.json").is_file():
        return
    write_shards(read_split(_config(args).data, "train").samples, args.shards, prefix="train",
                 max_samples_per_shard=500, progress=True)


def _one_epoch(args) -> dict:
    """In this process: the datasets of mode args.mode, one epoch of collated batches; returns the numbers."""
    from functools import partial

    from torch.utils.data import DataLoader

    from vlfuse.data.answers import AnswerVocab
    from vlfuse.data.loading import read_split
    from vlfuse.data.tokenizer import build_tokenizer
    from vlfuse.data.vqa_dataset import GroupedVQADataset, collate_groups
    from vlfuse.data.vqa_stream import StreamedVQADataset

    config = _config(args, "data.format=webdataset", f"data.root={args.shards}", "data.train={path: .}",
                     "data.val=null", "data.test=null")
    start = time.perf_counter()
    read = read_split(config.data, "train")
    tokenizer = build_tokenizer(s.question for s in read.samples)
    answers = AnswerVocab.build((s.answer for s in read.samples), config.data.max_answers)
    data_args = (tokenizer, answers, config.data.image_size, config.data.max_question_length)
    if args.mode == "whole":
        dataset = GroupedVQADataset(read.samples, *data_args, read.skipped, progress=False)
        loader = DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=partial(collate_groups, with_samples=False))
    else:
        dataset = StreamedVQADataset(read.samples, *data_args, batch_size=32, workers=args.workers)
        loader = DataLoader(dataset, batch_size=32, collate_fn=partial(collate_groups, with_samples=False),
                            num_workers=args.workers)
    ready = time.perf_counter()
    images = sum(len(batch["images"]) for batch in loader)
    end = time.perf_counter()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mode": args.mode, "workers": args.workers, "images": images, "setup_s": round(ready - start, 1),
            "epoch_s": round(end - ready, 1), "images_per_s": round(images / (end - ready), 1),
            "peak_rss_mib": round(own), "worker_peak_rss_mib": round(workers) if args.workers else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--shards", type=Path, default=Path("runs/bench_stream/shards"))
    parser.add_argument("--mode", choices=["whole", "stream"], help=argparse.SUPPRESS)  # one child's part
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shards = args.shards.resolve()
    if args.mode:
        print(json.dumps(_one_epoch(args)))
        return
    _write_shards(args)
    rows = []
    for mode, workers in (("whole", 0), ("stream", 0), ("stream", 2)):
        child = subprocess.run([sys.executable, "-m", "bench.stream_memory", "--config", str(args.config),
                                "--image-size", str(args.image_size), "--shards", str(args.shards),
                                "--mode", mode, "--workers", str(workers)], capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    decoded_mib = rows[0]["images"] * 3 * args.image_size ** 2 / 2 ** 20
    result = {"image_size": args.image_size, "decoded_split_mib": round(decoded_mib), "runs": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'mode':8} {'workers':>7} {'peak RSS MiB':>12} {'workers MiB':>11} {'images/s':>9} {'setup s':>8}")
    for r in rows:
        print(f"{r['mode']:8} {r['workers']:>7} {r['peak_rss_mib']:>12} {r['worker_peak_rss_mib']:>11} "
              f"{r['images_per_s']:>9} {r['setup_s']:>8}")
    print(f"decoded training split: {decoded_mib:.0f} MiB; wrote {OUT}")


if __name__ == "__main__":
    main()

"""Epoch time with and without the feature cache (a script, not a test).

The config's task (retrieval, vqa, matching or classification) through the shared training loop (its
`prepare` + `make_trainer`), runs of EPOCHS epochs each on one config (default
configs/retrieval_coco_mini.yaml; Flickr8k: `--config configs/retrieval_flickr8k.yaml`; the Flickr8k
3-class set: `--config configs/classification_real.yaml`):

  1. no cache: every step runs EfficientNet over the batch's images and the text encoder over its texts
     (classification and matching: their in-memory copy of the image features is turned off too);
  2. cache, cold (only without --cache): the cache folder is empty, so setup computes every image's
     (and caption's) frozen features once;
  3. image cache, warm (data.cache_text=false): the frozen text encoder still runs at every step;
  4. both caches, warm: setup only hashes the image files and reads the features; only the
     projections, the tuned text layers (if any), the fusion and the heads run.

Prints setup time, each epoch's training time (wall and this process's CPU seconds: the machine may
be shared) and the ratio of the mean epoch times (no cache / both caches). Evaluation is left out
(data.val and data.test null): it is the same code with or without the cache.

    nice -n 5 python bench/cache_epoch.py [--epochs 2] [--out runs/bench_cache] [--set key=value ...]
    nice -n 5 python bench/cache_epoch.py --config configs/retrieval_flickr8k.yaml --cache cache/features \\
        --epochs 1 --set data.train_fraction=0.25
    nice -n 5 python bench/cache_epoch.py --config configs/classification_real.yaml --cache cache/features \\
        --epochs 1 --set data.train_fraction=0.1
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L

from vlfuse.config import load_config
from vlfuse.tasks import TASKS
from vlfuse.train.run import RunDirs, fit, make_trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "retrieval_coco_mini.yaml"


class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.steps: list[int] = []

    def on_train_epoch_start(self, trainer, module):
        self._start, self._cpu, self._step = time.perf_counter(), time.process_time(), trainer.global_step

    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu)
        self.steps.append(trainer.global_step - self._step)


@contextmanager
def no_memory_copy():
    """Without data.feature_cache, tasks matching and classification still run a frozen image backbone once
    per image at setup and keep its features in memory (tasks.labelled.data.cache_frozen_images); "no
    cache" turns that off too, so that every step runs the backbone, as it does for the other tasks."""
    from vlfuse.tasks.labelled import module

    keep = module.cache_frozen_images
    module.cache_frozen_images = lambda *args, **kwargs: False
    try:
        yield
    finally:
        module.cache_frozen_images = keep


def run(name: str, config_file: Path, overrides: list[str], out: Path) -> dict:
    config = load_config(config_file, overrides + [f"out_dir={out / name}"])
    L.seed_everything(config.seed, workers=True, verbose=False)
    dirs = RunDirs(Path(config.out_dir))
    start = time.perf_counter()
    prepared = TASKS[config.task].prepare(config, dirs.model_dir, False, False)
    setup = time.perf_counter() - start
    trainer = make_trainer(config, dirs, progress=False)
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    fit(trainer, prepared, None)
    mean = sum(timer.seconds) / len(timer.seconds)
    result = {"run": name, "setup_s": round(setup, 2), "epoch_s": [round(s, 2) for s in timer.seconds],
              "epoch_cpu_s": [round(s, 2) for s in timer.cpu_seconds], "steps": timer.steps,
              "mean_epoch_s": round(mean, 2), "mean_epoch_cpu_s": round(sum(timer.cpu_seconds) / len(timer.seconds), 2),
              "final_loss": float(trainer.callback_metrics.get("train_loss", float("nan")))}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_cache"))
    parser.add_argument("--cache", type=Path, default=None,
                        help="an already built cache folder (skips the cold run); default: a new one under --out")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    base = [f"train.epochs={args.epochs}", "train.max_minutes=null", "data.val=null", "data.test=null",
            "train.early_stopping=null",
            "train.progress_bar=false", "train.checkpoint_every_n_steps=1000000", *args.overrides]
    cached = base + [f"data.feature_cache={args.cache or args.out / 'features'}"]
    with no_memory_copy():
        results = [run("no_cache", args.config, base + ["data.feature_cache=null"], args.out)]
    if args.cache is None:
        results.append(run("cache_cold", args.config, cached, args.out))
    results += [run("image_cache", args.config, cached + ["data.cache_text=false"], args.out),
                run("both_caches", args.config, cached, args.out)]
    plain, both = results[0], results[-1]
    summary = {"config": str(args.config), "overrides": args.overrides, "runs": results,
               "epoch_ratio_no_cache_over_both": round(plain["mean_epoch_s"] / both["mean_epoch_s"], 2),
               "epoch_cpu_ratio_no_cache_over_both": round(plain["mean_epoch_cpu_s"] / both["mean_epoch_cpu_s"], 2)}
    (args.out / "bench_cache.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"mean epoch: no cache {plain['mean_epoch_s']:.1f} s, image cache {results[-2]['mean_epoch_s']:.1f} s, "
          f"both caches {both['mean_epoch_s']:.1f} s: {summary['epoch_ratio_no_cache_over_both']:.1f}x faster "
          f"({summary['epoch_cpu_ratio_no_cache_over_both']:.1f}x in CPU seconds)")


if __name__ == "__main__":
    main()

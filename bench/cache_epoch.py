"""Epoch time with and without the feature cache (a script, not a test).

Task retrieval on COCO-mini (configs/retrieval_coco_mini.yaml: frozen EfficientNet-Lite0 + frozen
MiniLM, cross-attention ITM head), the shared training loop (`prepare_retrieval` + `make_trainer`),
three runs of EPOCHS epochs each:

  1. no cache: every step runs EfficientNet over the batch's images;
  2. cache, cold: the cache folder is empty, so setup computes every image's features once;
  3. cache, warm: setup only hashes the image files and reads the features.

Prints setup time (data + model + cache), each epoch's training time, and the ratio of the mean
epoch times (no cache / warm cache). Test evaluation is left out (data.test: null): it is the same
code with or without the cache.

    nice -n 5 python bench/cache_epoch.py [--epochs 2] [--out runs/bench_cache] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import lightning as L

from vlfuse.config import load_config
from vlfuse.train.retrieval import prepare_retrieval
from vlfuse.train.run import RunDirs, fit, make_trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "retrieval_coco_mini.yaml"


class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []
        self.steps: list[int] = []

    def on_train_epoch_start(self, trainer, module):
        self._start, self._step = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(time.perf_counter() - self._start)
        self.steps.append(trainer.global_step - self._step)


def run(name: str, overrides: list[str], out: Path) -> dict:
    config = load_config(CONFIG, overrides + [f"out_dir={out / name}"])
    L.seed_everything(config.seed, workers=True, verbose=False)
    dirs = RunDirs(Path(config.out_dir))
    start = time.perf_counter()
    prepared = prepare_retrieval(config, dirs.model_dir, resume=False, progress=False)
    setup = time.perf_counter() - start
    trainer = make_trainer(config, dirs, progress=False)
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    fit(trainer, prepared, None)
    result = {"run": name, "setup_s": round(setup, 2), "epoch_s": [round(s, 2) for s in timer.seconds],
              "steps": timer.steps, "mean_epoch_s": round(sum(timer.seconds) / len(timer.seconds), 2),
              "final_loss": float(trainer.callback_metrics.get("train_loss", float("nan")))}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_cache"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    base = [f"train.epochs={args.epochs}", "train.max_minutes=null", "data.test=null", "train.progress_bar=false",
            "train.checkpoint_every_n_steps=1000000", *args.overrides]
    cache = args.out / "features"
    results = [run("no_cache", base, args.out),
               run("cache_cold", base + [f"data.feature_cache={cache}"], args.out),
               run("cache_warm", base + [f"data.feature_cache={cache}"], args.out)]
    plain, warm = results[0]["mean_epoch_s"], results[2]["mean_epoch_s"]
    summary = {"runs": results, "epoch_ratio_no_cache_over_cache": round(plain / warm, 2) if warm else None}
    (args.out / "bench_cache.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"mean epoch: no cache {plain:.2f} s, warm cache {warm:.2f} s: {plain / warm:.1f}x faster; "
          f"setup {results[0]['setup_s']:.1f} s / cold cache {results[1]['setup_s']:.1f} s / "
          f"warm cache {results[2]['setup_s']:.1f} s")


if __name__ == "__main__":
    main()

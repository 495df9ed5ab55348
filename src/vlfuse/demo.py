"""`vlfuse demo`: built-in data -> trained model -> evaluation -> report.md.

The budget is work (configs/demo.yaml's epochs), so a slower machine gives the same model later;
train.max_minutes there is a generous safety cap, and the report says so when it cut training.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .config import load_config

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def pick_examples(records: list[dict], per_family: int = 2) -> list[dict]:
    """A few test questions from each family, each about a different image, for the picture grid."""
    chosen, seen, images = [], {}, set()
    for r in records:
        if seen.get(r["family"], 0) < per_family and r["image"] not in images:
            seen[r["family"]] = seen.get(r["family"], 0) + 1
            images.add(r["image"])
            chosen.append(r)
    return chosen


def run_demo(out: Path, images: int = 4000, seed: int = 0, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Generate the data, train configs/demo.yaml's model for its epochs (train.max_minutes is only a
    safety cap), evaluate it and write report.md. `overrides`: `key=value` settings on top."""
    from .data.shapes import generate
    from .report import write_report
    from .tasks import train

    start = time.time()
    out = Path(out)
    data_dir, run_dir = out / "data", out / "run"
    if not (data_dir / "dataset.json").is_file():
        generate(data_dir, images=images, questions_per_image=20, seed=seed)
    config = load_config(DEMO_CONFIG, [f"data.root={data_dir}", f"out_dir={run_dir}", f"seed={seed}", *overrides])
    # A run cut by the safety cap (or Ctrl-C) keeps its checkpoint: the demo continues it.
    unfinished = (run_dir / "checkpoints" / "last.ckpt").is_file()
    reused = (run_dir / "run.json").is_file() and not unfinished
    if reused:  # finished earlier: report on it rather than train over it
        print(f"Reusing the finished run in {run_dir} (delete it to train again)", file=sys.stderr)
        metrics = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    else:
        result = train(config, resume=unfinished)
        if result.interrupted:
            raise KeyboardInterrupt  # Ctrl-C: the CLI says so; the next `vlfuse demo` continues the run
        metrics = result.test_metrics
    records = [json.loads(line) for line in (run_dir / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    fusion = config.model.fusion["name"]
    info = {
        "data": f"built-in shapes, {images} images x 20 questions (test split: {metrics['overall']['count']} questions)",
        "model": f"{config.model.image_encoder['name']} image encoder "
                 f"({config.model.image_encoder.get('layers', 0)} transformer layers over its tokens), "
                 f"{config.model.text_encoder['name']} text encoder, {fusion} fusion, dim {config.model.dim}",
        "parameters": f"{run['parameters']:,}",
        "training": training_line(run),
        "demo wall time": "(report rebuilt from an earlier run)" if reused else f"{time.time() - start:.0f} s",
        "reproduce": "vlfuse demo" + (f" --out {out}" if str(out) != "vlfuse-demo" else ""),
    }
    examples = [{"image": r["image"], "question": r["question"], "prediction": r["prediction"],
                 "truth": r["truth"], "confidence": r["confidence"]} for r in pick_examples(records)]
    return write_report(out, title="vlfuse demo: VQA on the built-in shapes benchmark", metrics=metrics,
                        examples=examples, metrics_csv=run_dir / "logs" / "metrics.csv", info=info,
                        notes=[f"{run['note']}; run the demo again to continue it (raise the cap with --set "
                               "train.max_minutes=...)"] if run.get("note") else [])


def training_line(run: dict) -> str:
    """`678 of 678 steps, 6 epochs, 312 s at 70.3 samples/s` from run.json."""
    planned = run.get("planned_steps", run["steps"])
    rate = f" at {run['samples_per_second']:g} samples/s" if run.get("samples_per_second") else ""
    return (f"{run['steps']} of {planned} steps, {run['epochs_completed']} epochs, "
            f"{run.get('training_seconds', run['wall_seconds']):.0f} s{rate}")

"""The benchmark suite: one command, one table, one JSON file.

    python -m bench.run                    # everything (about 10 minutes on 2 cores)
    python -m bench.run --quick            # a smoke run of every section (about a minute)
    python -m bench.run --sections pairs   # peak, fusions, pairs, memory: any subset
    python -m bench.run --bf16 --compile   # bf16 autocast everywhere, both sides of each pair compiled

Sections (all in one process, at one thread count, so ratios compare like with like):
  peak     the machine's measured matmul FLOP/s at the run's precision (the denominator of utilisation)
  fusions  every fusion at a stated size: training samples/s, FLOPs per sample, model FLOP
           utilisation, inference p50/p99 latency at batch 1 and samples/s at batch 64
  pairs    vlfuse beside the Hugging Face reference at matched size, random weights, same batch,
           same optimiser: training samples/s of each and the ratio (ours / reference)
  memory   peak resident memory of training the default config (configs/vqa_shapes.yaml)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .fusions import SKIPPED, TRANSFORMER_FUSIONS, FusionClassifier, fusion_names, loss_of
from .measure import count_flops, latency_percentiles, peak_matmul_flops, seconds_per_call, training_step
from .pairs import PAIRS, Size, make_batch

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def train_rate(model: torch.nn.Module, loss, batch, calls: int, bf16: bool) -> tuple[float, int]:
    """(training samples/s, FLOPs per step) of AdamW steps on `batch`."""
    model.train()
    flops = count_flops(training_step(model, lambda: loss(model, batch)))
    step = training_step(model, lambda: loss(model, batch), bf16)
    return len(batch.labels) / seconds_per_call(step, warmup=1, calls=calls), flops


def bench_fusions(size: Size, peak: float, calls: int, names: list[str], bf16: bool) -> list[dict]:
    rows = []
    big, one = make_batch(size, size.batch), make_batch(size, 1, seed=1)
    for name in names:
        torch.manual_seed(0)
        model = FusionClassifier(name, size)
        rate, flops = train_rate(model, loss_of, big, calls, bf16)
        model.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            p50, p99 = latency_percentiles(lambda: model(one), calls=10 * calls)
            infer = size.batch / seconds_per_call(lambda: model(big), warmup=1, calls=calls)
        rows.append({"fusion": name, "transformer": name in TRANSFORMER_FUSIONS,
                     "train_samples_per_s": rate, "train_gflop_per_sample": flops / size.batch / 1e9,
                     "mfu": rate * flops / size.batch / peak, "infer_p50_ms_b1": p50, "infer_p99_ms_b1": p99,
                     "infer_samples_per_s_b64": infer,
                     "parameters": sum(p.numel() for p in model.parameters())})
        print(f"  {name}: {rate:.0f} samples/s, MFU {rows[-1]['mfu']:.1%}", file=sys.stderr)
    return rows


def bench_pairs(size: Size, peak: float, calls: int, rounds: int, names: list[str], bf16: bool,
                compile_: bool) -> list[dict]:
    """Ours and the reference alternate `rounds` times; each side keeps its best median. Both sides
    get the same precision and, with `compile_`, both are compiled."""
    rows = []
    for key in names:
        torch.manual_seed(0)
        pair = PAIRS[key](size)
        batch = pair.batch(size)
        pair.ours.train(), pair.ref.train()
        flops = {"ours": count_flops(training_step(pair.ours, lambda: pair.ours_loss(pair.ours, batch))),
                 "ref": count_flops(training_step(pair.ref, lambda: pair.ref_loss(pair.ref, batch)))}
        ours_model = torch.compile(pair.ours) if compile_ else pair.ours
        ref_model = torch.compile(pair.ref) if compile_ else pair.ref
        steps = {"ours": training_step(ours_model, lambda: pair.ours_loss(ours_model, batch), bf16),
                 "ref": training_step(ref_model, lambda: pair.ref_loss(ref_model, batch), bf16)}
        best = {side: float("inf") for side in steps}
        for _ in range(rounds):
            for side, step in steps.items():
                best[side] = min(best[side], seconds_per_call(step, warmup=1, calls=calls))
        ours, ref = size.batch / best["ours"], size.batch / best["ref"]
        rows.append({"ours": pair.name, "reference": pair.reference, "ours_samples_per_s": ours,
                     "reference_samples_per_s": ref, "ratio": ours / ref,
                     "ours_mfu": ours * flops["ours"] / size.batch / peak,
                     "reference_mfu": ref * flops["ref"] / size.batch / peak,
                     "ours_gflop_per_sample": flops["ours"] / size.batch / 1e9,
                     "reference_gflop_per_sample": flops["ref"] / size.batch / 1e9,
                     "ours_parameters": sum(p.numel() for p in pair.ours.parameters()),
                     "reference_parameters": sum(p.numel() for p in pair.ref.parameters()),
                     "captions_per_image": pair.captions_per_image})
        print(f"  {pair.name} vs {pair.reference}: {rows[-1]['ratio']:.2f}x", file=sys.stderr)
    return rows


def bench_memory(config: Path, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.memory_probe", str(config), "--steps", str(steps)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    s = result["size"]
    console.print(f"{result['cpu']}, {result['threads']} threads, torch {result['torch']}, {result['precision']}"
                  f"{', pairs compiled' if result['compiled_pairs'] else ''}; "
                  f"peak matmul {result['peak_gflops']:.1f} GFLOP/s")
    if result.get("fusions"):
        table = Table(title=f"Fusions: dim {s['dim']}, {s['layers']} layers, {s['heads']} heads, "
                            f"{s['regions']} regions + {s['text_tokens']} words, train batch {s['batch']}")
        for col in ("fusion", "train samples/s", "GFLOP/sample", "MFU", "p50 ms (b1)", "p99 ms (b1)",
                    "infer samples/s (b64)"):
            table.add_column(col, justify="right" if col != "fusion" else "left")
        for r in result["fusions"]:
            table.add_row(r["fusion"], f"{r['train_samples_per_s']:.0f}", f"{r['train_gflop_per_sample']:.3f}",
                          f"{r['mfu']:.1%}", f"{r['infer_p50_ms_b1']:.2f}", f"{r['infer_p99_ms_b1']:.2f}",
                          f"{r['infer_samples_per_s_b64']:.0f}")
        console.print(table)
    if result.get("pairs"):
        table = Table(title="vlfuse vs Hugging Face reference (training samples/s, same size, batch, threads)")
        for col in ("vlfuse", "reference", "vlfuse samples/s", "reference samples/s", "ratio", "vlfuse MFU",
                    "reference MFU"):
            table.add_column(col, justify="left" if col in ("vlfuse", "reference") else "right")
        for r in result["pairs"]:
            table.add_row(r["ours"], r["reference"], f"{r['ours_samples_per_s']:.0f}",
                          f"{r['reference_samples_per_s']:.0f}", f"{r['ratio']:.2f}x", f"{r['ours_mfu']:.1%}",
                          f"{r['reference_mfu']:.1%}")
        console.print(table)
    if result.get("memory"):
        m = result["memory"]
        console.print(f"Peak memory training {m['config']}: {m['peak_rss_mb']:.0f} MB resident "
                      f"({m['images_per_batch']} images / {m['questions_per_batch']} questions per batch)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="peak,fusions,pairs,memory")
    parser.add_argument("--quick", action="store_true", help="small batch and few calls: checks that it runs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every model (peak measured in bf16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides of each pair")
    parser.add_argument("--fusions", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated subset of " + ",".join(PAIRS))
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "vqa_shapes.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    size = Size(batch=8, layers=1) if args.quick else Size()
    calls, rounds = (2, 1) if args.quick else (5, 3)
    start = time.time()
    peak = peak_matmul_flops(512 if args.quick else 2048, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    result = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "quick": args.quick,
              "precision": "bf16 autocast" if args.bf16 else "fp32", "compiled_pairs": args.compile,
              "size": asdict(size), "peak_gflops": peak / 1e9, "skipped_fusions": SKIPPED}
    if "fusions" in sections:
        names = args.fusions.split(",") if args.fusions else fusion_names()
        result["fusions"] = bench_fusions(size, peak, calls, names, args.bf16)
    if "pairs" in sections:
        result["pairs"] = bench_pairs(size, peak, calls, rounds, args.pairs.split(","), args.bf16, args.compile)
    if "memory" in sections:
        result["memory"] = bench_memory(args.config, 2 if args.quick else 10)
    result["wall_seconds"] = time.time() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_tables(result)
    print(f"wrote {args.out} ({result['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()

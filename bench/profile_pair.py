"""Where a matched pair's training step spends its time: the share in matrix products vs the rest.

    python -m bench.profile_pair lxmert [--steps 5] [--rows 12] [--bf16]

If both sides spend most of their time in the same matrix products at the same FLOPs, no
implementation detail can make one much faster than the other; only less work (lower precision,
fewer FLOPs) can.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from .measure import training_step
from .pairs import PAIRS, Size

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::convolution_backward",
              "aten::mkldnn_convolution")


def profile_step(step, steps: int) -> tuple[float, list]:
    """(share of self CPU time in matrix-product kernels, the key averages)."""
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    return matmul / total, sorted(events, key=lambda e: -e.self_cpu_time_total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pair", choices=list(PAIRS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as bench.run --bf16")
    args = parser.parse_args()
    size = Size()
    torch.manual_seed(0)
    pair = PAIRS[args.pair](size)
    batch = pair.batch(size)
    for name, model, loss in (("vlfuse " + pair.name, pair.ours, pair.ours_loss),
                              (pair.reference, pair.ref, pair.ref_loss)):
        model.train()
        share, events = profile_step(training_step(model, lambda: loss(model, batch), args.bf16), args.steps)
        total = sum(e.self_cpu_time_total for e in events) / args.steps / 1000
        print(f"\n{name}: {total:.1f} ms of CPU time per step, {share:.0%} of it in matrix products")
        for e in events[:args.rows]:
            print(f"  {e.key:<60} {e.self_cpu_time_total / args.steps / 1000:8.2f} ms  x{e.count // args.steps}")


if __name__ == "__main__":
    main()

"""Timing, FLOP counting and the machine's matmul peak, shared by the benchmark sections."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def peak_matmul_flops(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of a square matmul at this thread count: the denominator of model FLOP utilisation."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (matmuls, convolutions and attention, as PyTorch counts them)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def call_seconds(step: Callable[[], None], warmup: int, calls: int) -> list[float]:
    """Wall seconds of each of `calls` calls of `step`, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def seconds_per_call(step: Callable[[], None], warmup: int = 2, calls: int = 5) -> float:
    """Median wall seconds of `step`."""
    return statistics.median(call_seconds(step, warmup, calls))


def latency_percentiles(step: Callable[[], None], calls: int = 50, warmup: int = 5) -> tuple[float, float]:
    """(p50, p99) wall milliseconds of `step`."""
    times = sorted(1000 * t for t in call_seconds(step, warmup, calls))
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]


def training_step(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor], bf16: bool = False
                  ) -> Callable[[], None]:
    """One AdamW step of `model` on the loss that `loss_of` computes (the same optimiser for every
    model); with `bf16`, forward and loss run under CPU autocast (bf16 matmuls, fp32 weights)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of()
        loss.backward()
        optimizer.step()

    return step

"""A small timing harness: warm up, repeat, report the median and the spread. Used by the benchmarks and chapter 7."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], warmup: int = 3, repeats: int = 20,
              device: torch.device | None = None) -> dict[str, float]:
    """Seconds per call of ``fn``: ``median``, ``p10``, ``p90`` (and ``mean``) over ``repeats`` timed calls after
    ``warmup`` untimed ones. Runs under ``torch.inference_mode``; synchronises CUDA around each call."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1.")
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median": statistics.median(times), "p10": q[0], "p90": q[-1], "mean": statistics.fmean(times)}


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total

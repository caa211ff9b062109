"""A small timing harness: warm up, repeat, report the median and the spread; or time several strategies
interleaved, round after round. Used by the benchmarks and chapter 7."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch

from .workload import count


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], warmup: int = 3, repeats: int = 20, device: torch.device | None = None
) -> dict[str, float]:
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


def interleaved_timings(
    calls: dict[str, tuple[Callable[[], object], int]],
    rounds: int = 20,
    warmup: int = 3,
    device: torch.device | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Seconds of each call, once per round, the calls in a new random order every round (after ``warmup`` untimed
    rounds), so that a drift of the machine (another process, clock changes) hits every call alike and a ratio of
    two calls can be paired by round. ``calls`` maps a name to ``(function, images it processes)``.
    Returns one row per (round, name) with ``seconds``."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1.")
    order = list(calls)
    rng = random.Random(seed)
    rows = []
    with torch.inference_mode():
        for _ in range(warmup):
            for fn, _ in calls.values():
                fn()
        for r in range(rounds):
            rng.shuffle(order)
            for name in order:
                _sync(device)
                start = time.perf_counter()
                calls[name][0]()
                _sync(device)
                rows.append({"round": r, "strategy": name, "seconds": time.perf_counter() - start})
    count("timed", (warmup + rounds) * sum(images for _, images in calls.values()))
    return pd.DataFrame(rows)


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total

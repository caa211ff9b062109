"""Independent jobs side by side on a CPU: one worker process per thread this process was given, one thread each.

The tiny ViT's matrices are too small for a second thread to pay much: on two cores, two processes of one thread
each train about a fifth more adapters per minute than one process of two threads (``benchmarks/benchmark_limit.py``
measures it on the machine it runs on). And a training step's reductions round differently when they are split over
threads, so an adapter trained on two threads differs in its last bits from one trained on one. So on a CPU the
study trains every adapter on **one thread** (:func:`one_thread`), whatever the caller's setting, and when several
are missing it trains them side by side, as many at a time as :func:`job_slots` says
(:meth:`~lora_merge_utils.study.Study.ensure_adapters`). On a GPU jobs run one after another in the caller's process.

This module knows nothing of what a job is: the caller passes module-level functions (a worker's start, and the
work of one job), which a ``spawn``-ed worker imports by name.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager

import torch

from ._progress import tqdm
from .instrumentation.workload import KINDS, count, reset_work, work_done

JOBS_ENV_VAR = "LORA_BOOK_JOBS"
"""The environment variable that caps how many jobs run at a time on a CPU; without it, one job runs per thread torch
may use."""

PASSED_ON = tuple(kind for kind in KINDS if kind != "decoded")
"""The work tallies a worker hands back to its caller: everything but decoding, which each worker does again for
itself where the caller's session would have done it once (the time plan counts the session's)."""


def job_slots(device: torch.device | str) -> int:
    """How many jobs run side by side: on a CPU, one per thread torch may use in this process
    (``torch.get_num_threads()``, which ``OMP_NUM_THREADS`` sets), at most ``$LORA_BOOK_JOBS``; on a GPU, one.

    Example:
        >>> job_slots("cuda")
        1
    """
    if torch.device(device).type != "cpu":
        return 1
    slots = torch.get_num_threads()
    cap = os.environ.get(JOBS_ENV_VAR, "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise ValueError(f"${JOBS_ENV_VAR} must be a whole number of at least 1, got {cap!r}.")
        slots = min(slots, int(cap))
    return max(1, slots)


@contextmanager
def one_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run torch's CPU kernels on one thread inside the block on a CPU (the caller's setting is restored after it);
    on a GPU, nothing changes."""
    if torch.device(device).type != "cpu":
        yield
        return
    from .combine import one_thread as cpu_one_thread

    with cpu_one_thread():
        yield


def run_jobs(
    jobs: Sequence,
    work: Callable[[object], None],
    slots: int,
    start: Callable[..., None] | None = None,
    start_args: tuple = (),
    desc: str = "jobs",
    progress: bool = True,
) -> None:
    """Run ``work(job)`` for every job: in ``slots`` worker processes of one thread each, each set up once by
    ``start(*start_args)``, or here one after another when ``slots`` (or the number of jobs) is one. ``work`` and
    ``start`` must be module-level functions (a worker imports them by name); what a worker tallies
    (:mod:`lora_merge_utils.instrumentation.workload`) is added to this process's tallies. A job that fails stops
    the others and raises its error here; so does Ctrl-C or a stop signal."""
    jobs = list(jobs)
    slots = min(slots, len(jobs))
    if slots <= 1:
        if start is not None:
            start(*start_args)
        for job in tqdm(jobs, desc=desc, disable=not progress or len(jobs) < 2):
            work(job)
        return
    # spawn, not fork: torch's thread pools do not survive a fork, and a Jupyter kernel has threads of its own
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(slots, context, _start_worker, (start, start_args))
    try:
        futures = [executor.submit(_run_job, work, job) for job in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress):
            for kind, amount in future.result().items():
                count(kind, amount)
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown()


def _start_worker(start: Callable[..., None] | None, start_args: tuple) -> None:
    """A worker's one thread, and Ctrl-C left to the caller (which stops its workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if start is not None:
        start(*start_args)


def _run_job(work: Callable[[object], None], job: object) -> dict[str, int]:
    reset_work()
    work(job)
    done = work_done()
    return {kind: done[kind] for kind in PASSED_ON}


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop every worker now (what they were saving is written atomically, so nothing half-saved stays)."""
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)

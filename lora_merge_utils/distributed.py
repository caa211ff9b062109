"""The study on several processes with Hugging Face Accelerate: ``accelerate launch -m lora_merge_utils run``.

Run directly, ``python -m lora_merge_utils run`` is one process and calls :func:`~lora_merge_utils.study.run_study`
as it always has: no Accelerate configuration, no ``torch.distributed``. Under ``accelerate launch`` (or
``torchrun``, or ``mpirun``: any launcher that sets ``WORLD_SIZE``), :func:`run_study_scaled` shares the same work
among the processes and writes the same tables:

1. **Training, whole jobs per process.** The baseline heads that are missing are dealt out one task per job, then
   the missing adapters one (task, seed) per job. Each job is seeded on its own (``Study.seed_of``), so an adapter
   comes out byte for byte the same whichever process trains it, and each is saved once, atomically, by the process
   that trained it. The launch's main process holds the folder's training lock for all of its processes
   (:func:`~lora_merge_utils.safe_io.lock_held_by_launch`), so they do not refuse each other while a run launched
   separately is still refused.
2. **Singles**, one training seed per process, gathered with ``gather_object``.
3. **The merge grid**: the (seed, merge, method) cells not scored yet are dealt out; each process scores its share
   and saves each merge's result atomically as it goes (``results/scores``, the
   :class:`~lora_merge_utils.evaluation.ScoreStore` that chapters share). A process killed mid-grid loses only the
   merge it was scoring; the next launch scores only what is missing.
4. **The tables**: the main process reads the whole grid back through the code a single process uses
   (``Study.merges_table``) and writes ``singles.csv``, ``merges.csv`` and ``summary.csv`` once, atomically,
   after every process is done. Same rows, same order, same bytes as one process.

Why whole jobs rather than data-parallel training: a study trains many small, independent adapters (tasks x seeds:
18 in the tiny profile, 6 or more in the full one), so whole jobs keep every process busy without any
communication during training, and results stay identical to one process. Data-parallel training would all-reduce
gradients every step (costly next to a small LoRA's compute), change the batches each process sees (so adapters
would agree with a single process only within a tolerance), and help only when there are fewer jobs than processes.

Every process must see the same artifacts folder (one machine, or a shared filesystem across machines).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ._progress import tqdm
from .evaluation import merge_combinations
from .methods import MergeSpec
from .profiles import Profile, progress_enabled
from .safe_io import FolderBusy, lock_held_by_launch, training_lock
from .study import DEFAULT_METHODS, Study, check_grid_methods, run_study, write_results

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Where launchers say how many processes they started: torchrun and ``accelerate launch``, then MPI flavours."""


def launched_processes() -> int:
    """How many processes a launcher started for this run (1 when the program was run directly)."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return int(value)
    return 1


def deal(state, jobs: list) -> list:
    """This process's share of ``jobs``, dealt like cards (job ``i`` to process ``i mod n``): costly and cheap jobs
    (triples and pairs, large and small tasks) alternate in the lists we deal, so every process gets a similar mix,
    where contiguous blocks would give one process all the triples. ``split_between_processes`` hands each process
    its hand."""
    hands = [jobs[i :: state.num_processes] for i in range(state.num_processes)]
    with state.split_between_processes(hands) as mine:
        return list(mine[0]) if mine else []


def together(state, step: Callable[[], Any]) -> list:
    """Run ``step`` on every process and wait for all of them; return every process's result, in process order.

    If any process fails, every process stops here instead of waiting forever at the next collective: the one that
    failed raises its own error, the main process raises a ``ValueError`` naming the failed processes, and the
    others exit quietly with status 2 (so the message is printed once per failure, not once per process).
    """
    from accelerate.utils import gather_object

    error: BaseException | None = None
    result = None
    try:
        result = step()
    except Exception as caught:  # shared with the other processes, then raised again below
        error = caught
    report = None if error is None else f"process {state.process_index}: {type(error).__name__}: {error}"
    gathered = gather_object([(report, result)])
    if error is not None:
        raise error
    failures = [r for r, _ in gathered if r is not None]
    if failures:
        if state.is_main_process:
            raise ValueError(f"{len(failures)} of {state.num_processes} processes failed: " + "; ".join(failures))
        raise SystemExit(2)
    return [r for _, r in gathered]


def _wants_cpu(device: str | torch.device | None) -> bool:
    """Whether this launch runs on CPUs (gloo): asked with ``--device cpu`` or ``accelerate launch --cpu``, or
    there is no GPU."""
    from accelerate.utils import parse_flag_from_env

    if device is not None:
        return torch.device(device).type == "cpu"
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def _process_device(state, device: str | torch.device | None) -> torch.device:
    """The device of this process: the one Accelerate gave it (``cuda:<local rank>``), unless a specific one was
    asked for; a bare ``cuda`` would put every process on the first GPU."""
    if state.device.type == "cpu":
        return torch.device("cpu")
    if device is None or torch.device(device) == torch.device("cuda"):
        return state.device
    return torch.device(device)


def run_study_scaled(
    profile: Profile | str | None = "tiny",
    out: Path | str | None = None,
    methods=DEFAULT_METHODS,
    device: str | None = None,
    progress: bool | None = None,
) -> dict[str, pd.DataFrame] | None:
    """:func:`~lora_merge_utils.study.run_study` on every process of a launch, each doing its share (see the module
    docstring). Returns the tables on the main process and ``None`` on the others; writes what ``run_study``
    writes. With one process it is ``run_study`` itself."""
    if launched_processes() == 1:  # exactly as today: Accelerate is not even imported
        return run_study(profile, out, methods=methods, device=device, progress=progress)
    check_grid_methods(methods)  # before any process trains
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=_wants_cpu(device))
    progress = progress_enabled() if progress is None else progress
    study = Study.open(
        profile, out, device=_process_device(state, device), progress=progress and state.is_main_process
    )  # bars from one process only
    tasks, seeds = list(study.profile.tasks), study.seeds

    # Data first, on the main process alone: a sample drawn from the Hub or a generated task is built and saved
    # once, and the other processes then read it instead of building it side by side.
    with state.main_process_first():
        for task in tasks:
            study.task(task)

    # The main process decides what is missing and takes the folder's lock, so all processes act on one view.
    decision: list = [None]
    with ExitStack() as lock:
        if state.is_main_process:
            heads = [task for task in tasks if not study.store.has_head(task)]
            adapters = [(task, seed) for seed in seeds for task in tasks if not study.store.has_adapter(task, seed)]
            refused = None
            if heads or adapters:
                try:
                    lock.enter_context(training_lock(study.root))
                except FolderBusy as error:
                    refused = str(error)
            decision = [(heads, adapters, refused)]
            print(
                f"{state.num_processes} processes ({state.backend}): {len(heads)} head(s) and {len(adapters)} "
                f"adapter(s) to train, then {len(seeds)} seed(s) of singles and the merge grid",
                flush=True,
            )
        heads, adapters, refused = broadcast_object_list(decision)[0]
        if refused is not None:
            if state.is_main_process:
                raise FolderBusy(refused)
            raise SystemExit(2)
        if (heads or adapters) and not state.is_main_process:
            lock.enter_context(lock_held_by_launch(study.root))
        together(state, lambda: _train_share(study, deal(state, heads), "baselines", study.ensure_head))
        together(
            state,
            lambda: _train_share(study, deal(state, adapters), "adapters", lambda job: study.ensure_adapter(*job)),
        )

    parts = together(state, lambda: [(seed, study.singles_table(seeds=seed)) for seed in deal(state, seeds)])
    singles = pd.concat(
        [table for _, table in sorted((p for share in parts for p in share), key=lambda p: p[0])], ignore_index=True
    )

    specs = [MergeSpec.of(m) for m in methods]
    cells = [(seed, combo, spec) for seed in seeds for combo in merge_combinations(tasks) for spec in specs]
    todo: list = [None]
    if state.is_main_process:
        stores = {seed: study.score_store(seed) for seed in seeds}
        counts = {seed: singles[singles["seed"] == seed].set_index("task")["num_images"].to_dict() for seed in seeds}
        todo = [[(seed, c, spec) for seed, c, spec in cells if stores[seed].get(c, spec, counts[seed]) is None]]
    todo = broadcast_object_list(todo)[0]
    together(state, lambda: _score_share(study, singles, deal(state, todo)))

    if not state.is_main_process:
        return None
    merges = study.merges_table(singles, methods=methods, cache=True)  # every cell is in the store by now
    return write_results(study, singles, merges, methods)


def _train_share(study: Study, share: list, label: str, train: Callable[[Any], object]) -> int:
    """Train (or check) this process's jobs; only their number travels back, not the weights."""
    for job in tqdm(share, desc=f"{label} (this process's share)", disable=not study.progress):
        train(job)
    return len(share)


def _score_share(study: Study, singles: pd.DataFrame, share: list) -> int:
    """Score this process's (seed, merge, method) cells, saving each merge's result as it goes; the adapters of a
    seed are loaded once."""
    for seed in sorted({seed for seed, _, _ in share}):
        model, heads = study.load_all_adapters(seed=seed)
        for spec in dict.fromkeys(spec for s, _, spec in share if s == seed):  # in order, once each
            combos = [combo for s, combo, other in share if s == seed and other == spec]
            study.merges_table(singles, methods=[spec], combos=combos, model=model, heads=heads, cache=True, seeds=seed)
    return len(share)

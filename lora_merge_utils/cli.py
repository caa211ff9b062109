"""Command line: ``python -m lora_merge_utils <command>`` runs the study, or one step of it, headless."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .course.sandbox import MODES as SANDBOX_MODES

# Only torch-free modules at the top: --help, list and argument errors print at once (torch loads in the commands).
from .methods import COMMAND_LINE, DEFAULT_METHODS, KNOBS, MERGE_METHODS, SEED, check_merge_request, takers
from .profiles import FIELDS, PROFILES, check_task_name, default_profile_name, get_profile
from .stops import StopHandler, Terminated

if TYPE_CHECKING:
    import pandas as pd

DESCRIPTION = """Train, merge and evaluate LoRA adapters of a vision transformer.

Every command reads what earlier steps saved under --out and trains only what is missing, so commands can be run in
any order. `run` does everything; the others do one thing at a time."""


def _folder(text: str) -> Path:
    """``--out``'s value: a folder's name, never the empty string (which would be the current folder unasked)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--out needs a folder's name; give '.' to mean the current folder")
    return Path(text)


def _at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``, refused by the parser itself (before any work) in
    its ``error: argument --x: ...`` line. Ranges that depend on the profile (a seed below its number of seeds) are
    checked once the profile is known."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}; give a whole number from {minimum} up")
        return value

    whole.__name__ = f"whole number from {minimum}"
    return whole


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=None,
        choices=sorted(PROFILES),
        help="tiny: offline CPU; full: Colab GPU (default: $LORA_BOOK_PROFILE, else full on a Colab GPU, else tiny)",
    )
    parser.add_argument(
        "--out",
        type=_folder,
        default=None,
        help="artifact root (default: $LORA_BOOK_ARTIFACTS/<profile>, else artifacts/<profile>)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


PROG = "lora-merge"
"""The installed script's name (``[project.scripts]``); ``python -m lora_merge_utils`` passes its own."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line's parser; ``prog`` is how usage and error lines name the command."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="the whole study: baselines, adapters, all pairs and triples, tables",
        description="Train what is missing, then evaluate single adapters and every pair and "
        "triple merge; write results/singles.csv, merges.csv, summary.csv and "
        "heatmaps under --out, and print a summary. Under `accelerate "
        "launch ... -m lora_merge_utils run` the processes share the work and "
        "write the same tables (see book/scaling.md).",
    )
    _common(run)
    run.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=list(MERGE_METHODS),
        help=f"merge methods to compare (default: {' '.join(DEFAULT_METHODS)})",
    )

    head = commands.add_parser(
        "train-head",
        help="train (or load) the head-only baseline of one task",
        description="Frozen backbone + linear head for one task; saved under heads/<task>/.",
    )
    _common(head)
    head.add_argument("--task", required=True)
    head.add_argument("--retrain", action="store_true", help="train again even if saved")

    adapter = commands.add_parser(
        "train-adapter",
        help="train (or load) the LoRA adapter of one task",
        description="One LoRA adapter + its own head for one task, saved in PEFT format under "
        "adapters/<task>/seed-<k>/.",
    )
    _common(adapter)
    adapter.add_argument("--task", required=True)
    adapter.add_argument("--seed", type=_at_least(0), default=0, help="training seed index (adapters/<task>/seed-<k>)")
    adapter.add_argument("--retrain", action="store_true", help="train again even if saved")

    evaluate = commands.add_parser(
        "evaluate",
        help="test accuracy of one task's head baseline and adapter",
        description="Score one task's head-only baseline and its single adapter.",
    )
    _common(evaluate)
    evaluate.add_argument("--task", required=True)

    merge = commands.add_parser(
        "merge",
        help="merge some adapters and score each member task",
        description="Merge the adapters of the given tasks with one method and score each "
        "member task with its own head, against its single adapter.",
    )
    _common(merge)
    merge.add_argument("tasks", nargs="+", help="tasks whose adapters to merge")
    merge.add_argument("--method", default="task_arithmetic", choices=list(MERGE_METHODS))
    merge.add_argument("--weights", type=float, nargs="+", default=None, help="one per task (default: 1/K each)")
    merge.add_argument("--scale", type=float, default=None, help="instead of --weights: the same weight for all")
    for knob in KNOBS.values():  # one flag per knob the methods declare (lora_merge_utils.methods.KNOBS)
        merge.add_argument(
            COMMAND_LINE.knob(knob.name),
            type=knob.values.kind,
            default=None,
            help=f"{knob.help}; {knob.range}; for {', '.join(takers(knob.name))}",
        )
    merge.add_argument(
        "--refit-heads",
        action="store_true",
        help="refit each task's head on the merged backbone's features (labelled training images)",
    )
    merge.add_argument("--seed", type=_at_least(0), default=0, help=f"{SEED.help}; {SEED.range}")
    merge.add_argument(
        "--adapter-seed",
        type=_at_least(0),
        default=0,
        help="which training seed's adapters to merge (0 .. profile seeds - 1)",
    )

    tune = commands.add_parser(
        "tune",
        help="choose every merge family's hyperparameters on validation data (chapter 5's table)",
        description="Score every candidate of the tuning grid (one scale grid and one density grid shared by every "
        "merge method) on the validation split of the tuning pairs (adapters of seed 0), mark each family's best, "
        "and write the table chapter 5 reads (CSV, with a JSON header beside it saying what it was computed from). "
        "Each merge's score is cached under --out, so an interrupted run resumes.",
    )
    _common(tune)
    tune.add_argument(
        "--grid",
        default=None,
        choices=FIELDS["budget.tuning_grid"].values.choices,
        help="shared: every method on the same scales and densities; compact: three of each, without the official "
        "dense recipes and KnOTS's DARE-TIES (default: the profile's budget.tuning_grid)",
    )
    tune.add_argument(
        "--pairs", type=_at_least(1), default=None, help="pairs to tune on (default: the profile's budget.tuning_pairs)"
    )
    tune.add_argument("--table", type=Path, default=None, help="the CSV to write (default: <out>/results/tuning.csv)")

    commands.add_parser(
        "list",
        help="profiles, tasks and merge methods",
        description="List the profiles with their tasks, and the merge methods.",
    )

    plan = commands.add_parser(
        "plan",
        help="expected time of every chapter on a Colab T4",
        description="Replay what each chapter does (images decoded, trained and evaluated, "
        "merges) for a profile and print the expected minutes per chapter on a "
        "Colab T4: in order with artifacts kept on Drive, and alone on a fresh "
        "runtime. Estimates, from the throughput figures in "
        "lora_merge_utils.course.plan.T4.",
    )
    plan.add_argument("--profile", default="full", choices=sorted(PROFILES), help="default: full")
    plan.add_argument(
        "--measured",
        type=Path,
        default=None,
        metavar="FILE",
        help="price the chapters with the GPU rates scripts/gpu_check.py measured (make gpu-check) instead of T4's",
    )

    grade = commands.add_parser(
        "grade",
        help="grade a folder of submitted student notebooks into a CSV",
        description="Run the instructor's copy of each chapter once for the reference answers, then every .ipynb "
        "in FOLDER top to bottom, each in a scratch folder of its own (a cell that raises does not stop it), "
        "and compare the answers it stores with the reference, outside the submission's kernel. Writes one "
        "row per student to --out (an ID, points per exercise, empty columns for the exercises graded by "
        "hand, totals, a status) and, in the folder --out names without .csv, each executed notebook (.ipynb, "
        ".html) and a feedback file. A submission that hangs, crashes or is not a notebook gets a row that "
        "says so. Set $LORA_BOOK_ARTIFACTS to share trained adapters between submissions.",
    )
    grade.add_argument("folder", type=Path, help="the folder of submitted notebooks")
    grade.add_argument(
        "--out", dest="csv", type=Path, default=Path("scores.csv"), help="the CSV to write (default scores.csv)"
    )
    grade.add_argument("--jobs", type=_at_least(1), default=1, help="submissions graded at once (default 1)")
    grade.add_argument(
        "--cell-timeout",
        type=_at_least(1),
        default=None,
        help="seconds per cell (default: from the chapter's measured time)",
    )
    grade.add_argument(
        "--notebook-timeout", type=_at_least(1), default=None, help="seconds per submission (default: likewise)"
    )
    grade.add_argument(
        "--chapters",
        type=Path,
        default=None,
        help="the instructor's chapters with solutions (default: notebooks/ of this repository)",
    )
    grade.add_argument(
        "--sandbox",
        choices=SANDBOX_MODES,
        default="auto",
        help="where each notebook runs: bwrap, a bubblewrap sandbox that holds none of your files, other submissions "
        "or network; none, with your permissions; auto (default), bwrap wherever it works, else none with a warning",
    )
    report = commands.add_parser(
        "report",
        help="will my adapters merge? the book's answer for your own PEFT adapters",
        description="Read a base model (a timm model name with --weights, or a local timm or transformers model "
        "folder), your PEFT LoRA adapters (each with its head: in modules_to_save, a head file beside it, or "
        "--head) and each task's data (an image folder with train/, val/, test/ and a folder per class, or a "
        "datasets folder written by save_to_disk); check them against each other before any work; score each "
        "adapter against its frozen-backbone floor and every merge with task arithmetic and chapter 5's best "
        "data-free and data-light families (magnitude pruning, AdaMerging on its short schedule), each tuned on the "
        "validation split; and write report.md, report.html, summary.json and the recommended "
        "merge under --out. Offline; CUDA when present.",
    )
    report.add_argument("--base", required=True, help="timm model name (with --weights), or a local model folder")
    report.add_argument("--weights", type=Path, default=None, help="the timm model's weights file")
    report.add_argument(
        "--base-args", type=_json_object, default=None, help="the timm model's creation arguments, as JSON"
    )
    report.add_argument(
        "--adapter", action="append", type=_named, required=True, metavar="NAME=DIR", help="a PEFT adapter folder"
    )
    report.add_argument(
        "--data", action="append", type=_named, required=True, metavar="NAME=DIR", help="that task's data folder"
    )
    report.add_argument(
        "--head", action="append", type=_named, default=[], metavar="NAME=FILE", help="an adapter's head file"
    )
    report.add_argument("--out", type=_folder, required=True, help="the folder to write the report into")
    report.add_argument("--max-images", type=_at_least(1), default=None, help="at most this many images per split")
    report.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _named(text: str) -> tuple[str, Path]:
    """``NAME=PATH``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH (e.g. cats=adapters/cats)")
    return name, Path(path)


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object such as '{{\"img_size\": 32}}'")
    return value


def _by_name(pairs: list[tuple[str, Path]], option: str) -> dict[str, Path]:
    """``NAME=PATH`` pairs as a dict; a name given twice is refused."""
    named: dict[str, Path] = {}
    for name, path in pairs:
        if name in named:
            raise ValueError(f"{option} names {name!r} twice ({named[name]} and {path}); give each name once.")
        named[name] = path
    return named


def _open(args):
    from .study import Study

    return Study.open(args.resolved_profile, args.out, device=args.device, progress=False if args.quiet else None)


def _print(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}\n{table.to_string(index=False)}")


def _run(args) -> None:
    needs = {m: [k for k in MERGE_METHODS[m].knobs if KNOBS[k].required] for m in args.methods}
    needing = {m: knobs for m, knobs in needs.items() if knobs}
    if needing:  # before any training: `run` gives every method its defaults, and these have none
        method, knobs = next(iter(needing.items()))
        flags = " ".join(f"--{k.replace('_', '-')} V" for k in knobs)
        raise ValueError(
            f"--methods {method}: {method} needs {', '.join('--' + k.replace('_', '-') for k in knobs)}, which `run` "
            f"does not take. Score it on chosen values with `merge TASK TASK --method {method} {flags}`, or choose "
            "them on validation with `tune`."
        )
    from .artifacts import default_root
    from .distributed import launched_processes, run_study_scaled
    from .study import run_study

    start = time.perf_counter()
    profile = args.resolved_profile
    out = args.out or default_root(profile)
    # Under `accelerate launch` every process does its share and the main one writes and prints the tables.
    scale_out = run_study_scaled if launched_processes() > 1 else run_study
    tables = scale_out(
        profile, out, methods=tuple(args.methods), device=args.device, progress=False if args.quiet else None
    )
    if tables is None:  # another process of the launch: the main process reports
        return
    _print("Single adapters against the head-only baseline (test accuracy):", tables["singles"])
    _print("Merges (normalized accuracy = merged / single adapter):", tables["summary"])
    print(f"\nResults in {Path(out) / 'results'} ({time.perf_counter() - start:.0f} s)")


def _train_head(args) -> None:
    study = _open(args)
    _, metrics = study.ensure_head(args.task, retrain=args.retrain)
    print(f"{args.task}: head-only test accuracy {metrics['accuracy']:.4f} ({study.store.head_dir(args.task)})")


def _train_adapter(args) -> None:
    seeds = args.resolved_profile.seeds
    if not 0 <= args.seed < seeds:
        raise ValueError(f"--seed is a training seed index from 0 to {seeds - 1} in this profile, got {args.seed}.")
    from .artifacts import read_json

    study = _open(args)
    directory = study.ensure_adapter(args.task, seed=args.seed, retrain=args.retrain)
    metrics = read_json(directory / "metrics.json")
    print(f"{args.task}: adapter test accuracy {metrics['accuracy']:.4f} ({directory})")


def _evaluate(args) -> None:
    from .scoring import adapter_accuracy, head_accuracy

    study = _open(args)
    head, _ = study.ensure_head(args.task)
    test = study.dataset(args.task, "test")
    adapters = []
    for seed in study.seeds:
        model, heads = study.load_all_adapters([args.task], seed=seed)
        adapters.append(f"{adapter_accuracy(model, heads[args.task], args.task, test, **study.eval_kwargs()):.4f}")
    print(
        f"{args.task}: head-only {head_accuracy(head, *study.features(args.task, 'test')):.4f}, adapter "
        f"{' / '.join(adapters)} (training seed{'s' if len(adapters) > 1 else ''} {', '.join(map(str, study.seeds))})"
        f" on {len(test)} test images"
    )


def _check_merge_args(args) -> dict:
    """Every number and name of ``merge`` checked before any adapter is loaded or trained, by the check the library
    runs too (:func:`lora_merge_utils.methods.check_merge_request`); returns the knobs given."""
    profile = args.resolved_profile
    for task in args.tasks:
        check_task_name(profile, task)
    if len(set(args.tasks)) != len(args.tasks):
        raise ValueError(f"Tasks repeat in {args.tasks}; name each task once.")
    if not 0 <= args.adapter_seed < profile.seeds:
        raise ValueError(
            f"--adapter-seed is a training seed index from 0 to {profile.seeds - 1} in this profile, got "
            f"{args.adapter_seed}."
        )
    knobs = {name: getattr(args, name) for name in KNOBS}
    check_merge_request(args.method, len(args.tasks), knobs, args.weights, args.scale, args.seed, COMMAND_LINE)
    return {name: value for name, value in knobs.items() if value is not None}


def _merge(args) -> None:
    from .methods import MergeSpec

    params = _check_merge_args(args)
    params |= {key: value for key, value in (("weights", args.weights), ("scale", args.scale)) if value is not None}
    if MERGE_METHODS[args.method].random or MERGE_METHODS[args.method].adapts is not None:
        params["seed"] = args.seed
    spec = MergeSpec(args.method, args.method, params, refit_heads=args.refit_heads)
    study = _open(args)
    for task in args.tasks:
        study.task(task)  # validates the name before any training
    # the named adapters only: a relabelled task's (digits_parity) is not among the profile's six, and the others
    # are not needed
    model, heads = study.load_all_adapters(list(args.tasks), seed=args.adapter_seed)
    singles = study.singles_table(model, heads, seeds=args.adapter_seed, tasks=list(args.tasks))
    start = time.perf_counter()
    rows = study.merges_table(
        singles, methods=[spec], combos=[args.tasks], model=model, heads=heads, seeds=args.adapter_seed
    )
    table = rows[["task", "accuracy", "adapter_accuracy", "head_accuracy", "normalized_accuracy"]].round(4)
    _print(
        f"{args.method} merge of {'+'.join(args.tasks)}{' with refitted heads' if args.refit_heads else ''} "
        f"(adapters of seed {args.adapter_seed}; merged and scored in {time.perf_counter() - start:.1f} s):",
        table,
    )


def _tune(args) -> None:
    from .tuning import choice_warnings, compute_tuning_table, save_tuning_table, table_header, tuning_merges

    if args.table is not None and args.table.suffix != ".csv":
        raise ValueError(f"--table {args.table}: give a .csv path (its header is written beside it as .json).")
    for path in (args.table, args.table.with_suffix(".json")) if args.table is not None else ():
        if path.is_dir():
            raise ValueError(f"--table {args.table}: {path} is a folder; give the path of a file to write.")
    if args.table is not None:
        _check_path_length(args.table, "--table")
    budget = args.resolved_profile.budget
    grid_name = args.grid or budget.tuning_grid
    pairs = args.pairs if args.pairs is not None else budget.tuning_pairs
    study = _open(args)
    start = time.perf_counter()
    table = compute_tuning_table(study, grid_name, pairs)
    header = table_header(study, grid_name, pairs, table=args.table)
    path = args.table or study.store.results_dir / "tuning.csv"
    save_tuning_table(table, header, path)
    merges = len(tuning_merges(study.profile.tasks, pairs))
    _print(
        f"Each family's choice (mean normalized accuracy on the validation split of {merges} merges):",
        table[table["chosen"]][["family", "method", "val_mean_normalized"]].round(4),
    )
    for message in choice_warnings(table, grid_name):
        print(f"warning: {message}")
    print(
        f"\nwrote {path} and its header {path.with_suffix('.json').name} ({len(table)} candidates x {merges} merges, "
        f"{time.perf_counter() - start:.0f} s)"
    )


def _plan(args) -> None:
    from .course.plan import T4, chapter_plan, format_plan, measured_throughput

    profile = args.resolved_profile
    throughput = measured_throughput(args.measured) if args.measured is not None else T4
    print(format_plan(chapter_plan(profile, throughput), profile, throughput))


def _list(args) -> None:
    for name, profile in PROFILES.items():
        print(
            f"profile {name}: backbone {profile.backbone.model_name}, {profile.image_size} px; tasks: "
            f"{', '.join(profile.tasks)}"
        )
    print("merge methods (merge --method NAME):")
    for method in MERGE_METHODS.values():
        needs = "" if method.data == "none" else f" [needs {method.data}]"
        knobs = f" (knobs: {', '.join(COMMAND_LINE.knob(k) for k in method.knobs)})" if method.knobs else ""
        print(f"  {method.name:27s} {method.description}{knobs}{needs}")
    print("any method can also refit each task's head on the merged backbone (merge --refit-heads)")


def _grade(args) -> None:
    from .course.grading import grade_folder

    rows = grade_folder(
        args.folder,
        args.csv,
        jobs=args.jobs,
        cell_timeout=args.cell_timeout,
        notebook_timeout=args.notebook_timeout,
        chapters_dir=args.chapters,
        sandbox=args.sandbox,
    )
    print(f"wrote {args.csv} ({len(rows)} submission(s)) and {args.csv.with_suffix('')}/ (notebooks, feedback)")


def _report(args) -> None:
    import torch

    from .own_adapters.report import write_report

    report = write_report(
        args.base,
        _by_name(args.adapter, "--adapter"),
        _by_name(args.data, "--data"),
        args.out,
        heads=_by_name(args.head, "--head"),
        weights=args.weights,
        base_args=args.base_args,
        device=torch.device(args.device) if args.device else None,
        max_images=args.max_images,
        progress=not args.quiet,
    )
    for line in report.recommendation:
        print(f"- {line}")
    print(f"wrote {args.out}/report.md, report.html, summary.json and the merge in {args.out}/merged/")


COMMANDS = {
    "run": _run,
    "train-head": _train_head,
    "train-adapter": _train_adapter,
    "evaluate": _evaluate,
    "merge": _merge,
    "tune": _tune,
    "list": _list,
    "plan": _plan,
    "grade": _grade,
    "report": _report,
}


def _check_common(args) -> None:
    """``--device`` and ``--out`` checked before any work: a typo should not cost minutes of training first."""
    device = getattr(args, "device", None)
    if device is not None:
        import re

        if not re.fullmatch(r"(cpu|cuda|mps)(:\d+)?", device):  # before torch loads: a typo is told at once
            raise ValueError(f"--device {device!r} is not a device; use cpu or cuda (or cuda:N).")
        if device.startswith("mps"):
            import torch

            if not torch.backends.mps.is_available():
                raise ValueError(f"--device {device} asked for, but this machine has no Apple GPU; use --device cpu.")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device {device} asked for, but this machine has no CUDA GPU; use --device cpu.")
            if int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
                raise ValueError(
                    f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0."
                )
    out = getattr(args, "out", None)
    if out is not None:
        out = Path(out)
        _check_path_length(out, "--out")  # first: asking whether a too long path exists fails too
        existing = next((p for p in (out, *out.parents) if p.exists()), None)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder (it is created if missing).")
        if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--out {out}: {existing} is not writable; choose another folder.")
        if existing is not None and not existing.is_dir():
            raise ValueError(f"--out {out}: {existing} is a file, not a folder.")


NAME_MAX, PATH_MAX = 255, 4096
"""Linux's limits on a file name and on a whole path, in bytes."""
DEPTH = 160
"""Room a study needs below ``--out`` (``adapters/<task>/seed-<k>/.<name>.<pid>.<random>.tmp`` and the like)."""


def _check_path_length(path: Path, option: str) -> None:
    """Refuse a path whose names or whole length this file system would refuse only once the first file is
    written (minutes of training later, as ``[Errno 36] File name too long``)."""
    long_name = next((part for part in Path(path).parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long_name is not None:
        raise ValueError(
            f"{option} has a name of {len(os.fsencode(long_name))} bytes ({long_name[:24]}...); this file system "
            f"allows {NAME_MAX}. Choose a shorter name."
        )
    if len(os.fsencode(str(Path(path).absolute()))) + DEPTH > PATH_MAX:
        raise ValueError(
            f"{option} is a path of {len(os.fsencode(str(Path(path).absolute())))} bytes; with what is written below "
            f"it that passes this system's limit of {PATH_MAX}. Choose a shorter path."
        )


def _refuse_repeated(parser: argparse.ArgumentParser, args, argv: list[str]) -> None:
    """A value option given twice (``--method ties --method svd``) is refused: argparse would keep the last one."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices[args.command]
    for action in sub._actions:
        if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._AppendAction):
            given = [a for a in argv if a.split("=", 1)[0] in action.option_strings]
            if len(given) > 1:
                sub.error(f"{action.option_strings[-1]} is given {len(given)} times; give it once.")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command; returns the exit status (2 with a one-line ``error:`` for bad input; 143 or 130 with one
    line when SIGTERM or Ctrl-C stops it)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _refuse_repeated(parser, args, sys.argv[1:] if argv is None else argv)
    stop = StopHandler()
    previous = stop.install()
    try:
        if hasattr(args, "profile"):  # resolved once ($LORA_BOOK_OVERRIDES read and checked) before any work
            args.resolved_profile = get_profile(args.profile or default_profile_name())
            if getattr(args, "task", None) is not None:
                check_task_name(args.resolved_profile, args.task)
        _check_common(args)
        COMMANDS[args.command](args)
        stop.disarm()
    except Exception as error:
        stop.disarm()
        # Deliberately any error once a stop has come: C code (torch, safetensors) can swallow the stop and raise
        # its own error, and a stopped command is reported as stopped.
        if stop.signum is not None:
            return _stopped(args, stop.signum)
        if not _told_to_user(error):
            raise
        text = f"{error} {_fix_for(error)}".strip()
        print(f"error: {' '.join(text.split())}", file=sys.stderr)  # one line, whatever the library wrote
        return 2
    except KeyboardInterrupt as interrupt:
        stop.disarm()
        return _stopped(args, signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
    finally:
        stop.restore(previous)
    if stop.dropped:  # the command ended before the stop Python dropped could be raised again
        return _stopped(args, stop.signum)
    return 0


_KEPT_ON_STOP = {"grade": "the rows graded so far are written and the others marked not graded"}
"""What a stopped command leaves, where it is not "what it had saved is kept, and the same command resumes from it"
(grading starts over when run again)."""


def _stopped(args: argparse.Namespace, signum: int) -> int:
    """Say in one line that the command was stopped and what was kept; the status a shell gives that signal."""
    how, status = ("terminated", 143) if signum == signal.SIGTERM else ("interrupted", 130)
    kept = _KEPT_ON_STOP.get(args.command, "what it had saved is kept, and the same command resumes from it")
    print(f"{how}: {args.command} stopped; {kept}", file=sys.stderr)
    return status


_USER_ERRORS = ("SafetensorError", "UnpicklingError")
"""Errors of the file formats we read (a full disk while saving, a pickled file refused by ``weights_only``), by name:
importing their modules here would load torch before every command."""


_ERRNO_FIXES = {
    "ENAMETOOLONG": "A name or the whole path is longer than this file system allows: choose a shorter one.",
    "EISDIR": "A folder stands where a file is expected ({name}): move or delete that folder, and run the same "
    "command again (what was saved before is kept).",
    "ENOTDIR": "A file stands where a folder is expected ({name}): move or delete that file, or choose another place.",
    "EACCES": "This user may not read or write {name}: fix its permissions, or choose another place.",
    "EPERM": "This user may not read or write {name}: fix its permissions, or choose another place.",
    "EROFS": "{name} is on a read-only file system: choose another place (for outputs, another --out).",
    "ENOSPC": "The disk is full: free some space (what was saved before is kept) and run the same command again.",
    "EDQUOT": "The disk quota is used up: free some space and run the same command again.",
}
"""What to do about the file-system errors a user meets, by ``errno`` name (``{name}``: the path the error names):
the system's own words name the problem, not the fix."""


def _fix_for(error: Exception) -> str:
    """The fix for an ``OSError`` of :data:`_ERRNO_FIXES`, or nothing."""
    import errno

    if not isinstance(error, OSError) or error.errno is None:
        return ""
    name = error.filename2 or error.filename or "that path"
    return _ERRNO_FIXES.get(errno.errorcode.get(error.errno, ""), "").format(name=name)


def _told_to_user(error: Exception) -> bool:
    """Errors a user can act on, told as one ``error:`` line: bad values (``ValueError``), missing, unreadable or
    unwritable files (``OSError``) and unreadable saved files."""
    return isinstance(error, ValueError | OSError) or type(error).__name__ in _USER_ERRORS

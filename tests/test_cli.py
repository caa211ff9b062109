import os
import signal
import subprocess
import sys
import time

import pytest

from lora_merge_utils.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", ["run", "train-head", "train-adapter", "evaluate", "merge", "tune", "list"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    usage, description = out.split("\n\n")[:2]  # the usage lines wrap differently with the length of the name
    assert usage.startswith("usage:") and len(description) > 40, "each command describes itself"


def test_list_names_tasks_and_methods(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "task_arithmetic" in out and "dare_ties" in out


def test_unknown_task_is_a_clear_error(tmp_path, capsys):
    assert main(["merge", "digits", "cifar", "--profile", "tiny", "--out", str(tmp_path), "--quiet"]) == 2
    assert "Unknown task 'cifar'" in capsys.readouterr().err
    assert not (tmp_path / "adapters").exists(), "nothing was trained before the name was checked"


def test_unknown_method_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["merge", "digits", "mnist", "--method", "average"])
    assert "invalid choice: 'average'" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "lora_merge_utils", "list"], capture_output=True, text=True, check=True
    )
    assert "profile tiny" in result.stdout


def test_usage_names_the_command_as_it_was_invoked(capsys):
    result = subprocess.run(
        [sys.executable, "-m", "lora_merge_utils", "--help"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("usage: python -m lora_merge_utils ")
    with pytest.raises(SystemExit):
        main(["--help"])  # what the installed `lora-merge` script calls
    assert capsys.readouterr().out.startswith("usage: lora-merge ")


@pytest.mark.parametrize(
    ("signum", "status", "how"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_stop_that_c_code_turns_into_another_error_still_ends_as_a_stop(signum, status, how, monkeypatch, capsys):
    """A signal's exception can land inside C code that swallows it and raises its own error (torch did, turning a
    storage into a tensor); the command was stopped all the same: the stop's status and line, not ``error:``."""

    def stopped_inside_c_code(args):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs here and raises
        except KeyboardInterrupt:
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None

    monkeypatch.setitem(COMMANDS, "list", stopped_inside_c_code)
    # A shell without job control starts a background command with SIGINT ignored, and Python then installs no
    # handler of its own, which the CLI rightly leaves alone: give this process Python's usual handler for the test.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        assert main(["list"]) == status
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers, "handlers restored"
    finally:
        signal.signal(signal.SIGINT, outer)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{how}: list stopped; what it had saved is kept, and the same command resumes from it"]


def test_an_error_without_a_stop_is_still_an_error(monkeypatch, capsys):
    def bad(args):
        raise ValueError("the value is bad; give a good one")

    monkeypatch.setitem(COMMANDS, "list", bad)
    assert main(["list"]) == 2
    assert capsys.readouterr().err.strip() == "error: the value is bad; give a good one"


def test_a_stop_dropped_in_a_finaliser_is_sent_again_and_stops_the_command(monkeypatch, capsys):
    """A signal's exception raised inside a ``__del__`` (the garbage collector runs them anywhere) is dropped by
    Python; the command must still stop, with its one line and no "Exception ignored" message."""
    finished = []

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here, where its exception cannot leave

    def collected_then_working(args):
        SignalledWhileCollected()
        for _ in range(100):
            time.sleep(0.05)
        finished.append(True)

    monkeypatch.setitem(COMMANDS, "list", collected_then_working)
    hook = sys.unraisablehook
    assert main(["list"]) == 143
    assert not finished, "the command carried on to its end"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["terminated: list stopped; what it had saved is kept, and the same command resumes from it"]
    assert sys.unraisablehook is hook, "the hook there was is back"


def test_a_stop_dropped_just_before_the_command_ends_is_still_reported(monkeypatch, capsys):
    """When the command returns before a dropped stop can be raised again, it still ends as stopped."""

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)

    monkeypatch.setitem(COMMANDS, "list", lambda args: SignalledWhileCollected() and None)
    assert main(["list"]) == 143
    assert capsys.readouterr().err.startswith("terminated: list stopped")
    time.sleep(0.2)  # nothing is raised again after main has returned (pytest would see a KeyboardInterrupt)


def test_a_signal_the_caller_ignores_stays_ignored(monkeypatch):
    seen = []
    monkeypatch.setitem(COMMANDS, "list", lambda args: seen.append(signal.getsignal(signal.SIGTERM)))
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        assert main(["list"]) == 0
        assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_empty_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """`--out ""` would be the current folder, unasked: the parser refuses it and nothing is written there."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["train-head", "--task", "digits", "--profile", "tiny", "--out", ""])
    assert stop.value.code == 2 and "--out needs a folder's name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_method_named_twice_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--profile", "tiny", "--out", str(out), "--quiet", "--methods", "task_arithmetic", "task_arithmetic"]
    assert main(argv) == 2
    assert "task_arithmetic more than once" in capsys.readouterr().err
    assert not out.exists(), "nothing was trained or written"


@pytest.mark.parametrize(
    "argv",
    [
        ["merge", "digits", "mnist", "--method", "ties", "--method", "tsv"],
        ["merge", "digits", "mnist", "--weights", "0.5", "0.5", "--weights", "1", "1"],
        ["run", "--out", "a", "--out", "b"],
    ],
)
def test_a_value_option_given_twice_is_refused(argv, tmp_path, monkeypatch, capsys):
    """argparse keeps the last of two --method flags silently; the command says so instead, before any work."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--profile", "tiny", "--quiet"])
    assert stop.value.code == 2 and "given 2 times; give it once" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_apple_gpu_asked_for_where_there_is_none_is_one_line(tmp_path, capsys):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    assert main(["train-head", "--task", "digits", "--profile", "tiny", "--out", str(tmp_path), "--device", "mps"]) == 2
    assert "no Apple GPU; use --device cpu" in capsys.readouterr().err


def test_merge_of_a_task_with_its_relabelling_loads_the_adapters_it_names(copy_of_shared_study, monkeypatch, capsys):
    """`merge digits digits_parity` loaded the profile's six adapters only, then stopped in PEFT's words ("not
    loaded") after training them all."""
    import json

    from .helpers import MINI_OVERRIDES

    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(MINI_OVERRIDES))
    argv = ["merge", "digits", "digits_parity", "--profile", "tiny", "--out", str(copy_of_shared_study), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "task_arithmetic merge of digits+digits_parity" in printed
    assert [line.split()[0] for line in printed.splitlines()[-2:]] == ["digits", "digits_parity"]

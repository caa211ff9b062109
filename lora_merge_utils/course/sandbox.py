"""Where a submission runs while it is graded: in a bubblewrap sandbox that holds nothing of the instructor's, or,
where no sandbox can be had, under the grader's own account.

Two modes (:data:`MODES`; ``auto`` picks ``bwrap`` wherever it works):

* ``bwrap`` (`bubblewrap <https://github.com/containers/bubblewrap>`_, ``apt install bubblewrap``): each run gets
  new user, mount, process, network, IPC and host-name namespaces. Its file system holds the operating system's
  programs and libraries (``/usr``), a few files of ``/etc``, the Python installation the grader runs (read-only), a
  copy of this package without any chapter (read-only), an empty ``/tmp`` and its own scratch folder (``/submission``,
  holding the notebook and nothing else). Not there: the instructor's chapters, the repository, the home folder, the
  other submissions, the grader's outputs and temporary files, and every other process (``/proc`` shows the sandbox's
  own). No network (an own loopback only, for the kernel). Its environment is cleared but for the variables that
  choose the profile and the threads (:data:`PASSED_ON`). Everything it starts is killed when it ends, a
  ``setsid`` child included, since its process namespace ends with it.
* ``none``: the run is a child process of the grader with the grader's permissions. It imports the same chapter-free
  copy of the package, in a scratch folder of its own, but it can read, change and delete what the grader's account
  can, see the other processes and use the network. Use it only for submissions you trust, or inside a container or
  an account that holds nothing else (the instructors' page).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("auto", "bwrap", "none")
"""The ``--sandbox`` choices of ``grade``."""

INSIDE_WORK = Path("/submission")
"""The run's scratch folder as the sandbox shows it (its working directory)."""
INSIDE_LIB = Path("/sandbox/lib")
"""Where the sandbox shows the chapter-free copy of the package (first on ``PYTHONPATH``)."""
INSIDE_ARTIFACTS = Path("/artifacts")
"""Where a reference run, the instructor's own, sees the shared artifacts folder (read-write)."""

PASSED_ON = (
    "LORA_BOOK_PROFILE",
    "LORA_BOOK_OVERRIDES",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "MPLBACKEND",
    "LANG",
    "LC_ALL",
    "TZ",
)
"""The grader's environment variables that a sandboxed run keeps (those choosing the profile, threads and locale)."""

_ETC = (
    "alternatives",
    "ca-certificates",
    "fonts",
    "group",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "ssl",
)
"""The entries of ``/etc`` the sandbox shows (libraries, fonts, certificates, time zone, user names): none holds
anyone's work, and none is secret (no ``shadow``)."""

_SANDBOX_USER = 65534
"""The user a sandboxed run is (``nobody``): never the instructor, whatever account grades."""


@dataclass(frozen=True)
class Sandbox:
    """How runs are started in one grading: ``mode`` (``bwrap`` or ``none``), the folder ``lib`` that holds the
    staged copy of the package, and (for ``bwrap``) the host folders of the Python installation shown read-only."""

    mode: str
    lib: Path
    python: tuple[Path, ...] = field(default=())

    def command(
        self, arguments: list[str], work: Path, artifacts: Path | None = None, share_artifacts: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        """``(command, environment)`` that run ``python arguments...`` with ``work`` as working directory (start it
        there: ``cwd=work``). ``artifacts`` is a shared artifacts folder: ``share_artifacts`` (the instructor's own
        reference run) lets the run write to it; otherwise a sandboxed run gets a copy of it in ``work``, so that
        nothing it writes reaches another run (unsandboxed, every run shares it). Paths in ``arguments`` are relative
        to ``work``."""
        python = [sys.executable, *arguments]
        if self.mode == "none":
            environment = dict(os.environ) | _package_first(self.lib)
            if artifacts is not None:
                environment["LORA_BOOK_ARTIFACTS"] = str(artifacts)
            return python, environment
        environment = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
        overrides = environment.get("LORA_BOOK_OVERRIDES", "")
        if overrides and not overrides.lstrip().startswith("{") and Path(overrides).expanduser().is_file():
            environment["LORA_BOOK_OVERRIDES"] = Path(overrides).expanduser().read_text()  # its file is not shown
        environment |= {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": "/tmp/home",
            "PYTHONPATH": str(INSIDE_LIB),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        mounts = ["--bind", str(work), str(INSIDE_WORK)]
        if artifacts is not None and share_artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            mounts += ["--bind", str(artifacts), str(INSIDE_ARTIFACTS)]
            environment["LORA_BOOK_ARTIFACTS"] = str(INSIDE_ARTIFACTS)
        elif artifacts is not None:
            if Path(artifacts).is_dir():
                shutil.copytree(artifacts, Path(work) / "artifacts", symlinks=True, dirs_exist_ok=True)
            environment["LORA_BOOK_ARTIFACTS"] = str(INSIDE_WORK / "artifacts")
        command = [
            shutil.which("bwrap") or "bwrap",
            *_base_arguments(self.lib, self.python),
            *mounts,
            "--chdir",
            str(INSIDE_WORK),
        ]
        for name, value in environment.items():
            command += ["--setenv", name, value]
        return [*command, "--", *python], {}


def _package_first(lib: Path) -> dict[str, str]:
    """``PYTHONPATH`` with ``lib`` first: the staged copy is imported, not an editable install's repository."""
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(lib), rest] if rest else [str(lib)])}


def _base_arguments(lib: Path, python: tuple[Path, ...]) -> list[str]:
    """bubblewrap's arguments for everything a sandbox shows but its own folders."""
    arguments = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--uid",
        str(_SANDBOX_USER),
        "--gid",
        str(_SANDBOX_USER),
        "--ro-bind",
        "/usr",
        "/usr",
        # /tmp before the Python installation: a later mount hides what lies under it, and a virtual environment may
        # live under /tmp (a fresh clone in a temporary folder)
        "--tmpfs",
        "/tmp",
        "--dir",
        "/tmp/home",
    ]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            arguments += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            arguments += ["--ro-bind", str(path), str(path)]
    for name in _ETC:
        if (Path("/etc") / name).exists():
            arguments += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for folder in python:
        arguments += ["--ro-bind", str(folder.resolve()), str(folder)]
    arguments += ["--ro-bind", str(lib), str(INSIDE_LIB)]
    arguments += ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
    for device in sorted(Path("/dev").glob("nvidia*")):  # a GPU, where the grader has one
        arguments += ["--dev-bind", str(device), str(device)]
    return arguments


def python_folders() -> tuple[Path, ...]:
    """The folders of the Python installation the grader runs, as it names them and as they really are (a virtual
    environment's interpreter links into its base installation): what a sandbox must show for Python to start."""
    import site

    named = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and Path(user_site).is_dir():
        named.add(user_site)
    folders = {Path(p) for p in named} | {Path(p).resolve() for p in named}
    # Outermost only: bubblewrap mounts a folder over what an inner one showed, if the inner one came first.
    ordered = sorted(folders, key=lambda p: len(p.parts))
    return tuple(p for i, p in enumerate(ordered) if not any(p.is_relative_to(q) for q in ordered[:i]))


def stage_package(destination: Path) -> Path:
    """Copy this package (its modules and the tiny backbone, never a chapter) into ``destination/lora_merge_utils``;
    return ``destination``, the folder to put first on ``PYTHONPATH``."""
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(
        package,
        Path(destination) / package.name,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    return Path(destination)


@functools.cache
def bwrap_problem() -> str | None:
    """Why a bubblewrap sandbox cannot run here, or ``None`` where it can (tried once: the grader's Python, inside a
    sandbox built as :meth:`Sandbox.command` builds it, imports what a run needs)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt install bubblewrap; dnf install bubblewrap)"
    probe = Path(__file__).resolve().parent
    imports = "import nbclient, ipykernel"  # what a run needs, from the installation the sandbox shows
    command = ["bwrap", *_base_arguments(probe, python_folders()), "--", sys.executable, "-c", imports]
    try:
        tried = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap did not start ({type(error).__name__}: {error})"
    if tried.returncode != 0:
        said = (tried.stderr.strip().splitlines() or [f"exit {tried.returncode}"])[-1]
        return f"bubblewrap cannot make a sandbox here ({said}); user namespaces may be disabled"
    return None


def prepare(mode: str, work: Path, hidden: list[Path] | None = None) -> Sandbox:
    """The sandbox of one grading, its package copy staged in ``work/lib``. ``mode`` is one of :data:`MODES`:
    ``auto`` is ``bwrap`` where bubblewrap works and ``none`` otherwise; ``bwrap`` where it does not work, or where one
    of the ``hidden`` folders (the chapters, the submissions, the outputs) lies inside a folder the sandbox must show,
    raises ``ValueError`` naming the problem and the fix."""
    if mode not in MODES:
        raise ValueError(f"--sandbox {mode}: choose one of {', '.join(MODES)}.")
    lib = stage_package(Path(work) / "lib")
    if mode == "none" or (mode == "auto" and bwrap_problem() is not None):
        return Sandbox("none", lib)
    problem = bwrap_problem()
    if problem is not None:
        raise ValueError(f"--sandbox bwrap: {problem}. Install it, or pass --sandbox none to grade without one.")
    python = python_folders()
    for folder in hidden or []:
        folder = Path(folder).resolve()
        shown = next((p for p in (*python, Path("/usr")) if folder.is_relative_to(p.resolve())), None)
        if shown is not None:
            raise ValueError(
                f"{folder} lies inside {shown}, which the sandbox shows to every submission (it holds Python): move "
                "it elsewhere, or grade with --sandbox none."
            )
    return Sandbox("bwrap", lib, python)

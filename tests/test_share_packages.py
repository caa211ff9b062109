"""``scripts/share_packages.py``: what the Colab-versions environment takes from ``.venv`` by hard link, and what it
leaves to pip. Checked on made-up distributions, so the test holds whatever torch build is installed."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from .helpers import load_script

share = load_script("share_packages")


def _distribution(site: Path, name: str, version: str, requires: list[str], files: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {line}" for line in requires]
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "\n".join(lines) + "\n")
    for relative, text in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    record = [f"{relative},," for relative in files] + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "source" / "site-packages"
    # torch needs a toolkit through its extras, and sympy, which Colab pins at another version.
    _distribution(
        site,
        "torch",
        "2.14.1",
        ['toolkit[fft]==1.0; platform_system == "Linux" or platform_system != "Linux"', "sympy>=1.13"],
        {"torch/__init__.py": "torch", "../../bin/torchrun": "#!/source/python"},
    )
    _distribution(site, "torchvision", "0.29.1", ["torch"], {"torchvision/__init__.py": "vision"})
    _distribution(site, "toolkit", "1.0", ['fft-lib; extra == "fft"', 'blas-lib; extra == "blas"'], {})
    _distribution(site, "fft-lib", "12.0", [], {"fft/lib.so": "fft"})
    _distribution(site, "blas-lib", "13.0", [], {"blas/lib.so": "blas"})
    _distribution(site, "sympy", "1.15", [], {"sympy/__init__.py": "sympy"})
    _distribution(site, "pandas", "2.2.3", [], {"pandas/__init__.py": "pandas"})
    _distribution(site, "numpy", "2.4.0", [], {"numpy/__init__.py": "numpy"})
    return site


def test_the_torch_stack_is_followed_through_the_extras_it_asks_for(site: Path):
    installed = share.installed_distributions([str(site)])
    closure = share.dependency_closure(("torch", "torchvision"), installed)
    assert closure == {"torch", "torchvision", "toolkit", "fft-lib", "sympy"}  # blas-lib: an extra nobody asked for


def test_what_is_shared_and_what_is_left_to_pip(site: Path, tmp_path: Path):
    installed = share.installed_distributions([str(site)])
    pins = {"torch": "2.11.0", "torchvision": "0.26.0", "sympy": "1.14.0", "pandas": "2.2.3", "numpy": "2.1.3"}
    chosen = share.to_share(pins, installed)
    # torch whatever Colab pins; its stack unless Colab pins another version (sympy); anything else only at the very
    # version Colab pins (pandas, not numpy); nothing outside the stack that Colab does not pin (blas-lib).
    assert chosen == ["fft-lib", "pandas", "toolkit", "torch", "torchvision"]

    target = tmp_path / "target" / "site-packages"
    target.mkdir(parents=True)
    shared = share.link_distribution(installed["torch"], site.resolve(), target.resolve())
    info = next(site.glob("torch-*.dist-info"))
    assert shared == sum(
        path.stat().st_size for path in (site / "torch/__init__.py", info / "METADATA", info / "RECORD")
    )
    assert os.path.samefile(target / "torch" / "__init__.py", site / "torch" / "__init__.py")
    assert not (tmp_path / "target" / "bin").exists()  # a console script names .venv's Python: pip writes its own
    assert share.link_distribution(installed["torch"], site.resolve(), target.resolve()) == 0  # already there


def test_the_pins_left_to_pip_drop_torch_and_torchvision_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pins = tmp_path / "colab.txt"
    pins.write_text("# Colab\ntorch==2.11.0\ntorchvision==0.26.0\ntimm==1.0.28\n\nTorch-Audit==1.0\n")
    environment = tmp_path / "env"
    monkeypatch.setattr(share, "link_distribution", lambda dist, source, target: 0)  # nothing is linked here
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (environment / "lib" / version / "site-packages").mkdir(parents=True)
    if os.stat(sysconfig.get_paths()["purelib"]).st_dev != os.stat(environment).st_dev:
        pytest.skip("this interpreter's site-packages and the temporary folder are on different file systems")
    assert share.main([str(environment), str(pins), "--pins-out", str(tmp_path / "left.txt")]) == 0
    assert (tmp_path / "left.txt").read_text() == "# Colab\ntimm==1.0.28\n\nTorch-Audit==1.0\n"


def test_a_folder_that_is_no_environment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pins = tmp_path / "colab.txt"
    pins.write_text("timm==1.0.28\n")
    with pytest.raises(SystemExit):
        share.main([str(tmp_path / "nowhere"), str(pins), "--pins-out", str(tmp_path / "left.txt")])
    error = capsys.readouterr().err
    assert "nowhere is not a python3" in error and "python -m venv" in error
    assert not (tmp_path / "left.txt").exists()

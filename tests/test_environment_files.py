"""constraints.txt pins pyproject.toml's ranges, set-up and environment.yml install it, the installed versions are
the pinned ones; the README's commands exist."""

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import lock  # noqa: E402  (scripts/lock.py: reads and writes constraints.txt)

CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<spec>[<>=!~][^\s]*)?$")


def _pyproject():
    """Every requirement of pyproject.toml (dependencies and all extras): {name: Requirement}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        match = CONDA_SPEC.match(dep.strip())
        assert match, f"environment.yml: {dep!r} is not a conda match spec"
        conda[match.group("name")] = match.group("spec") or ""
    return env, conda, pip


def _setup_extras():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    found = re.findall(r'pip install --quiet (?:--use-pep517 )?-c constraints.txt -e "\.\[([a-z,]+)\]"', setup)
    assert len(found) == 1, "scripts/setup.sh installs lossbook with -c constraints.txt once"
    return found[0]


def test_every_pin_satisfies_pyproject_and_every_requirement_is_pinned():
    """constraints.txt is pip's resolution of pyproject.toml's ranges: each direct requirement is pinned, inside its
    range (a hand edit that leaves the range, or a new requirement without `scripts/lock.py`, fails here)."""
    pins = lock.read()
    for name, req in _pyproject().items():
        if name == "torch":
            assert name not in pins, "torch is chosen by scripts/setup.sh, not pinned in constraints.txt"
            assert req.specifier.contains(lock.TORCH), f"setup's torch {lock.TORCH} is outside pyproject's {req}"
            continue
        assert name in pins, f"{name} ({req}) is not pinned in constraints.txt: run scripts/lock.py"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert not [n for n in pins if n.startswith(lock.LEFT_OUT)], "torch, CUDA packages and lossbook are not pinned"


def test_setup_and_lock_install_the_same_extras():
    assert _setup_extras() == lock.EXTRAS
    assert f'LOSSBOOK_TORCH_VERSION:-{lock.TORCH}' in (ROOT / "scripts" / "setup.sh").read_text()


@pytest.mark.parametrize("pin_file", ["constraints.txt", "requirements-laplace.txt"])
def test_installed_versions_are_the_pinned_ones(pin_file):
    """The environment the tests run in is the one the stored outputs were made with: a package that drifted from
    its pin (an old .venv, a hand install) fails here, not later as a wrong number in a chapter."""
    wrong = lock.drift(ROOT / pin_file)
    assert not wrong, (f"installed versions differ from {pin_file} (pinned, installed, where): {wrong}; "
                       "run bash scripts/setup.sh (LOSSBOOK_SETUP_FORCE=1 reinstalls)")


def test_environment_yml_installs_the_same_pins():
    env, conda, pip = _environment()
    assert env["channels"] == ["conda-forge"]
    assert pip == ["-c constraints.txt", f"-e .[{lock.EXTRAS}]"]
    assert set(conda) == {"python", "pip", "pytorch"}
    python = ".".join(lock.LOCK.read_text().split("for Python ", 1)[1].split(".")[:2])
    assert conda["python"] == f"={python}", f"constraints.txt was resolved for Python {python}"
    assert conda["pytorch"] == "=" + ".".join(lock.TORCH.split(".")[:2])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert SpecifierSet(project["requires-python"]).contains(python)


def test_cpu_torch_brings_no_nvidia_packages():
    import torch
    from conftest import STRICT

    if torch.version.cuda is not None:
        if STRICT and not torch.cuda.is_available():  # CI has no GPU: a CUDA build there is a set-up mistake
            pytest.fail(f"torch {torch.__version__} is a CUDA build on a machine without a GPU: set-up installed "
                        "several GB of nvidia packages; LOSSBOOK_TORCH=cpu bash scripts/setup.sh takes the CPU build")
        pytest.skip("hardware: this torch is a CUDA build, which brings its own nvidia packages")
    nvidia = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia"))
    assert nvidia == [], f"a CPU torch with CUDA packages installed: {nvidia}"


def test_readme_quick_start_commands_exist():
    readme = (ROOT / "README.md").read_text()
    for script in ("scripts/lab.sh", "scripts/test.sh"):
        assert f"bash {script}" in readme and (ROOT / script).exists()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "-m pip install --quiet -c constraints.txt torch==2.13.0"),
        ({"LOSSBOOK_TORCH": "cpu"}, "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"),
        ({"LOSSBOOK_TORCH_INDEX_URL": "http://127.0.0.1:9/simple"}, "torch==2.13.0 --index-url http://127.0.0.1:9/simple"),
        ({"LOSSBOOK_TORCH": "cpu", "LOSSBOOK_TORCH_VERSION": "2.9.1"}, "torch==2.9.1 --index-url"),
    ],
)
def test_setup_takes_the_torch_build_the_reader_asks_for(env, expected):
    """One variable, LOSSBOOK_TORCH=cpu, sends set-up to PyTorch's CPU-only wheels (a plain PyPI install is the
    CUDA build on Linux); the command is printed, not run."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOSSBOOK_TORCH")}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=dict(clean, LOSSBOOK_SETUP_PRINT_TORCH="1",
                         **env), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout.strip(), run.stdout
    if not env:
        assert "--index-url" not in run.stdout


def test_setup_refuses_an_unknown_torch_build():
    run = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")],
                         env=dict(os.environ, LOSSBOOK_TORCH="cuda", LOSSBOOK_SETUP_PRINT_TORCH="1"),
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "LOSSBOOK_TORCH must be empty or 'cpu'" in run.stderr

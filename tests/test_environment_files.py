"""environment.yml and pyproject.toml name the same packages; the README's commands exist."""

import importlib.metadata as md
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PYPI = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip"}
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<spec>[<>=!~][^\s]*)?$")


def _pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def _conda_spec(spec: str):
    match = CONDA_SPEC.match(spec.strip())
    assert match, f"environment.yml: {spec!r} is not a conda match spec"
    version = match.group("spec") or ""
    # conda's single '=' is a fuzzy match ("=1.2" means 1.2.*); packaging spells it '==1.2.*'
    version = re.sub(r"^=(?!=)(.+)$", r"==\1.*", version)
    return match.group("name"), SpecifierSet(version)  # raises InvalidSpecifier when it does not parse


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        name, spec = _conda_spec(dep)
        conda[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = spec
    return env, conda, pip


def test_environment_and_pyproject_name_the_same_packages_and_versions():
    _, conda, _ = _environment()
    conda = {k: v for k, v in conda.items() if k not in CONDA_ONLY}
    assert conda == _pyproject()


def test_every_spec_parses():
    env, _, pip = _environment()
    assert env["channels"] == ["conda-forge"]
    for line in pip:
        if line.startswith("-"):
            assert line == "-e .", f"unexpected pip option {line!r}"
        else:
            Requirement(line)


def test_python_versions_agree():
    _, conda, _ = _environment()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert str(conda["python"]) == project["requires-python"]


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
        ({}, "-m pip install --quiet torch==2.13.0"),
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

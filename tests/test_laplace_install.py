"""laplace-torch is installed CPU-safely: `import laplace` works, nothing nvidia/CUDA came with it, and the pinned
--no-deps list (requirements-laplace.txt) is complete and what is installed."""

import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
NODEPS = ROOT / "requirements-laplace.txt"
# requirements the --no-deps list leaves out on purpose: torch comes from set-up (the CPU build); torchvision is
# required by laplace-torch and backpack-for-pytorch but never imported by laplace (test below)
LEFT_OUT = {"torch", "torchvision"}


def _pinned() -> dict[str, Requirement]:
    reqs = {}
    for line in NODEPS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def _pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def test_the_nodeps_list_pins_every_package_exactly():
    pinned = _pinned()
    assert "laplace-torch" in pinned and "asdfghjkl" in pinned
    for name, req in pinned.items():
        assert re.fullmatch(r"==[^,]+", str(req.specifier)), f"{name}: pin one version (==), got {req.specifier}"
    assert not LEFT_OUT & set(pinned), "torch/torchvision must not be installed from requirements-laplace.txt"


def test_the_nodeps_list_is_complete_and_installed(laplace):
    """Every requirement of every pinned package is pinned too, or a pyproject.toml dependency, or left out on
    purpose (torch, torchvision); each pinned package is installed at its pin and its requirements are met."""
    pinned, project = _pinned(), _pyproject_names()
    env = default_environment() | {"extra": ""}
    for name, req in pinned.items():
        installed = md.version(req.name)
        assert Version(installed) in req.specifier, f"{name} {installed} installed, requirements-laplace.txt says {req}"
        for line in md.requires(req.name) or []:
            dep = Requirement(line)
            if dep.marker is not None and not dep.marker.evaluate(env):
                continue  # an extra (docs, test, ...) or another platform
            dep_name = canonicalize_name(dep.name)
            if dep_name == "torchvision":
                continue
            assert dep_name in pinned or dep_name in project or dep_name in LEFT_OUT, (
                f"{name} requires {dep}, which neither requirements-laplace.txt nor pyproject.toml installs"
            )
            have = md.version(dep.name)
            assert dep.specifier.contains(have, prereleases=True), f"{name} requires {dep}, {have} is installed"


def test_import_laplace_works_without_torchvision(laplace):
    code = (
        "import sys\n"
        "from laplace import Laplace\n"
        "from laplace.curvature import CurvlinopsGGN\n"
        "assert 'torchvision' not in sys.modules, 'laplace imported torchvision'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_no_nvidia_or_cuda_package_is_installed(laplace):
    import torch

    if torch.version.cuda is not None:
        pytest.skip("hardware: this torch is a CUDA build, which brings its own nvidia packages")
    names = sorted({d.metadata["Name"] for d in md.distributions()})
    bad = [n for n in names if re.match(r"(nvidia|cuda)[-_]|triton$", n.lower())]
    assert bad == [], f"nvidia/CUDA packages installed beside the CPU torch: {bad}"
    assert "+cpu" in torch.__version__ or not torch.cuda.is_available()


def test_setup_and_environment_use_the_nodeps_route():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '-m pip install --quiet --no-deps -r requirements-laplace.txt' in setup
    # a change to any of these files re-runs set-up
    assert "cat pyproject.toml constraints.txt requirements-laplace.txt scripts/setup.sh" in setup
    assert "pip install --no-deps -r requirements-laplace.txt" in (ROOT / "environment.yml").read_text()
    assert "laplace" not in " ".join(sorted(_pyproject_names())), "laplace-torch resolved by pip pulls torchvision"

"""The three dependency declarations agree: pyproject.toml, requirements.lock, environment.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"dask-core": "dask"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock line is not an exact pin: {line!r}"
        pins[_norm(name)] = version
    return pins


def _environment_yml() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)\s*(==|=)\s*([^\s#]+)", line)
        if m:
            name = CONDA_TO_PYPI.get(m.group(1), m.group(1))
            pins[_norm(name)] = m.group(3)
    return pins


def test_every_direct_dependency_is_locked_within_its_range():
    lock = _lock()
    for req in _pyproject_requirements():
        name = _norm(req.name)
        assert name in lock, f"{req.name} is in pyproject.toml but not in requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"{req.name}: locked {lock[name]} is outside pyproject's {req.specifier}"
        )


def test_environment_yml_names_the_same_packages_at_the_locked_versions():
    lock = _lock()
    env = _environment_yml()
    env.pop("python", None)
    direct = {_norm(r.name) for r in _pyproject_requirements()}
    assert set(env) - {"pip"} == direct, (
        "environment.yml and pyproject.toml list different packages: "
        f"only in environment.yml {sorted(set(env) - {'pip'} - direct)}, "
        f"only in pyproject.toml {sorted(direct - set(env))}"
    )
    for name, version in env.items():
        assert lock[name] == version, f"{name}: environment.yml {version} != lock {lock[name]}"


def test_python_version_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env_text = (ROOT / "environment.yml").read_text()
    m = re.search(r"-\s+python=(\d+\.\d+)", env_text)
    assert m, "environment.yml does not pin python"
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(project["requires-python"]).contains(m.group(1) + ".0")


@pytest.mark.parametrize("name", ["numpy", "xarray", "dask", "rasterio", "statsmodels"])
def test_installed_versions_are_the_locked_ones(name):
    from importlib.metadata import version

    assert version(name) == _lock()[_norm(name)]


def test_too_little_temporary_disk_stops_the_suite_with_one_line(tmp_path):
    # Asking for more room than any disk has must stop the session before any test runs.
    import os
    import subprocess
    import sys

    env = dict(os.environ, TOOLKIT_TEST_TMP_MB=str(2**40))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--co",
            "tests/conftest.py",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if "MiB free" in ln]
    assert len(lines) == 1 and "temporary rasters" in lines[0], done.stdout[-2000:]

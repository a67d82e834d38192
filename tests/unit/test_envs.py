"""The three places that name glioseg's dependencies agree with each other.

requirements.txt holds the exact versions `make` installs; envs/glioseg.yaml is
the conda environment rules run in with `--sdm conda` (on cluster nodes without
the project's venv); pyproject.toml names what the package needs. A version
bumped in one and not the others would make cluster jobs run other code than
the tests did.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def requirements_pins() -> dict[str, str]:
    """{canonical name: version} of requirements.txt, which must pin everything with ==."""
    pins = {}
    for number, line in enumerate((ROOT / "requirements.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"requirements.txt:{number}: not an exact pin: {line}"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"requirements.txt:{number}: {requirement.name} pinned twice"
        pins[name] = specifiers[0].version
    return pins


def conda_environment() -> dict:
    return yaml.safe_load((ROOT / "envs" / "glioseg.yaml").read_text())


def environment_pip_pins() -> dict[str, str]:
    """{canonical name: version} of the pip section of envs/glioseg.yaml (the project itself, `..`, aside)."""
    pip = [item["pip"] for item in conda_environment()["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert len(pip) == 1, "envs/glioseg.yaml: expected one pip: section"
    pins = {}
    for entry in pip[0]:
        if entry in ("..", "-e .."):
            continue
        requirement = Requirement(entry)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"envs/glioseg.yaml: not an exact pin: {entry}"
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_requirements() -> list[Requirement]:
    """Everything pyproject.toml names: the runtime dependencies and every optional group."""
    project = pyproject()["project"]
    named = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        named += group
    return [Requirement(text) for text in named]


def test_requirements_pin_every_package_exactly_once():
    assert requirements_pins()


def test_every_pin_in_the_conda_environment_equals_requirements_txt():
    pins, environment = requirements_pins(), environment_pip_pins()
    assert environment, "envs/glioseg.yaml pins nothing"
    missing = sorted(name for name in environment if name not in pins)
    assert not missing, f"pinned in envs/glioseg.yaml but not in requirements.txt: {missing}"
    differ = {name: (version, pins[name]) for name, version in environment.items() if Version(version) != Version(pins[name])}
    assert not differ, f"envs/glioseg.yaml vs requirements.txt: {differ}"


def test_the_conda_environment_pins_every_runtime_dependency():
    environment = environment_pip_pins()
    runtime = [canonicalize_name(Requirement(text).name) for text in pyproject()["project"]["dependencies"]]
    missing = sorted(name for name in runtime if name not in environment)
    assert not missing, f"runtime dependencies of pyproject.toml missing from envs/glioseg.yaml: {missing}"


def test_the_conda_environments_python_satisfies_requires_python():
    pythons = [item for item in conda_environment()["dependencies"] if isinstance(item, str) and re.match(r"python\b", item)]
    assert len(pythons) == 1, "envs/glioseg.yaml should name one python version"
    version = re.sub(r"^python\s*=*\s*", "", pythons[0])
    assert Version(version) in Requirement(f"python{pyproject()['project']['requires-python']}").specifier


@pytest.mark.parametrize("requirement", pyproject_requirements(), ids=str)
def test_every_dependency_named_in_pyproject_is_pinned_in_requirements_txt(requirement):
    pins = requirements_pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"pyproject.toml names {requirement.name}, which requirements.txt does not pin"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"requirements.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}")

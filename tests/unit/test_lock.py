"""requirements.lock: inside pyproject.toml's ranges, and what this environment runs."""

from __future__ import annotations

import os
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import lock  # tools/ is not a package: imported from its folder

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["dev"])]


def test_every_requirement_is_locked_inside_its_range() -> None:
    pins = lock.locked()
    for requirement in _requirements():
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock has {name}=={pins[name]}, outside pyproject's {requirement}: run `make lock`"
        )


def test_the_environment_runs_the_locked_versions() -> None:
    """`make setup` installed the lock (what `make test` and CI run with)."""
    if os.environ.get("RESPLIT_UNLOCKED"):
        pytest.skip("make test-latest runs the newest allowed versions, not the lock, on purpose")
    pins = lock.locked()
    assert len(pins) > 50
    for name, version in pins.items():
        installed = metadata.version(name).split("+", 1)[0]
        assert installed == version, f"{name} {installed} installed, {version} locked: run `make setup`"


def test_pins_drop_local_labels_and_normalize_names() -> None:
    lines = ["# header", "", "torch==2.13.0+cpu", "Typing_Extensions==4.15.0", "not a pin"]
    assert lock._pins(lines) == {"torch": "2.13.0", "typing-extensions": "4.15.0"}


def test_differences_list_changed_added_and_removed_packages() -> None:
    old = {"redis": "8.1.0", "torch": "2.13.0", "gone": "1.0"}
    new = {"redis": "8.2.0", "torch": "2.13.0", "added": "2.0"}
    assert lock.differences(old, new) == [
        ("added", "-", "2.0"),
        ("gone", "1.0", "-"),
        ("redis", "8.1.0", "8.2.0"),
    ]


def test_the_rendered_lock_reads_back_as_the_same_pins() -> None:
    pins = {"redis": "8.2.0", "torch": "2.13.0"}
    assert lock._pins(lock.render(pins).splitlines()) == pins

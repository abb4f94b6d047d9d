"""Reading a scenario file: YAML, then a mapping, then a validated model.

Every failure is a :class:`ScenarioError` whose message names the file, the
field and the reason (``scenario.yaml: nodes.1.utilization: Input should be
less than or equal to 1 (got 1.5)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

NodeId = str
M = TypeVar("M", bound=BaseModel)


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message names the file, the field and the reason."""


class Strict(BaseModel):
    """The base of every part of a scenario: an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def describe(error: ValidationError) -> str:
    """Every error of ``error`` as ``field.path: reason (got value)``, joined by "; "."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "scenario"
        value = item.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        parts.append(f"{where}: {item['msg']}{shown}")
    return "; ".join(parts)


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The YAML mapping in ``path``; ``what`` says what it should hold (for the error)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: {what}, got {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    """``data`` as a ``model``; raises :class:`ScenarioError` naming ``path``, the field and the reason."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {describe(exc)}") from None


def override(data: dict, key: str, value: Any, path: Path) -> None:
    """Set ``key`` (dotted: mappings by name, lists by index) in ``data`` (the CLI's ``--set``)."""
    *parents, last = key.split(".")
    target = data
    try:
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
        if isinstance(target, list):
            target[int(last)] = value
        elif isinstance(target, dict):
            target[last] = value
        else:
            raise TypeError(f"{type(target).__name__} has no keys")
    except (IndexError, ValueError, TypeError, AttributeError) as exc:
        raise ScenarioError(f"{path}: --set {key}: no such place in the scenario ({exc})") from None

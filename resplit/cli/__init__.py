"""The ``resplit`` command line (typer + rich)."""

from __future__ import annotations

from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]

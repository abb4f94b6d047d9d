"""Shared state in Redis: node registry, plans and epochs, decision log, routes."""

from .store import StateStore

__all__ = ["StateStore"]

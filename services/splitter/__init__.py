"""Splitter (the paper's SR): a pure solver service."""

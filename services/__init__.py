"""The five resplit services. Each is its own package; they never import each
other and share only the ``resplit`` package (enforced by import-linter)."""

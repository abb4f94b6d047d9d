"""The splitter's logic, free of grpc and redis (import-linter contract).

``problem`` (plain data) -> ``instance`` (arrays) -> ``exact`` (chain DP with a certificate,
Lagrangian column generation, MILP) / ``greedy`` / ``brute``; ``costmodel`` is the reference
definition of Phi, ``profiles`` and ``devices`` build models and nodes, ``convert`` talks protobuf,
``diagnose`` explains infeasibility and ``solve`` is the entry point.
"""

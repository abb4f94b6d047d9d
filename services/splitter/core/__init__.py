"""The splitter's logic, free of grpc and redis (import-linter contract).

``problem`` (plain data) -> ``instance`` (arrays) -> ``exact`` (chain DP with a certificate,
Lagrangian column generation, MILP) / ``greedy`` / ``brute``; ``costmodel`` is the reference
definition of Phi, ``ring`` handles the closing link from the head back to unit 0 (one chain per
node of unit 0), ``convert`` talks protobuf (models and nodes come from ``resplit.core.profiles``
and ``resplit.core.devices``), ``diagnose`` explains infeasibility and ``solve`` is the entry point.
"""

"""Orchestrator logic without transport: the Table I policy defaults now; the
Alg. 1 control loop lands with the orchestrator issue."""

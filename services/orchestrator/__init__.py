"""Orchestrator (the paper's AO): deployments, the Alg. 1 loop, the decision log."""

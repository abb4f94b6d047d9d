"""Broadcaster (the paper's RB): two-phase rollout and route publication."""

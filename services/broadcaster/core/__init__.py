"""Rollout state machine (prepare, commit, drain, release) lands here with the
orchestrator/broadcaster issue; free of grpc and redis by contract."""

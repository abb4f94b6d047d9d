"""Monitor (the paper's CP): node and link telemetry into E(t)."""

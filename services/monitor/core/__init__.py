"""Monitor logic without transport: E(t) assembly, staleness (down detection)
and input validation. The latency EWMA is resplit.core.smoothing.Ewma."""

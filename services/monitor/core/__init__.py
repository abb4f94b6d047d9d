"""Monitor logic without transport. Node state is derived from heartbeats in
the registry; metric aggregation and the EWMA land with the monitor issue."""

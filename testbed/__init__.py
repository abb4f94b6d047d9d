"""Emulated nodes on one host: per-node cgroups (CPU quota and accounting),
per-node network namespaces joined by a bridge, and tc-shaped links.

Imports only ``resplit`` (never a service): a node runs services as
processes, the way a real host would."""

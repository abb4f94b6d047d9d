"""resplit: adaptive split inference for foundation models at the edge.

The package holds what every service and the client SDK share: generated
stubs (``resplit.v1``), pure core logic (``resplit.core``), the Redis state
store (``resplit.state``), the gRPC runtime (``resplit.rpc``), config,
telemetry and the local launcher and CLI.
"""

__version__ = "0.1.0"

"""resplit: adaptive split inference for foundation models at the edge.

The package holds what every service and the client SDK share: generated
stubs (``resplit.v1``), pure core logic (``resplit.core``), the Redis state
store (``resplit.state``), the gRPC runtime (``resplit.rpc``), config,
telemetry and the local launcher and CLI.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .sdk import AsyncClient as AsyncClient
    from .sdk import Client as Client
    from .sdk import GeneratedToken as GeneratedToken
    from .sdk import Sampling as Sampling


def __getattr__(name: str):
    """``resplit.Client`` without importing torch for every ``import resplit``."""
    if name in ("Client", "AsyncClient", "GeneratedToken", "Sampling"):
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'resplit' has no attribute {name!r}")

"""Client SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio)."""

from .aio import AsyncClient
from .client import Client
from .exchange import GeneratedToken, Sampling

__all__ = ["AsyncClient", "Client", "GeneratedToken", "Sampling"]

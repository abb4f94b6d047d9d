"""The gateway: an OpenAI-compatible HTTP API over the SDK (``AsyncClient``)."""

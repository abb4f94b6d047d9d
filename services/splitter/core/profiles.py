"""Model profiles: per-unit bytes and FLOPs from a transformers config.

The code lives in :mod:`resplit.core.profiles`, shared with the worker's
emulated-compute segments; this module keeps the splitter's import path.
"""

from resplit.core.profiles import (  # noqa: F401
    DTYPE_BYTES,
    GATED_DECODERS,
    SUPPORTED,
    ConfigError,
    Model,
    ModelNotFound,
    Unit,
    dtype_bytes,
    load_config,
    parse_config,
    profile,
)

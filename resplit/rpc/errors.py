"""Status helpers: every refusal carries a code and a sentence a person can act on."""

from __future__ import annotations

from typing import NoReturn

import grpc


async def not_yet(context: grpc.aio.ServicerContext, rpc: str, lands_with: str) -> NoReturn:
    """Answer UNIMPLEMENTED for an RPC whose behaviour a later issue adds.

    Never a fake success: callers must be able to tell "not built yet" apart
    from "done, nothing to report".
    """
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{rpc} is not implemented yet in this version of resplit; it lands with {lands_with}",
    )
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

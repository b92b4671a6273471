"""How the head's gRPC services turn exceptions into status codes (one rule for all of them)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio
from loguru import logger

_Reply = TypeVar("_Reply")


class NotFoundError(LookupError):
    """A request named something the head does not know; the caller gets NOT_FOUND."""


class FencedError(Exception):
    """A request from a node incarnation the head declared dead; the caller gets
    FAILED_PRECONDITION (it must fence itself and come back as a new incarnation)."""


class AgentUnreachableError(Exception):
    """A request the head passes to a node's agent got no answer from it; the caller gets
    FAILED_PRECONDITION (the node must answer first), with the agent's error in words."""


def rpc(
    method: Callable[[Any, Any, aio.ServicerContext], Awaitable[_Reply]],
) -> Callable[[Any, Any, aio.ServicerContext], Awaitable[_Reply]]:
    """Turn bad requests into INVALID_ARGUMENT / NOT_FOUND and crashes into logged INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: aio.ServicerContext) -> _Reply:
        try:
            return await method(self, request, context)
        except ValueError as e:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(e)
        except NotFoundError as e:
            code, message = grpc.StatusCode.NOT_FOUND, str(e)
        except (FencedError, AgentUnreachableError) as e:
            code, message = grpc.StatusCode.FAILED_PRECONDITION, str(e)
        except Exception as e:
            logger.exception("head RPC {} failed", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    return wrapper

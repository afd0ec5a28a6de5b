"""Which Milvus errors are worth retrying, and one-line descriptions of them.

The retry loop itself is hashplug's :class:`~hashplug.stores.retry.RetryPolicy`. Errors are
classified by type and gRPC status code first; pymilvus wraps some transport failures (a server
that is not reachable yet, a node still recovering) in a ``MilvusException`` whose code does not
say so, and only for those are the words of the message read.
"""

from __future__ import annotations

import socket

import grpc

from hashplug.stores.retry import RetryPolicy, error_chain

__all__ = ["RetryPolicy", "is_transient", "error_chain", "short_error"]

#: gRPC status codes that mean "the server or the network is (momentarily) not there".
TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
#: Words in Milvus/pymilvus error messages that mean the same (a server that is starting,
#: recovering, rate-limiting, or a connection that failed).
TRANSIENT_WORDS = (
    "unavailable",
    "connection refused",
    "connect failed",
    "failed to connect",
    "fail connecting",
    "failed connecting",
    "socket closed",
    "broken pipe",
    "connection reset",
    "deadline exceeded",
    "timed out",
    "timeout",
    "not ready",
    "not healthy",
    "service not ready",
    "server is not ready",
    "rate limit",
    "too many requests",
    "node not found",
    "no available",
    "channel not",
    "not serviceable",
    "recovering",
)


def _grpc_code(e: BaseException) -> grpc.StatusCode | None:
    code = getattr(e, "code", None)
    if isinstance(e, grpc.RpcError) and callable(code):
        try:
            c = code()
        except Exception:  # noqa: BLE001 - a broken error object is not transient
            return None
        return c if isinstance(c, grpc.StatusCode) else None
    return None


def is_transient(exc: BaseException) -> bool:
    """Return True for errors that a later attempt may not see.

    Unreachable server, timeouts, overload.
    """
    for e in error_chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout)):
            return True
        code = _grpc_code(e)
        if code is not None:
            return code in TRANSIENT_GRPC
        msg = str(e).lower()
        if any(w in msg for w in TRANSIENT_WORDS):
            return True
    return False


def short_error(exc: BaseException) -> str:
    """One line naming the error, without pymilvus' multi-line gRPC dumps."""
    for e in error_chain(exc):
        code = _grpc_code(e)
        if code is not None:
            details = getattr(e, "details", None)
            text = details() if callable(details) else ""
            return f"gRPC {code.name}: {text}".strip()
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"

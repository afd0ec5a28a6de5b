"""Bounded retry with exponential backoff for Milvus RPCs, and which errors are worth retrying."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")

__all__ = ["RetryPolicy", "is_transient", "error_chain"]

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


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, each once."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


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
    """True for errors that a later attempt may not see: unreachable server, timeouts, overload."""
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


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, waiting ``backoff * 2**i`` (at most
    ``max_backoff``) between them, and none that would start after ``deadline`` seconds."""

    retries: int = 5
    backoff: float = 0.25
    max_backoff: float = 5.0
    deadline: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.deadline <= 0:
            raise ValueError(f"invalid retry policy {self}")

    def delays(self) -> Iterator[float]:
        for i in range(self.retries):
            yield min(self.backoff * (2**i), self.max_backoff)

    def run(
        self,
        fn: Callable[[], T],
        *,
        on_transient: Callable[[BaseException, int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> tuple[T, int]:
        """Call ``fn`` until it succeeds; retry only transient errors.

        Returns ``(result, attempts)``. Raises the last error (transient ones annotated with
        ``attempts`` and ``elapsed`` attributes) once the retries or the deadline are spent.
        """
        start = time.monotonic()
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), attempt
            except Exception as e:
                if not is_transient(e):
                    raise
                if on_transient is not None:
                    on_transient(e, attempt)
                delay = next(delays, None)
                elapsed = time.monotonic() - start
                if delay is None or elapsed + delay > self.deadline:
                    e.hashplug_attempts = attempt  # type: ignore[attr-defined]
                    e.hashplug_elapsed = elapsed  # type: ignore[attr-defined]
                    raise
                sleep(delay)

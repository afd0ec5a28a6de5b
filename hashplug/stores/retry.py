"""One bounded retry loop with exponential backoff, shared by the server stores.

Each adapter says which of its client's errors are transient (``is_transient``: by exception type
or status code); :meth:`RetryPolicy.run` retries those and, once the attempts or the deadline are
spent, raises :class:`~hashplug.errors.StoreUnavailableError` carrying ``attempts`` and
``elapsed``, with the last error as its cause. Other errors pass through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import StoreUnavailableError

T = TypeVar("T")

__all__ = ["RetryPolicy", "error_chain"]


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, each once."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _default_message(e: BaseException, attempts: int, elapsed: float) -> str:
    return f"failed {attempts} time(s) in {elapsed:.1f} s; last error: {type(e).__name__}: {e}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    ``retries`` more attempts after the first, waiting ``backoff * 2**i`` (at most ``max_backoff``)
    between them, and none that would start after ``deadline`` seconds.
    """

    retries: int = 5
    backoff: float = 0.25
    max_backoff: float = 5.0
    deadline: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.deadline <= 0:
            raise ValueError(f"invalid retry policy {self}")

    def delays(self) -> Iterator[float]:
        """Return the waits between attempts, in order."""
        for i in range(self.retries):
            yield min(self.backoff * (2**i), self.max_backoff)

    def run(
        self,
        fn: Callable[[], T],
        *,
        is_transient: Callable[[BaseException], bool],
        message: Callable[[BaseException, int, float], str] = _default_message,
        on_transient: Callable[[BaseException, int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Call ``fn`` until it succeeds, retrying the errors ``is_transient`` accepts.

        Raises :class:`StoreUnavailableError` (``message(last_error, attempts, elapsed)``, the
        last error as ``__cause__``) when the retries or the deadline are spent; any other error
        is raised as it is, at once.
        """
        start = time.monotonic()
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    raise
                if on_transient is not None:
                    on_transient(e, attempt)
                delay = next(delays, None)
                elapsed = time.monotonic() - start
                if delay is None or elapsed + delay > self.deadline:
                    raise StoreUnavailableError(
                        message(e, attempt, elapsed), attempts=attempt, elapsed=elapsed
                    ) from e
                sleep(delay)

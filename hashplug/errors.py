"""Every exception hashplug raises on purpose, under one root: :class:`HashplugError`.

``except hashplug.HashplugError`` catches them all. Each class also keeps the built-in base it
has always had, so ``except ValueError`` (bad input, wrong hasher, damaged file) and
``except RuntimeError`` (a store failing) keep working. The classes are re-exported where they
were first defined (``hashplug.hashers``, ``hashplug.stores``, ``hashplug.encoders``).
"""

from __future__ import annotations

__all__ = [
    "HashplugError",
    "StoreError",
    "StoreUnavailableError",
    "HasherMismatchError",
    "HasherFileError",
    "NotFittedError",
    "WeightsNotFoundError",
    "ModalityError",
]


class HashplugError(Exception):
    """Root of the exceptions defined by hashplug and its adapters."""


class StoreError(HashplugError, RuntimeError):
    """A store could not do what was asked (unreachable server, corrupt collection, ...)."""


class StoreUnavailableError(StoreError):
    """A server stayed unreachable (or overloaded) through every retry.

    ``attempts``: how many calls were made; ``elapsed``: seconds from the first to the last.
    The last underlying error is the ``__cause__``.
    """

    def __init__(self, message: str, *, attempts: int = 1, elapsed: float = 0.0) -> None:
        super().__init__(message)
        self.attempts = int(attempts)
        self.elapsed = float(elapsed)


class HasherMismatchError(HashplugError, ValueError):
    """A collection was written by a hasher other than the one used to write or search it."""


class HasherFileError(HashplugError, ValueError):
    """A hasher file is missing, truncated, altered or from a newer format version."""


class NotFittedError(HashplugError, ValueError):
    """A hasher was used before ``fit``."""


class WeightsNotFoundError(HashplugError, FileNotFoundError):
    """Pretrained weights are not on this machine (and downloading was not allowed)."""


class ModalityError(HashplugError, ValueError):
    """An encoder was asked for a modality it does not have."""

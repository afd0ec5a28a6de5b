"""Sources: float collections someone else wrote, and attach(): hashplug codes beside them."""

from .core import CODES_SUFFIX, AttachedIndex, AttachedResult, SyncReport, attach
from .registry import KNOWN_SOURCES, open_source
from .source import Source, SourceError, SourceInfo

__all__ = [
    "attach",
    "AttachedIndex",
    "AttachedResult",
    "SyncReport",
    "CODES_SUFFIX",
    "open_source",
    "KNOWN_SOURCES",
    "Source",
    "SourceError",
    "SourceInfo",
]

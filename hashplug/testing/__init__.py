"""Test helpers shipped with hashplug: the store conformance suite for adapters."""

from . import conformance
from .conformance import *  # noqa: F403 - the suite's names, listed once in conformance.__all__
from .filter_cases import FILTER_CASES, FILTER_PAYLOADS

__all__ = ["FILTER_CASES", "FILTER_PAYLOADS"]
__all__ += conformance.__all__

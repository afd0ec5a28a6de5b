"""Test helpers shipped with hashplug: the store conformance suite for adapters."""

from .conformance import (
    CAPABILITY_MIXINS,
    REQUIRED_MIXINS,
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
    PayloadConformance,
    PersistenceConformance,
    RescoringConformance,
    StoreConformance,
    make_meta,
    random_codes,
    run_filter_cases,
    tie_data,
)
from .filter_cases import FILTER_CASES, FILTER_PAYLOADS

__all__ = [
    "CAPABILITY_MIXINS",
    "REQUIRED_MIXINS",
    "ConcurrencyConformance",
    "CoreConformance",
    "CorrectionsConformance",
    "PayloadConformance",
    "PersistenceConformance",
    "CosineRescoringConformance",
    "RescoringConformance",
    "StoreConformance",
    "make_meta",
    "random_codes",
    "run_filter_cases",
    "tie_data",
    "FILTER_CASES",
    "FILTER_PAYLOADS",
]

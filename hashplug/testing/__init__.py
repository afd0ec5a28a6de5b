"""Test helpers shipped with hashplug: the store conformance suite for adapters."""

from .conformance import StoreConformance, make_meta, random_codes

__all__ = ["StoreConformance", "make_meta", "random_codes"]

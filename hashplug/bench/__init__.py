"""Benchmark harness: embedding sets, metrics, experiments, reports."""

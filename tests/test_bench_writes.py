"""benchmarks/bench_writes.py end to end on 100k real image codes (a few seconds)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="bench_writes compares against faiss-cpu, not installed")
ROOT = Path(__file__).resolve().parent.parent


def test_write_bench_reports_every_measure(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_writes", ROOT / "benchmarks/bench_writes.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not mod.SETS["fmnist"].exists():
        pytest.skip(f"real embeddings not found at {mod.SETS['fmnist']}")
    (row,) = mod.main(
        ["--sizes", "100000", "--sets", "fmnist", "--queries", "20", "--out", str(tmp_path)]
    )
    for name in ("writes.md", "writes.json", "writes.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "writes.json").read_text())[0]["N"] == 100_000
    assert row["ivf nlist"] > 1 and row["flat recall"] >= 0.9 and 0 < row["ivf recall"] <= 1
    assert len(row["curves"]["memory://"]) == len(row["curves"]["file://"]) == 2
    # after a 1k write the search does not regroup every list (O(N)): 10x a search at most
    assert row["search after write ms"] < 10 * row["ivf ms"] + 5

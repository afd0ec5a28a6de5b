"""benchmarks/bench_scale.py end to end on 20k real image codes (a few seconds)."""

import importlib.util
import json
from pathlib import Path

import pytest

from hashplug.stores._ivf import auto_nlist

pytest.importorskip("faiss", reason="bench_scale compares against faiss-cpu, not installed")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks/bench_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not mod.SETS["fmnist"].exists():
        pytest.skip(f"real embeddings not found at {mod.SETS['fmnist']}")
    return mod


def test_scale_bench_writes_comparable_results(bench, tmp_path):
    argv = ["--sizes", "20000", "--sets", "fmnist", "--queries", "20", "--single", "2"]
    runs = bench.main(argv + ["--repeats", "1", "--out", str(tmp_path), "--in-process"])
    for name in ("scale.md", "scale.json", "scale.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    (run,) = runs
    assert json.loads((tmp_path / "scale.json").read_text())[0]["n"] == 20000
    s, ing = run["search"], run["ingest"]
    assert s["exact"]["recall"] == 1.0
    assert s["hp flat"]["recall"] >= 0.9
    # FAISS flat reranked with the same C finds the same candidates up to Hamming ties
    assert abs(s["faiss flat"]["recall"] - s["hp flat"]["recall"]) <= 0.05
    assert s["hp ivf np=128"]["recall"] >= s["hp ivf np=8"]["recall"]
    for m in s.values():
        assert all(m["single_ms"][t] > 0 and m["batch_ms"][t] > 0 for t in (1, 2))
    assert ing["hp flat"]["mem_bytes_per_vector"] >= 16  # 8-byte code + int64 id at least
    assert 8 <= ing["faiss flat"]["disk_bytes_per_vector"] < 8.01  # codes + a header
    assert 8 < ing["hp file://"]["disk_bytes_per_vector"] < 64
    assert ing["hp ivf"]["train_s"] > 0 and run["nlist"] == auto_nlist(20_000)

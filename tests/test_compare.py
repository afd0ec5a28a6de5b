"""hashplug compare on small real data with the real engines.

LanceDB, Qdrant Edge, Milvus Lite, FAISS: the frontier rows, the report, and the bad-input errors of
the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hashplug.bench.compare import CompareConfig, pareto_front, recommend, run_compare
from hashplug.bench.compare_report import write_compare_report
from hashplug.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fmnist_effnet.npz"


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1500 database / 30 query real image embeddings, first 64 dimensions (fast to index)."""
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is absent")
    d = np.load(SHARED)
    path = tmp_path_factory.mktemp("cmp") / "small.npz"
    np.savez(
        path,
        db_x=d["db_x"][:1500, :64].astype(np.float32),
        db_y=d["db_y"][:1500],
        q_x=d["q_x"][:30, :64].astype(np.float32),
        q_y=d["q_y"][:30],
    )
    return path


METHODS = [
    "exact:float",
    "faiss:binary-flat",
    "faiss:rabitq",
    "st:binary+rescore",
    "lancedb:flat",
    "lancedb:ivf_rq+refine",
    "qdrant:bq-1bit",
    "qdrant:sq-int8",
    "milvus:*",
    "hashplug:itq-32",
    "hashplug:itq-32+originals",
    "hashplug:hb-64+originals",
    "hashplug:*-64-cos",
]


@pytest.fixture(scope="module")
def results(small_set: Path) -> dict:
    cfg = CompareConfig(
        bits=(32, 64),
        hashers=("hb", "itq"),
        methods=METHODS,
        queries=20,
        progress=False,
        candidates=300,
        shortlist=50,
        target_recall=0.9,
    )
    return run_compare(small_set, cfg)


def _rows(res: dict, method: str) -> list[dict]:
    return [r for r in res["frontier"] if r["method"] == method]


def test_frontier_rows_have_the_measured_fields(results: dict) -> None:
    keys = {
        "method",
        "engine",
        "bytes_per_vector",
        "disk_bytes_per_vector",
        "recall_at_10",
        "p50_ms",
        "p99_ms",
        "qps",
        "build_s",
        "map_at_10",
        "usd_month_per_million",
    }
    assert not results["failed"], results["failed"]
    for r in results["frontier"]:
        assert keys <= set(r), r["method"]
        assert 0 <= r["recall_at_10"] <= 1 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["bytes_per_vector"] > 0
    assert _rows(results, "exact:float")[0]["recall_at_10"] == 1.0
    # Engines that keep data on disk report it; in-RAM references report none.
    assert _rows(results, "lancedb:flat")[0]["disk_bytes_per_vector"] > 64 * 4
    assert _rows(results, "faiss:binary-flat")[0]["disk_bytes_per_vector"] == 0


def test_hashplug_rows_and_originals(results: dict) -> None:
    for engine in ("memory", "lancedb"):
        plain = [r for r in _rows(results, "hashplug:itq-32") if r["engine"] == engine][0]
        plus = [r for r in _rows(results, "hashplug:itq-32+originals") if r["engine"] == engine][0]
        assert plus["recall_at_10"] >= plain["recall_at_10"]
        assert plus["recall_at_10"] > 0.9
    mem_plus = [r for r in _rows(results, "hashplug:itq-32+originals") if r["engine"] == "memory"]
    # the originals kept in RAM are counted: at least 64 float32 per vector on top of the codes
    assert mem_plus[0]["bytes_per_vector"] >= 64 * 4 + 4
    mem = [r for r in _rows(results, "hashplug:itq-32") if r["engine"] == "memory"][0]
    # 32-bit code + int64 id + float16 (c, e) factors
    assert mem["bytes_per_vector"] == pytest.approx(4 + 8 + 4)
    # scoring="cosine" rows: memory store, the same bytes, the estimator's ranking
    for h in ("itq", "mb"):
        (cos,) = _rows(results, f"hashplug:{h}-64-cos")
        assert cos["engine"] == "memory" and cos["bytes_per_vector"] == pytest.approx(8 + 8 + 4)
        assert cos["params"]["scoring"] == "cosine" and cos["recall_at_10"] > 0.3
    # hb-64 on LanceDB was not asked for (only the memory engine runs every hasher)
    assert {r["engine"] for r in _rows(results, "hashplug:hb-64+originals")} == {"memory"}


def test_absent_options_are_listed_with_the_version(results: dict) -> None:
    gone = {u["method"]: u["reason"] for u in results["unavailable"]}
    assert "not in this version (Milvus Lite" in gone["milvus:ivf_sq8"]
    assert "milvus:ivf_rabitq" in gone and "milvus:hnsw" in gone
    assert {r["method"] for r in results["frontier"]} >= {"milvus:flat", "milvus:bin_flat"}
    assert results["versions"]["lancedb"].startswith("LanceDB ")


def test_report_files(results: dict, tmp_path: Path) -> None:
    paths = write_compare_report(results, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["frontier"]) == len(results["frontier"])
    md = paths["markdown"].read_text()
    assert "| # | method | engine | RAM B/vec" in md and "Not available here" in md
    assert md.count("\n| ") == len(results["frontier"]) + 1
    for key in ("ram_plot", "latency_plot"):
        assert paths[key].stat().st_size > 10_000
    assert results["recommendation"]["text"]


def test_pareto_front_and_recommendation() -> None:
    rows = [
        {
            "method": "a",
            "engine": "x",
            "bytes_per_vector": 8,
            "recall_at_10": 0.5,
            "p50_ms": 1.0,
            "usd_month_per_million": 0.1,
        },
        {
            "method": "b",
            "engine": "x",
            "bytes_per_vector": 16,
            "recall_at_10": 0.4,
            "p50_ms": 1.0,
            "usd_month_per_million": 0.2,
        },
        {
            "method": "c",
            "engine": "x",
            "bytes_per_vector": 64,
            "recall_at_10": 0.97,
            "p50_ms": 2.0,
            "usd_month_per_million": 0.5,
        },
    ]
    assert pareto_front(rows, "bytes_per_vector") == [0, 2]
    rec = recommend(rows, 0.95)
    assert rec["reached"] and rec["cheapest"] == "c [x]"
    miss = recommend(rows, 0.99)
    assert not miss["reached"] and miss["closest"] == "c [x]"


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["compare", "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def test_cli_unknown_method(small_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _cli(["--embeddings", str(small_set), "--methods", "lancedb:ivf_zz"], capsys)
    assert rc == 2 and "unknown method 'lancedb:ivf_zz'" in err


def test_cli_option_missing_from_the_engine(
    small_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _cli(["--embeddings", str(small_set), "--methods", "milvus:hnsw"], capsys)
    assert rc == 2 and "not in this version (Milvus Lite 2.5" in err


def test_cli_nan_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    x[7, 3] = np.nan
    p = tmp_path / "nan.npz"
    np.savez(p, db_x=x, q_x=x[:5] * 0 + 1)
    rc, err = _cli(["--embeddings", str(p), "--methods", "exact:float"], capsys)
    assert rc == 2 and "db_x has NaN or inf in 1 rows (first: [7])" in err


def test_cli_unreachable_target(
    small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--embeddings",
        str(small_set),
        "--methods",
        "faiss:binary-flat",
        "--queries",
        "10",
        "--target-recall",
        "1.0",
        "--out",
        str(tmp_path),
    ]
    rc, err = _cli(args, capsys)
    assert (
        rc == 2 and "No option reaches recall@10 >= 1.00; the closest is faiss:binary-flat" in err
    )
    assert (tmp_path / "report.md").is_file()  # the report is still written
    rc, err = _cli(["--embeddings", str(small_set), "--target-recall", "1.5"], capsys)
    assert rc == 2 and "--target-recall must be in (0, 1]" in err


def test_run_appends_the_compact_comparison(small_set: Path, tmp_path: Path) -> None:
    """``hashplug run``'s compact comparison: LanceDB's indexes vs hashplug, in the run's report."""
    from hashplug.cli import _compact_compare

    md = tmp_path / "report.md"
    md.write_text("# run report\n")
    paths = {"markdown": md}
    _compact_compare(
        small_set,
        str(tmp_path),
        paths,
        methods=["exact:float", "lancedb:ivf_rq", "hashplug:itq-64"],
        queries=10,
    )
    text = md.read_text()
    assert text.startswith("# run report") and "LanceDB's own indexes vs hashplug" in text
    assert "`lancedb:ivf_rq`" in text and "`hashplug:itq-64`" in text
    assert paths["compare_ram_plot"].is_file()

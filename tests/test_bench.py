"""The benchmark harness and the CLI, end to end on a slice of the real embeddings."""

import json

import numpy as np
import pytest

from hashplug import HashingBaseline
from hashplug.bench.backends import available_backends
from hashplug.bench.metrics import map_at_k
from hashplug.bench.run import run_bench
from hashplug.cli import main


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, fmnist):
    path = tmp_path_factory.mktemp("emb") / "small.npz"
    np.savez(
        path,
        db_x=fmnist["db_x"][:4000],
        db_y=fmnist["db_y"][:4000],
        q_x=fmnist["q_x"][:300],
        q_y=fmnist["q_y"][:300],
        info=np.array("fmnist slice"),
    )
    return path


def _numpy_asym_map(path, n_bits, seed, k=1000):
    """Independent reference: float64 Σ|b - p|, ties by smaller index, mAP@k."""
    with np.load(path) as d:
        db, q, dy, qy = (d[n] for n in ("db_x", "q_x", "db_y", "q_y"))
    h = HashingBaseline(n_bits, seed=seed, calibration="none").fit(db)  # the paper's queries
    bits = np.unpackbits(h.encode(db), axis=1).astype(np.float64)
    p = h.query(q).astype(np.float64)
    dist = p.sum(1, keepdims=True) + (1 - 2 * p) @ bits.T
    top = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return map_at_k(top, dy, qy) * 1.0


def test_run_bench_writes_table_json_and_plots(small_set, tmp_path):
    backends = [b for b in ("local", "lancedb") if b in available_backends()]
    results, paths = run_bench(
        small_set,
        tmp_path / "rep",
        hashers=["hashing-baseline", "lsh"],
        bits=[16, 64],
        seeds=2,
        backends=backends,
        oversamples=[1, 10],
        progress=False,
    )
    paper = results["paper"]
    hb = paper["hashers"]["hashing-baseline"]
    for nb in (16, 64):
        got = hb[str(nb)]["binary_asymmetric"]["values"][0]
        assert abs(got - _numpy_asym_map(small_set, nb, 0)) < 0.05, nb
        assert hb[str(nb)]["binary_asymmetric"]["mean"] > hb[str(nb)]["binary_symmetric"]["mean"]
        assert len(hb[str(nb)]["binary_asymmetric"]["values"]) == 2
    assert paper["float_cosine"] > hb["64"]["binary_asymmetric"]["mean"]
    assert set(paper["ablations"]) == {"no-rotation", "no-pca"}

    assert set(results["backends"]) == set(backends)
    for name, r in results["backends"].items():
        assert r["oversample"]["10"]["recall_vs_asym"] >= 0.95, name
        assert r["oversample"]["1"]["recall_vs_asym"] < r["oversample"]["10"]["recall_vs_asym"]
        assert abs(r["map"]["two_stage"] - r["map"]["exhaustive_asymmetric"]) < 0.5, name
        assert r["bytes_codes_per_vector"] == 8 + 4 and r["latency_ms"]["p50"] > 0  # + factors
    fb = results["float_baseline"]
    assert fb["bytes_codes_per_vector"] == 1280 * 4

    md = paths["markdown"].read_text()
    assert "| Hashing-Baseline, binary asymmetric |" in md and "| LSH, binary symmetric |" in md
    assert "float32 exact (numpy)" in md
    saved = json.loads(paths["json"].read_text())
    assert saved["paper"]["hashers"]["lsh"]["16"]["binary_asymmetric"]["mean"] == pytest.approx(
        paper["hashers"]["lsh"]["16"]["binary_asymmetric"]["mean"]
    )
    for png in ("map_vs_bits.png", "recall_vs_oversample.png", "latency_vs_recall.png"):
        assert paths[png].stat().st_size > 5000, png


def test_cli_fit_ingest_search(small_set, tmp_path, capsys):
    hasher = tmp_path / "h.safetensors"
    store = f"file://{tmp_path / 'store'}"
    assert main(["fit", "--embeddings", str(small_set), "--bits", "32", "--out", str(hasher)]) == 0
    assert (
        main(["ingest", "--hasher", str(hasher), "--store", store, "--embeddings", str(small_set)])
        == 0
    )
    assert "ingested 4000 vectors" in capsys.readouterr().out
    q = tmp_path / "q.npy"
    with np.load(small_set) as d:
        np.save(q, d["db_x"][:3])
    assert (
        main(
            [
                "search",
                "--hasher",
                str(hasher),
                "--store",
                store,
                "--queries",
                str(q),
                "--k",
                "5",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    # A database item's own code is its best possible asymmetric match (ties by smaller id).
    assert all(len(r["ids"]) == 5 and i in r["ids"] for i, r in enumerate(rows))
    assert all(np.all(np.diff(r["distances"]) >= 0) for r in rows)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["fit", "--embeddings", str(tmp_path / "none.npy"), "--out", "x"]) == 2
    assert "none.npy" in capsys.readouterr().err
    assert main(["bench", "--embeddings", str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert "no embedding set" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_run_encodes_a_labelled_folder_and_reports(tmp_path, capsys):
    """The main job's path on a small labelled image folder.

    Real EfficientNet weights, encode, cache, fit, ingest, search with rerank, report.
    """
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for c, name in enumerate(("stripes", "blobs")):
        (root / name).mkdir(parents=True)
        for i in range(40):
            if c == 0:
                a = np.tile((np.arange(32) // 4 % 2 * 255)[:, None], (1, 32))
            else:
                yy, xx = np.mgrid[:32, :32]
                cy, cx = rng.integers(8, 24, 2)
                a = ((yy - cy) ** 2 + (xx - cx) ** 2 < 60) * 255
            a = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    args = ["run", "--dataset", "image-folder", "--root", str(root), "--bits", "16", "--seeds", "1"]
    args += [
        "--hashers",
        "hashing-baseline",
        "--k",
        "20",
        "--backends",
        "local",
        "--oversample",
        "1",
        "5",
    ]
    args += [
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "rep"),
        "--batch-size",
        "16",
        "--no-compare",  # the compact comparison has its own test (test_compare.py)
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "effnet:efficientnet-lite0" in out
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert res["encoder"]["n_items"] == 80 and res["encoder"]["items_per_s"] > 0
    assert res["paper"]["float_cosine"] > 90  # stripes vs blobs: easy for a real encoder
    assert res["paper"]["hashers"]["hashing-baseline"]["16"]["binary_asymmetric"]["mean"] > 80
    assert main(args) == 0  # second run reads the embedding cache
    assert "read from cache" in capsys.readouterr().out


def test_cli_fit_supervised_hashcoder_takes_labels_from_the_set(small_set, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "hc.safetensors"
    args = ["fit", "--embeddings", str(small_set), "--hasher", "hashcoder-labels"]
    assert main([*args, "--bits", "16", "--epochs", "5", "--out", str(out)]) == 0
    from hashplug import load_hasher

    h = load_hasher(out)
    assert type(h).__name__ == "HashCoder" and h.views == "labels" and h.epochs_ == 5
    x = tmp_path / "x.npy"
    with np.load(small_set) as d:
        np.save(x, d["db_x"][:500])
    assert (
        main(["fit", "--embeddings", str(x), "--hasher", "hashcoder-labels", "--out", str(out)])
        == 2
    )
    assert "needs labels" in capsys.readouterr().err

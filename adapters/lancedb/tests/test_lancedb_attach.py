"""attach() on LanceDB tables written by lancedb itself (never by hashplug)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

import hashplug
from hashplug.cli import main as cli_main
from hashplug.sources import SourceError
from hashplug.stores import HasherMismatchError
from hashplug.testing.attach import assert_source_results_are_named

REPO = Path(__file__).resolve().parents[3]
NPZ = REPO.parent / "shared" / "data" / "fmnist_effnet.npz"
N = 3000


def _real() -> tuple[np.ndarray, np.ndarray]:
    if not NPZ.exists():
        pytest.skip(f"real embeddings not found at {NPZ} (../shared/data is absent)")
    d = np.load(NPZ)
    return d["db_x"][:N].astype(np.float32), d["q_x"][:40].astype(np.float32)


def _write(
    path: Path, name: str, ids: list, vecs: np.ndarray, dtype=None, vec="vector", **extra
) -> None:
    """The user's own pipeline: plain lancedb, an id column, a vector column, a text column."""
    d = vecs.shape[1]
    cols = {
        "id": pa.array(ids),
        vec: pa.FixedSizeListArray.from_arrays(
            pa.array(vecs.reshape(-1), type=dtype or pa.float32()), d
        ),
        "text": pa.array([f"doc {i}" for i in range(len(ids))]),
        **extra,
    }
    lancedb.connect(path).create_table(name, pa.table(cols))


def _snapshot(path: Path, name: str) -> dict[str, str]:
    """Every file of the user's table, by content hash."""
    root = path / f"{name}.lance"
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.fixture
def real_table(tmp_path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    x, q = _real()
    _write(tmp_path, "docs", (np.arange(N) * 7 + 3).tolist(), x)
    return f"lancedb://{tmp_path}/docs", x, q


def test_attach_search_matches_engine_exact_search(real_table, tmp_path):
    uri, x, q = real_table
    before = _snapshot(tmp_path, "docs")
    idx = hashplug.attach(uri, metric="cosine", progress=False)
    assert idx.info.vector_field == "vector" and idx.info.dim == 1280 and idx.info.id_kind == "int"
    assert idx.last_sync.coded == N and len(idx) == N
    res = idx.search(q, 10)
    truth, scores = idx.source.search(q, 10)
    recall = np.mean(
        [len(set(t.tolist()) & set(r.tolist())) / 10 for t, r in zip(truth, res.ids, strict=True)]
    )
    assert recall >= 0.95
    # scores are the engine's cosine similarities of the same rows
    same = res.ids[:, 0] == np.array([t[0] for t in truth])
    np.testing.assert_allclose(res.scores[same, 0], scores[same, 0], atol=1e-4)
    assert set(res.ids.reshape(-1).tolist()) <= set((np.arange(N) * 7 + 3).tolist())
    assert _snapshot(tmp_path, "docs") == before  # attach only read the user's table
    assert_source_results_are_named(idx.source, q[:3], 10)
    idx.close()


def test_codes_only_rescore_and_verify(real_table, tmp_path):
    uri, _, q = real_table
    idx = hashplug.attach(uri, metric="cosine", bits=32, progress=False)
    res = idx.search(q[:3], 5, rescore="codes")
    assert res.ids.shape == (3, 5) and (res.ids >= 0).all()
    assert np.all(np.diff(res.scores, axis=1) >= 0)  # asymmetric distances ascend
    out = tmp_path / "verify.json"
    rep = idx.verify(12, out=out, progress=False)
    assert json.loads(out.read_text())["queries"] == 12
    assert rep["ram_bytes_per_vector"] == {"codes": 4, "floats": 5120}
    assert 0.5 <= rep["recall_at_k"] <= 1.0 and rep["hashplug_ms"]["p50"] > 0
    idx.close()


def test_kill_and_resume_codes_every_row_once(real_table, tmp_path):
    uri, _, _ = real_table
    from hashplug_lancedb.source import LanceDBSource

    real_scan = LanceDBSource.scan
    calls = {"n": 0}

    def dying_scan(self, batch_size):
        for batch in real_scan(self, batch_size):
            calls["n"] += 1
            if calls["n"] == 3:  # the process dies in the middle of the coding pass
                raise KeyboardInterrupt
            yield batch

    LanceDBSource.scan = dying_scan
    try:
        with pytest.raises(KeyboardInterrupt):
            hashplug.attach(uri, metric="cosine", batch_size=500, progress=False, fit_sample=400)
    finally:
        LanceDBSource.scan = real_scan
    store = hashplug.open_store(f"lancedb://{tmp_path}/docs__hashplug")
    partial = store.count()
    assert 0 < partial < N
    idx = hashplug.attach(uri, metric="cosine", batch_size=500, progress=False)
    assert idx.last_sync.coded == N - partial and idx.last_sync.unchanged == partial
    ids = np.concatenate(list(idx.store.iter_ids(1000)))
    assert ids.size == N and np.unique(ids).size == N
    np.testing.assert_array_equal(np.sort(ids), np.arange(N) * 7 + 3)
    idx.close()


def test_sync_after_user_adds_and_deletes(real_table, tmp_path):
    uri, x, _ = real_table
    idx = hashplug.attach(uri, metric="cosine", progress=False)
    tbl = lancedb.connect(tmp_path).open_table("docs")
    tbl.delete("id < 100")  # ids 3, 10, ..., 94: 14 rows
    new = pa.table(
        {
            "id": pa.array([10**9, 10**9 + 1]),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(x[:2].reshape(-1)), 1280),
            "text": pa.array(["a", "b"]),
        }
    )
    tbl.add(new)
    rep = idx.sync(progress=False)
    assert (rep.coded, rep.deleted) == (2, 14)
    assert len(idx) == N - 14 + 2
    res = idx.search(x[:1], 3)
    assert {0 * 7 + 3, 10**9} & set(res.ids[0].tolist()) == {
        10**9
    }  # deleted row gone, new row found
    idx.close()


def test_string_ids_float16_and_rows_without_vectors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 48)).astype(np.float32)
    ids = [f"doc-'{i}'\\\"é" for i in range(400)]
    _write(tmp_path, "t", ids, x, dtype=pa.float16())
    tbl = lancedb.connect(tmp_path).open_table("t")
    tbl.add(
        pa.table(
            {
                "id": ["no-vector"],
                "vector": pa.array([None], type=tbl.schema.field("vector").type),
                "text": ["x"],
            }
        )
    )
    idx = hashplug.attach(f"lancedb://{tmp_path}/t", bits=16, progress=False)
    assert idx.info.dtype == "float16" and idx.info.id_kind == "str" and idx.info.metric == "l2"
    assert idx.last_sync.coded == 400 and idx.last_sync.skipped == 1
    res = idx.search(x[:5].astype(np.float16).astype(np.float32), 3)
    assert [r[0] for r in res.ids] == ids[:5]
    assert np.allclose(res.scores[:, 0], 0, atol=1e-3)  # l2 distance to itself
    truth, _ = idx.source.search(x[:5], 3)
    assert [t[0] for t in truth] == ids[:5]
    idx.close()


def test_bad_input_is_refused_and_the_table_unchanged(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    _write(
        tmp_path,
        "t",
        list(range(300)),
        x,
        other=pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 32),
    )
    before = _snapshot(tmp_path, "t")
    uri = f"lancedb://{tmp_path}/t"
    with pytest.raises(SourceError, match="no table 'nope'"):
        hashplug.attach(f"lancedb://{tmp_path}/nope")
    with pytest.raises(SourceError, match="several float vector fields"):
        hashplug.attach(uri)
    with pytest.raises(SourceError, match="not a float vector field"):
        hashplug.attach(uri, vector_field="text")
    with pytest.raises(SourceError, match="no field 'missing'"):
        hashplug.attach(uri, vector_field="missing")
    with pytest.raises(SourceError, match="must be an integer or string"):
        hashplug.attach(uri, vector_field="vector", id_field="vector")
    other = hashplug.HashingBaseline(16).fit(rng.standard_normal((100, 64)).astype(np.float32))
    with pytest.raises(ValueError, match="expects 64-d"):
        hashplug.attach(uri, vector_field="vector", hasher=other)
    first = hashplug.attach(uri, vector_field="vector", bits=16, progress=False)
    second = hashplug.HashingBaseline(16, seed=5).fit(x)
    with pytest.raises(HasherMismatchError) as e:
        hashplug.attach(uri, vector_field="vector", hasher=second)
    assert first.hasher.fingerprint in str(e.value) and second.fingerprint in str(e.value)
    with pytest.raises(ValueError, match="queries must have shape"):
        first.search(np.zeros((2, 31), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        first.search(np.full((1, 32), np.nan, np.float32))
    first.close()
    assert _snapshot(tmp_path, "t") == before


def test_cli_attach_verify_and_sync(real_table, tmp_path, capsys):
    uri, _, _ = real_table
    out = tmp_path / "v.json"
    assert (
        cli_main(
            [
                "attach",
                uri,
                "--metric",
                "cosine",
                "--bits",
                "32",
                "--verify",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "hashplug three-stage" in text and "engine float search" in text
    assert json.loads(out.read_text())["n_bits"] == 32
    assert cli_main(["sync", uri, "--metric", "cosine"]) == 0
    assert f"{N} unchanged" in capsys.readouterr().out
    assert cli_main(["attach", f"lancedb://{tmp_path}/nope"]) == 2
    assert "has no table 'nope'" in capsys.readouterr().err


def test_source_changed_while_attaching_is_reported(tmp_path):
    x = np.random.default_rng(3).standard_normal((1200, 32)).astype(np.float32)
    _write(tmp_path, "t", list(range(1200)), x)
    from hashplug_lancedb.source import LanceDBSource

    real_scan = LanceDBSource.scan

    def scan_while_user_writes(self, batch_size):
        for i, batch in enumerate(real_scan(self, batch_size)):
            if i == 1:  # the user's pipeline writes while attach reads
                _append(tmp_path, "t", [5000], x[:1])
            yield batch

    LanceDBSource.scan = scan_while_user_writes
    try:
        with pytest.warns(UserWarning, match="changed while it was read"):
            idx = hashplug.attach(
                f"lancedb://{tmp_path}/t", bits=16, batch_size=500, progress=False
            )
    finally:
        LanceDBSource.scan = real_scan
    assert idx.last_sync.changed_during
    rep = idx.sync(progress=False)  # the next sync picks up what was written meanwhile
    assert not rep.changed_during and len(idx) == 1201
    idx.close()


def _append(path: Path, name: str, ids: list, vecs: np.ndarray) -> None:
    tbl = lancedb.connect(path).open_table(name)
    tbl.add(
        pa.table(
            {
                "id": pa.array(ids),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(vecs.reshape(-1)), vecs.shape[1]
                ),
                "text": pa.array(["new"] * len(ids)),
            }
        )
    )

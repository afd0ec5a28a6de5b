"""hashplug.distributed: shards -> streamed fit -> hashing on workers -> stores, resumable.

The engine="local" tests check the shard logic fast; the Ray tests run a real local Ray cluster
(2 CPUs, started once for the module) into real LanceDB / file:// stores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import hashplug  # noqa: E402
from hashplug import distributed as D  # noqa: E402
from hashplug.cli import main as cli_main  # noqa: E402
from hashplug.distributed.shards import read_chunk  # noqa: E402
from hashplug.stores import StoreError  # noqa: E402

DIM = 32


def _vectors(n: int, seed: int, dim: int = DIM, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype)


def write_parquet(path: Path, ids: np.ndarray, x: np.ndarray, row_group: int = 100, **cols) -> None:
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    t = pa.table({"id": pa.array(ids.astype(np.int64)), "vector": vec, **cols})
    pq.write_table(t, path, row_group_size=row_group)


@pytest.fixture(scope="module")
def hasher() -> hashplug.Hasher:
    return hashplug.HashingBaseline(16, seed=0).fit(_vectors(2000, 99))


@pytest.fixture
def parquet_dir(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """4 shards of 250 rows; shard 3 repeats ids 0..9 of shard 0 (its rows win)."""
    d = tmp_path / "pq"
    d.mkdir()
    truth: dict[int, np.ndarray] = {}
    for s in range(4):
        ids = np.arange(s * 250, (s + 1) * 250)
        if s == 3:
            ids[:10] = np.arange(10)
        x = _vectors(250, s)
        write_parquet(d / f"part-{s:03d}.parquet", ids, x)
        truth.update(zip(ids.tolist(), x, strict=True))
    return d, truth


def _check_store(uri: str, h: hashplug.Hasher, truth: dict[int, np.ndarray]) -> None:
    """Every id exactly once, with the code of the vector that won."""
    store = hashplug.open_store(uri)
    assert store.count() == len(truth)
    ids = np.array(sorted(truth))
    got = store.get_codes(ids)
    want = h.encode(np.stack([truth[i] for i in ids.tolist()]))
    np.testing.assert_array_equal(got, want)
    store.close()


# -- shard discovery and bad input (no Ray needed) -----------------------------------------------
def test_scan_parquet_plans_last_write_wins(parquet_dir) -> None:
    d, _ = parquet_dir
    ds = D.scan_shards(d)
    assert [s.rows for s in ds.shards] == [250] * 4 and ds.dim == DIM and ds.kind == "parquet"
    assert ds.duplicate_ids == 10 and ds.duplicate_examples == list(range(10))
    assert list(ds.skip_rows) == [0] and ds.skip_rows[0].tolist() == list(range(10))
    chunks = ds.chunks(200)  # row groups of 100: two per chunk
    assert [(c.start, c.stop) for c in chunks if c.shard == 0] == [(0, 200), (200, 250)]


def test_bad_shards_are_named(tmp_path: Path, hasher) -> None:
    d = tmp_path / "mixed_dim"
    d.mkdir()
    write_parquet(d / "a.parquet", np.arange(10), _vectors(10, 0))
    write_parquet(d / "b.parquet", np.arange(10, 20), _vectors(10, 1, dim=16))
    with pytest.raises(ValueError, match=r"differ in dimension.*a\.parquet.*b\.parquet"):
        D.scan_shards(d)
    d = tmp_path / "mixed_dtype"
    d.mkdir()
    np.save(d / "a.npy", _vectors(10, 0))
    np.save(d / "b.npy", _vectors(10, 0, dtype=np.float16))
    with pytest.raises(ValueError, match=r"differ in dtype.*float32.*float16"):
        D.scan_shards(d)
    d = tmp_path / "no_id"
    d.mkdir()
    pq.write_table(pa.table({"vector": pa.array(_vectors(5, 0).tolist())}), d / "a.parquet")
    with pytest.raises(ValueError, match=r"a\.parquet has no id column 'id'.*--id-column"):
        D.scan_shards(d)
    d = tmp_path / "no_vector"
    d.mkdir()
    write_parquet(d / "a.parquet", np.arange(3), _vectors(3, 0))
    with pytest.raises(ValueError, match=r"a\.parquet has no vector column 'emb'"):
        D.scan_shards(d, vector_column="emb")
    d = tmp_path / "both"
    d.mkdir()
    np.save(d / "a.npy", _vectors(3, 0))
    write_parquet(d / "b.parquet", np.arange(3), _vectors(3, 0))
    with pytest.raises(ValueError, match="both .parquet and .npy"):
        D.scan_shards(d)
    with pytest.raises(ValueError, match="no .parquet or .npy"):
        D.scan_shards(_empty(tmp_path))
    with pytest.raises(FileNotFoundError):
        D.scan_shards(tmp_path / "missing")
    wrong = tmp_path / "wrong_dim"
    wrong.mkdir()
    np.save(wrong / "a.npy", _vectors(4, 0, dim=8))
    with pytest.raises(ValueError, match="8-d vectors; the hasher expects 32-d"):
        D.ingest(wrong, hasher, f"file://{tmp_path}/o", engine="local", progress=False)


def _empty(tmp_path: Path) -> Path:
    e = tmp_path / "empty"
    e.mkdir(exist_ok=True)
    return e


def test_id_column_must_be_integer(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"id": pa.array(["a", "b"]), "vector": pa.array(_vectors(2, 0).tolist())}),
        tmp_path / "s.parquet",
    )
    with pytest.raises(ValueError, match="id column 'id' has type string"):
        D.scan_shards(tmp_path)


def test_unreachable_store_is_a_store_error(tmp_path: Path, hasher) -> None:
    pytest.importorskip("hashplug_qdrant")
    np.save(tmp_path / "a.npy", _vectors(5, 0))
    with pytest.raises(StoreError, match="127.0.0.1:1"):
        D.ingest(tmp_path, hasher, "qdrant://127.0.0.1:1/c", engine="local", progress=False)


# -- local engine: the same pipeline in this process ---------------------------------------------
def test_local_npy_consecutive_ids_and_resume(tmp_path: Path, hasher) -> None:
    d = tmp_path / "npy"
    d.mkdir()
    xs = [_vectors(n, s) for s, n in enumerate((120, 80, 50))]
    for s, x in enumerate(xs):
        np.save(d / f"part-{s}.npy", x)
    truth = dict(zip(range(1000, 1250), np.concatenate(xs), strict=True))
    uri = f"file://{tmp_path}/codes"
    r = D.ingest(d, hasher, uri, engine="local", id_start=1000, batch_size=64, progress=False)
    assert (r.written, r.shards_written, r.shards_skipped, r.stored) == (250, 3, 0, 250)
    assert r.writers == "driver" and Path(r.state_dir).parent == Path(
        f"{tmp_path}/codes.hashplug-ingest"
    )
    _check_store(uri, hasher, truth)
    again = D.ingest(d, hasher, uri, engine="local", id_start=1000, progress=False)
    assert (again.written, again.shards_skipped) == (0, 3)
    # a shard rewritten since its marker is written again, and only that one
    x1 = _vectors(80, 7)
    np.save(d / "part-1.npy", x1)
    truth.update(zip(range(1120, 1200), x1, strict=True))
    r3 = D.ingest(d, hasher, uri, engine="local", id_start=1000, progress=False)
    assert (r3.written, r3.shards_written) == (80, 1)
    _check_store(uri, hasher, truth)
    # the target dropped (its markers stay beside it): the markers are stale, all is written again
    hashplug.open_store(uri).drop()
    with pytest.warns(D.StaleStateWarning, match="holds 0"):
        r4 = D.ingest(d, hasher, uri, engine="local", id_start=1000, progress=False)
    assert (r4.written, r4.shards_written, r4.stored) == (250, 3, 250)
    _check_store(uri, hasher, truth)


def test_shards_read_through_a_uri(parquet_dir, tmp_path: Path, hasher) -> None:
    """A directory given as a URI is read through pyarrow.fs (the path s3:// / gs:// take).

    The same shards, rows, duplicate plan and stored codes as the local path.
    """
    d, truth = parquet_dir
    local, remote = D.scan_shards(d), D.scan_shards(f"file://{d}/")
    assert [s.name for s in remote.shards] == [s.name for s in local.shards]
    assert remote.shards[0].path == f"file://{d}/part-000.parquet"
    assert [(s.rows, s.dim, s.size) for s in remote.shards] == [
        (s.rows, s.dim, s.size) for s in local.shards
    ]
    assert remote.duplicate_ids == local.duplicate_ids == 10
    for c in local.chunks(120)[:4]:
        (ia, xa), (ib, xb) = read_chunk(local, c), read_chunk(remote, c)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)
    uri = f"file://{tmp_path}/codes"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", D.DuplicateIdsWarning)
        r = D.ingest(f"file://{d}", hasher, uri, engine="local", batch_size=100, progress=False)
    assert r.stored == len(truth)
    _check_store(uri, hasher, truth)
    # .npy shards: header and byte ranges read from the file object
    n = tmp_path / "npy"
    n.mkdir()
    xs = [_vectors(70, 1), _vectors(30, 2)]
    for i, x in enumerate(xs):
        np.save(n / f"p{i}.npy", x)
    ds = D.scan_shards(f"file://{n}", id_start=5)
    ids, x = read_chunk(ds, ds.chunks(40)[1])
    np.testing.assert_array_equal(ids, np.arange(45, 75))
    np.testing.assert_array_equal(x, xs[0][40:70])
    (n / "p1.npy").write_bytes((n / "p1.npy").read_bytes()[:-100])  # cut after the scan
    with pytest.raises(ValueError, match="shorter than its header"):
        read_chunk(ds, ds.chunks(40)[-1])
    with pytest.raises(ValueError, match="cannot open 'nosuch://bucket'"):
        D.scan_shards("nosuch://bucket/dir")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.scan_shards(f"file://{tmp_path}/absent")


def test_local_failed_shard_reruns_only_what_is_missing(tmp_path: Path, hasher) -> None:
    d = tmp_path / "pq"
    d.mkdir()
    truth = {}
    for s in range(3):
        ids, x = np.arange(s * 100, (s + 1) * 100), _vectors(100, s)
        if s == 2:
            bad = x.copy()
            bad[50] = np.nan  # a broken row: this shard fails the first time
            write_parquet(d / f"p{s}.parquet", ids, bad)
        else:
            write_parquet(d / f"p{s}.parquet", ids, x)
        truth.update(zip(ids.tolist(), x, strict=True))
    uri = f"lancedb://{tmp_path}/db/codes"
    with pytest.raises(ValueError, match="NaN"):
        D.ingest(d, hasher, uri, engine="local", batch_size=100, progress=False)
    write_parquet(d / "p2.parquet", np.arange(200, 300), truth_rows(truth, 200, 300))
    r = D.ingest(d, hasher, uri, engine="local", batch_size=100, progress=False)
    assert (r.shards_skipped, r.shards_written, r.written) == (2, 1, 100)
    _check_store(uri, hasher, truth)


def truth_rows(truth: dict[int, np.ndarray], a: int, b: int) -> np.ndarray:
    return np.stack([truth[i] for i in range(a, b)])


def test_duplicates_last_write_wins_and_warns(parquet_dir, tmp_path: Path, hasher) -> None:
    d, truth = parquet_dir
    # a duplicate inside one shard too: the later row wins
    ids = np.array([5000, 5001, 5000])
    x = _vectors(3, 11)
    write_parquet(d / "part-999.parquet", ids, x)
    truth.update({5001: x[1], 5000: x[2]})
    uri = f"file://{tmp_path}/dup"
    with pytest.warns(D.DuplicateIdsWarning, match="11 ids occur more than once"):
        r = D.ingest(d, hasher, uri, engine="local", progress=False)
    assert r.duplicate_ids == 11 and r.written == len(truth) == r.stored
    _check_store(uri, hasher, truth)


def test_fit_sample_is_streamed_and_engine_independent(parquet_dir) -> None:
    d, truth = parquet_dir
    h = D.fit(d, bits=16, sample=300, engine="local", progress=False)
    assert h.n_samples_ == 300 and h.dim_ == DIM
    h2 = D.fit(d, bits=16, sample=300, engine="local", progress=False)
    assert h2.fingerprint == h.fingerprint
    with pytest.raises(ValueError, match="unknown method"):
        D.fit(d, method="nope", progress=False)


def test_cli_ingest_directory_and_errors(parquet_dir, tmp_path: Path, hasher, capsys) -> None:
    d, truth = parquet_dir
    hfile = tmp_path / "h.safetensors"
    hasher.save(hfile)
    uri = f"lancedb://{tmp_path}/cli/codes"
    rep = tmp_path / "report.json"
    argv = ["ingest", "--hasher", str(hfile), "--store", uri, "--embeddings", str(d)]
    assert cli_main([*argv, "--report", str(rep)]) == 0
    out = capsys.readouterr()
    assert (
        "ingested 990 vectors from 4 shards" in out.out and "10 ids occur more than once" in out.err
    )
    assert json.loads(rep.read_text())["stored"] == 990
    _check_store(uri, hasher, truth)
    assert cli_main([*argv[:-1], str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    fitted = tmp_path / "fit.safetensors"
    fit_argv = [
        "fit",
        "--embeddings",
        str(d),
        "--bits",
        "16",
        "--sample",
        "200",
        "--out",
        str(fitted),
    ]
    assert cli_main(fit_argv) == 0
    assert hashplug.load_hasher(fitted).n_samples_ == 200
    bad = argv[:-1] + [str(d), "--id-column", "key"]
    assert cli_main(bad) == 2
    assert "has no id column 'key'" in capsys.readouterr().err


def test_killed_job_completes_on_rerun(tmp_path: Path, hasher) -> None:
    """SIGKILL the CLI once a shard is done; the rerun writes the rest, every id once."""
    d = tmp_path / "npy"
    d.mkdir()
    xs = [_vectors(3000, s) for s in range(8)]
    for s, x in enumerate(xs):
        np.save(d / f"part-{s}.npy", x)
    hfile = tmp_path / "h.safetensors"
    hasher.save(hfile)
    uri = f"lancedb://{tmp_path}/kill/codes"
    argv = [sys.executable, "-m", "hashplug.cli", "ingest", "--hasher", str(hfile), "--store",
            uri, "--embeddings", str(d), "--batch-size", "1000"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "kill" / "codes.hashplug-ingest"
    deadline = time.time() + 120
    while time.time() < deadline and not list(state.glob("*/*.done")) and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = len(list(state.glob("*/*.done")))
    assert 1 <= done_before < 8 or p.returncode == 0
    r = D.ingest(d, hasher, uri, engine="local", batch_size=1000, progress=False)
    assert r.shards_skipped == done_before and r.shards_written == 8 - done_before
    _check_store(uri, hasher, dict(zip(range(24000), np.concatenate(xs), strict=True)))


# -- Ray: a real local cluster with 2 CPUs --------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip(
        "ray", reason="ray is not installed (pip install 'hashplug[distributed]')"
    )
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_parquet_into_lancedb(ray_cluster, parquet_dir, tmp_path: Path, hasher) -> None:
    d, truth = parquet_dir
    uri = f"lancedb://{tmp_path}/db/codes"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", D.DuplicateIdsWarning)
        # the directory as a URI: the workers open each shard through pyarrow.fs themselves
        r = D.ingest(
            f"file://{d}", hasher, uri, engine="ray", workers=2, batch_size=100, progress=False
        )
    assert (r.written, r.stored, r.writers, r.engine) == (990, 990, "workers", "ray")
    # one RSS figure per worker that did work (a slow-starting actor may get none)
    assert 1 <= len(r.peak_rss_mb) <= 2 and all(v > 50 for v in r.peak_rss_mb.values())
    _check_store(uri, hasher, truth)


def test_ray_npy_fit_and_file_store_with_resume(ray_cluster, tmp_path: Path) -> None:
    d = tmp_path / "npy"
    d.mkdir()
    xs = [_vectors(300, s) for s in range(4)]
    for s, x in enumerate(xs):
        np.save(d / f"part-{s}.npy", x)
    h = D.fit(d, bits=16, sample=500, engine="ray", progress=False)
    assert (
        h.fingerprint == D.fit(d, bits=16, sample=500, engine="local", progress=False).fingerprint
    )
    uri = f"file://{tmp_path}/codes"
    truth = dict(zip(range(7, 1207), np.concatenate(xs), strict=True))
    # the last shard fails on the workers the first time (a NaN row)
    bad = xs[3].copy()
    bad[5] = np.nan
    np.save(d / "part-3.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        D.ingest(d, h, uri, engine="ray", id_start=7, batch_size=100, progress=False)
    done_before = len(list(Path(f"{tmp_path}/codes.hashplug-ingest").glob("*/*.done")))
    assert done_before <= 3  # the failed shard is never marked done
    np.save(d / "part-3.npy", xs[3])
    r = D.ingest(d, h, uri, engine="ray", id_start=7, batch_size=100, progress=False)
    assert r.writers == "driver" and r.stored == 1200
    assert (r.shards_skipped, r.shards_written) == (done_before, 4 - done_before)
    _check_store(uri, h, truth)


@pytest.mark.slow
def test_raw_items_are_encoded_in_the_pipeline(tmp_path: Path) -> None:
    """Parquet of texts -> the real MiniLM encoder on the workers -> fit + ingest."""
    pytest.importorskip("sentence_transformers")
    from hashplug.encoders import WeightsNotFoundError, load_encoder

    spec = "sbert:all-MiniLM-L6-v2"
    try:
        enc = load_encoder(spec)
    except (WeightsNotFoundError, ImportError) as e:
        pytest.skip(f"{spec} is not available offline: {e}")
    words = ["cat", "dog", "stock", "market", "river", "mountain", "guitar", "violin"]
    texts = [f"a {a} next to a {b}" for a in words for b in words]  # 64 texts
    d = tmp_path / "texts"
    d.mkdir()
    for s in range(2):
        part = texts[s * 32 : (s + 1) * 32]
        pq.write_table(
            pa.table({"id": pa.array(np.arange(s * 32, (s + 1) * 32)), "text": pa.array(part)}),
            d / f"t{s}.parquet",
        )
    with pytest.raises(ValueError, match="give an encoder"):
        D.ingest(d, hashplug.LSH(8).fit(_vectors(10, 0)), "memory://", item_column="text")
    h = D.fit(d, bits=16, sample=64, item_column="text", encoder=spec, engine="local",
              progress=False)  # fmt: skip
    assert h.encoder_ == spec and h.dim_ == 384
    uri = f"file://{tmp_path}/codes"
    r = D.ingest(d, h, uri, item_column="text", encoder=spec, engine="local", progress=False)
    assert r.stored == 64
    store = hashplug.open_store(uri)
    np.testing.assert_array_equal(store.get_codes(np.arange(64)), h.encode(enc.encode(texts)))
    assert store.read_meta().encoder == spec

"""LanceDBStore overhead over bare LanceDB: query latency, ingest rate, bytes on disk per vector.

    .venv/bin/python benchmarks/bench_lancedb.py [--n 100000] [--bits 64] [--k 100] [--queries 200]

Bare LanceDB and the store run side by side in one process on the same table and queries
(interleaved, so drift hits both alike); the ratios are what to read. Codes are random, which
suits the exact (flat) scans measured here. Each ``bench_*`` function returns a list of rows
``(what, value, unit, ratio)`` so that other benchmarks (HashIndex end to end) can add theirs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from hashplug_lancedb import LanceDBStore

from hashplug.testing import make_meta

Row = tuple[str, float, str, float | None]


def random_codes(n: int, n_bits: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, n_bits // 8), dtype=np.uint8)


def arrow_table(ids: np.ndarray, codes: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "code": pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), codes.shape[1]),
        }
    )


def p50_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def timed(f: Callable[[], Any]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def bench_query(store: LanceDBStore, queries: np.ndarray, k: int) -> list[Row]:
    """p50 of one top-k query: bare ``table.search`` vs ``store.search`` / ``search_with_codes``."""
    tbl = store.table

    def bare(q: np.ndarray) -> Any:
        return (
            tbl.search(q, vector_column_name="code")
            .distance_type("hamming")
            .limit(k)
            .select(["id", "_distance"])
            .to_arrow()
        )

    for q in queries[:5]:  # warm up both paths
        bare(q)
        store.search(q[None], k)
    t_bare, t_store, t_codes = [], [], []
    for q in queries:
        t_bare.append(timed(lambda q=q: bare(q)))
        t_store.append(timed(lambda q=q: store.search(q[None], k)))
        t_codes.append(timed(lambda q=q: store.search_with_codes(q[None], k)))
    b = p50_ms(t_bare)
    rows: list[Row] = [
        (f"bare LanceDB hamming top-{k}, 1 query", b, "ms p50", 1.0),
        (f"LanceDBStore.search top-{k}, 1 query", p50_ms(t_store), "ms p50", p50_ms(t_store) / b),
        ("LanceDBStore.search_with_codes, 1 query", p50_ms(t_codes), "ms p50", p50_ms(t_codes) / b),
    ]
    # Batched: all queries in one call (LanceDB's multi-vector query), interleaved repeats.
    t_bare_b, t_store_b = [], []
    for _ in range(5):
        t_bare_b.append(timed(lambda: bare(queries)) / len(queries))
        t_store_b.append(timed(lambda: store.search(queries, k)) / len(queries))
    bb, sb = p50_ms(t_bare_b), p50_ms(t_store_b)
    rows += [
        (f"bare LanceDB, {len(queries)} queries in one call", bb, "ms/query", 1.0),
        (f"LanceDBStore.search, {len(queries)} queries in one call", sb, "ms/query", sb / bb),
    ]
    return rows


def bench_ingest(root: Path, ids: np.ndarray, codes: np.ndarray, batch: int) -> list[Row]:
    """Vectors/s of ``LanceDBStore.upsert`` vs bare LanceDB ``merge_insert`` (same semantics).

    Bare ``add`` (append, no replace-by-id) is shown as the floor.
    """
    n = ids.size
    db = lancedb.connect(root / "bare_ingest")
    t_add = timed(lambda: db.create_table("add", data=arrow_table(ids, codes)))
    empty = db.create_table("merge", schema=arrow_table(ids[:0], codes[:0]).schema)
    t_merge = timed(
        lambda: (
            empty.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(arrow_table(ids, codes))
        )
    )
    rows: list[Row] = [
        (f"bare LanceDB add (append only), {n} codes", n / t_add, "vectors/s", t_merge / t_add),
        (f"bare LanceDB merge_insert on id, {n} codes", n / t_merge, "vectors/s", 1.0),
    ]
    meta = make_meta(codes.shape[1] * 8)
    for label, kw, step in (
        ("one upsert, index='none'", {"index": "none"}, n),
        (f"upserts of {batch}, index='none'", {"index": "none"}, batch),
        ("one upsert, index='auto' (builds IVF_FLAT)", {"index": "auto"}, n),
    ):
        s = LanceDBStore(root / "ingest", f"t{len(rows)}", index_min_rows=n, **kw)
        s.open(meta)

        def load(s: LanceDBStore = s, step: int = step) -> None:
            for a in range(0, n, step):
                s.upsert(ids[a : a + step], codes[a : a + step])

        t = timed(load)
        assert s.count() == n
        rows.append((f"LanceDBStore {label}", n / t, "vectors/s", t_merge / t))
    return rows


def du(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def bench_disk(root: Path, ids: np.ndarray, codes: np.ndarray) -> list[Row]:
    """Bytes on disk per stored vector (int64 id + packed code, no payload), after optimize."""
    n = ids.size
    db = lancedb.connect(root / "bare_disk")
    db.create_table("t", data=arrow_table(ids, codes))
    bare = du(root / "bare_disk" / "t.lance") / n
    s = LanceDBStore(root / "disk", "t", index="none")
    s.open(make_meta(codes.shape[1] * 8))
    s.upsert(ids, codes)
    with warnings.catch_warnings():  # "removes every version except the latest": intended
        warnings.simplefilter("ignore")
        s.optimize(cleanup_older_than=timedelta(0))
    tdir = root / "disk" / "t.lance"
    data = du(tdir / "data")
    total = du(tdir)
    raw = 8 + codes.shape[1]
    rows: list[Row] = [
        (f"raw id + code ({codes.shape[1] * 8} bits)", raw, "bytes/vector", None),
        ("bare LanceDB table dir", bare, "bytes/vector", bare / raw),
        ("LanceDBStore data files", data / n, "bytes/vector", data / n / raw),
        (
            "LanceDBStore table dir (+ id BTree, manifests)",
            total / n,
            "bytes/vector",
            total / n / raw,
        ),
    ]
    s.create_index()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.optimize(cleanup_older_than=timedelta(0))
    with_ivf = du(tdir) / n
    rows.append(
        ("LanceDBStore table dir + IVF_FLAT index", with_ivf, "bytes/vector", with_ivf / raw)
    )
    return rows


def bench_disk_defaults(root: Path, ids: np.ndarray, codes: np.ndarray, batch: int) -> list[Row]:
    """Measure the disk per vector after an ingest in batches, then after ``finish_writes``.

    The ingest uses the store's defaults (IVF_FLAT built at 100k rows, periodic optimize deleting
    versions older than 60 s); ``finish_writes`` is what ``hashplug ingest`` ends with (every old
    version deleted).
    """
    n = ids.size
    s = LanceDBStore(root / "defaults", "t")
    s.open(make_meta(codes.shape[1] * 8))
    for lo in range(0, n, batch):
        s.upsert(ids[lo : lo + batch], codes[lo : lo + batch])
    tdir = root / "defaults" / "t.lance"
    during = du(tdir) / n
    s.finish_writes()
    after = du(tdir) / n
    index = du(tdir / "_indices") / n
    floor = 8 + codes.shape[1] + index  # id + code + the indices' own files
    return [
        ("id + code + index files (floor)", floor, "bytes/vector", None),
        ("table dir after the batched ingest", during, "bytes/vector", during / floor),
        ("table dir after finish_writes()", after, "bytes/vector", after / floor),
    ]


def bench_hash_index(root: Path, n: int, n_bits: int, n_queries: int) -> list[Row]:
    """Measure HashIndex end to end on real embeddings (the fmnist set, tiled with noise to ``n``).

    Ingest rate (embeddings -> hashed -> stored), p50 of ``HashIndex.search`` (k=10, oversample 10,
    rerank on) vs the bare LanceDB hamming top-100 on the same table, and mAP@1000 through LanceDB
    vs exhaustive asymmetric search on the untiled set.
    """
    from hashplug import HashIndex, HashingBaseline, search_codes
    from hashplug.bench.datasets import default_embeddings_path, load_embeddings
    from hashplug.bench.metrics import map_at_k

    ds = load_embeddings(default_embeddings_path())
    h = HashingBaseline(n_bits).fit(ds.db_x)
    rng = np.random.default_rng(0)
    reps = -(-n // len(ds.db_x))
    x = np.concatenate(
        [
            ds.db_x + (r > 0) * 0.05 * rng.standard_normal(ds.db_x.shape, np.float32)
            for r in range(reps)
        ]
    )[:n]
    index = HashIndex(f"lancedb://{root}/hi/t", h, index="none")
    t_ingest = timed(lambda: index.add(x, np.arange(n), progress=False))
    q = ds.q_x[:n_queries]
    qcodes = h.encode(q)
    tbl = index.store.table  # type: ignore[attr-defined]

    def bare(c: np.ndarray) -> Any:
        return (
            tbl.search(c, vector_column_name="code")
            .distance_type("hamming")
            .limit(100)
            .select(["id", "_distance"])
            .to_arrow()
        )

    for i in range(5):
        bare(qcodes[i])
        index.search(q[i], k=10, oversample=10)
    t_bare, t_idx = [], []
    for i in range(len(q)):
        t_bare.append(timed(lambda i=i: bare(qcodes[i])))
        t_idx.append(timed(lambda i=i: index.search(q[i], k=10, oversample=10)))
    b, hi = p50_ms(t_bare), p50_ms(t_idx)
    index.store.drop()
    index.close()

    small = HashIndex(f"lancedb://{root}/hi/map", h)
    small.add(ds.db_x, np.arange(len(ds.db_x)), progress=False)
    got = small.search(ds.q_x, k=1000, oversample=10).ids
    exact, _ = search_codes(h.query(ds.q_x), h.encode(ds.db_x), 1000)
    m_idx, m_ex = map_at_k(got, ds.db_y, ds.q_y), map_at_k(exact, ds.db_y, ds.q_y)
    small.close()
    return [
        (
            f"HashIndex.add, {n} x {x.shape[1]} embeddings -> {n_bits} bits",
            n / t_ingest,
            "vectors/s",
            None,
        ),
        ("bare LanceDB hamming top-100, 1 query", b, "ms p50", 1.0),
        ("HashIndex.search k=10 oversample 10 + rerank", hi, "ms p50", hi / b),
        (f"mAP@1000 exhaustive asymmetric ({len(ds.db_x)} db)", m_ex, "x100", 1.0),
        ("mAP@1000 HashIndex via LanceDB, oversample 10", m_idx, "x100", m_idx / m_ex),
    ]


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"{'what':<52}{'value':>14}  {'unit':<13}{'ratio':>7}")
    for what, value, unit, ratio in rows:
        r = f"{ratio:7.2f}" if ratio is not None else "       "
        v = f"{value:14,.0f}" if value >= 1000 else f"{value:14.2f}"
        print(f"{what:<52}{v}  {unit:<13}{r}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10_000, help="upsert size for the batched ingest")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--only-disk", action="store_true", help="run (3b) only")
    a = ap.parse_args(argv)
    codes = random_codes(a.n, a.bits)
    ids = np.arange(a.n, dtype=np.int64)
    queries = random_codes(a.queries, a.bits, seed=1)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        root = Path(tmp)
        print(f"LanceDB {lancedb.__version__}, {a.n} random {a.bits}-bit codes, top-{a.k}")
        if a.only_disk:
            print_rows(
                f"(3b) disk with the store's defaults, ingest in batches of {a.batch} "
                "(ratio: vs id + code + index files)",
                bench_disk_defaults(root, ids, codes, a.batch),
            )
            return
        store = LanceDBStore(root / "query", "t", index="none")
        store.open(make_meta(a.bits))
        store.upsert(ids, codes)
        print_rows(
            "(1) query latency, exact scan (ratio: time vs bare LanceDB)",
            bench_query(store, queries, a.k),
        )
        print_rows(
            "(2) ingest (ratio: rate vs bare merge_insert)", bench_ingest(root, ids, codes, a.batch)
        )
        print_rows(
            "(3) disk after optimize (ratio: vs raw id + code bytes)", bench_disk(root, ids, codes)
        )
        print_rows(
            f"(3b) disk with the store's defaults, ingest in batches of {a.batch} "
            "(ratio: vs id + code + index files)",
            bench_disk_defaults(root, ids, codes, a.batch),
        )
        print_rows(
            "(4) HashIndex end to end on real embeddings (ratio: vs bare LanceDB / exhaustive)",
            bench_hash_index(root, a.n, a.bits, a.queries),
        )


if __name__ == "__main__":
    main()

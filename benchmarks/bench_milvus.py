"""hashplug-milvus on a real Milvus server: plugin overhead, ingest rate, recall after rerank.

    .venv/bin/python benchmarks/bench_milvus.py [--uri http://HOST:PORT] [--n 100000] [--queries 300]
                                                [--data ../shared/data/fmnist_effnet.npz] [--json out.json]

Without ``--uri`` it starts a Milvus 2.3.5 standalone server (PyPI ``milvus``) on loopback in a
temporary directory and stops it at the end. Everything is measured in one run, so the ratios are
what to read:

1. Latency, one query at a time, top-100 candidates over ``--n`` 64-bit codes (flushed, BIN_FLAT):
   bare ``MilvusClient.search`` vs ``MilvusStore.search`` vs ``MilvusStore.search_with_codes`` vs
   ``hashplug.HashIndex.search(k=10, oversample=10)`` (hash the query, coarse top-100 with the
   codes, Numba asymmetric rerank). Interleaved round-robin so that drift hits all alike.
2. Ingest: ``MilvusStore.upsert`` of ``--n`` codes (no payloads, then with a small payload).
3. Recall@10 (tie-aware) on Fashion-MNIST EfficientNet embeddings (HashingBaseline(64) fitted on the database
   split): reranked Milvus results vs exhaustive asymmetric search computed in numpy
   (sum|b - p| = p.sum() + (1 - 2p) . b), for BIN_FLAT and for BIN_IVF_FLAT across nprobe.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from hashplug_milvus import MilvusStore  # noqa: E402
from pymilvus import MilvusClient  # noqa: E402

from hashplug import HashIndex, HashingBaseline  # noqa: E402
from hashplug.testing import make_meta  # noqa: E402

Row = tuple[str, float, str, str]
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "fmnist_effnet.npz"


def p50_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def timed(f: Callable[[], Any]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def bench_latency(uri: str, n: int, n_queries: int, seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    dim = 128
    centers = rng.normal(size=(64, dim)).astype(np.float32)
    x = centers[rng.integers(0, 64, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    q = centers[rng.integers(0, 64, n_queries)] + 0.5 * rng.normal(size=(n_queries, dim))
    hasher = HashingBaseline(64).fit(x[:20_000])
    name = f"bench_latency_{os.getpid()}"
    store = MilvusStore(uri, name)
    store.drop()
    index = HashIndex(store, hasher)
    index.add(x, np.arange(n), progress=False)
    store.wait_for_index()
    qcodes = hasher.encode(q.astype(np.float32))
    client = MilvusClient(uri, alias="bench-bare")
    params = {"metric_type": "HAMMING", "params": {}}

    def bare(i: int) -> Any:
        return client.search(
            name,
            data=[qcodes[i].tobytes()],
            limit=100,
            search_params=params,
            anns_field="code",
            consistency_level="Session",
        )

    runs: dict[str, Callable[[int], Any]] = {
        "bare pymilvus search, top-100": bare,
        "MilvusStore.search, top-100": lambda i: store.search(qcodes[i : i + 1], 100),
        "MilvusStore.search_with_codes, top-100": lambda i: store.search_with_codes(
            qcodes[i : i + 1], 100
        ),
        "HashIndex.search k=10 oversample=10": lambda i: index.search(q[i : i + 1], 10),
    }
    for f in runs.values():  # warm up: connections, Numba, caches
        for i in range(10):
            f(i)
    samples: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for i in range(n_queries):
        for j in range(len(names)):  # rotate the order per query
            key = names[(i + j) % len(names)]
            samples[key].append(timed(lambda key=key, i=i: runs[key](i)))
    base = p50_ms(samples[names[0]])
    rows: list[Row] = []
    for key in names:
        v = p50_ms(samples[key])
        rows.append((f"p50 {key} ({n} codes)", v, "ms", f"{v / base:.2f}x bare"))
    client.close()
    store.drop()
    store.close()
    return rows


def bench_ingest(uri: str, n: int, seed: int = 1) -> list[Row]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    rows: list[Row] = []
    for label, payloads in (
        ("no payload", None),
        ("payload {group, rank}", [{"group": int(i % 10), "rank": int(i)} for i in range(n)]),
    ):
        store = MilvusStore(uri, f"bench_ingest_{os.getpid()}")
        store.drop()
        store.open(make_meta(64))
        t = timed(lambda s=store, p=payloads: s.upsert(ids, codes, p))
        assert store.count() == n
        rows.append((f"ingest MilvusStore.upsert, 64-bit, {label}", n / t, "vectors/s", ""))
        store.drop()
        store.close()
    return rows


def bench_recall(uri: str, data: Path, nprobes: list[int], nlist: int) -> list[Row]:
    z = np.load(data)
    db_x = z["db_x"].astype(np.float32)
    q_x = z["q_x"].astype(np.float32)
    hasher = HashingBaseline(64).fit(db_x)
    bits = np.unpackbits(hasher.encode(db_x), axis=1)
    p = hasher.query(q_x)
    # Exhaustive asymmetric distances (n_q, n_db): sum_j |b_j - p_j| = sum_j p_j + b . (1 - 2p).
    w = 1.0 - 2.0 * p.astype(np.float64)
    d = p.sum(1, dtype=np.float64)[:, None] + w @ bits.T.astype(np.float64)
    kth = np.partition(d, 9, axis=1)[:, 9]  # the 10th smallest exact distance per query

    def recall(ids: np.ndarray) -> float:
        """Return the tie-aware recall@10.

        A hit counts if its exact distance is within the true top-10's (items with identical codes
        tie, and either of them is a correct answer).
        """
        ok = np.where(
            ids >= 0, np.take_along_axis(d, np.maximum(ids, 0), 1) <= kth[:, None] + 1e-9, False
        )
        return float(ok[:, :10].sum(1).clip(max=10).mean() / 10)

    rows: list[Row] = []
    ids = np.arange(db_x.shape[0], dtype=np.int64)
    flat = MilvusStore(uri, f"bench_recall_flat_{os.getpid()}")
    flat.drop()
    index = HashIndex(flat, hasher)
    index.add(db_x, ids, progress=False)
    flat.wait_for_index()
    t = time.perf_counter()
    res = index.search(q_x, 10, oversample=10)
    dt = time.perf_counter() - t
    rows.append(
        (
            f"recall@10 BIN_FLAT, oversample 10 ({len(q_x)} queries, {len(ids)} items)",
            recall(res.ids),
            "",
            f"{len(q_x) / dt:.0f} q/s batched",
        )
    )
    coarse = index.search(q_x, 10, rerank=False)
    rows.append(("recall@10 BIN_FLAT, Hamming only (no rerank)", recall(coarse.ids), "", ""))
    flat.drop()
    flat.close()

    ivf = MilvusStore(uri, f"bench_recall_ivf_{os.getpid()}", index="BIN_IVF_FLAT", nlist=nlist)
    ivf.drop()
    index = HashIndex(ivf, hasher)
    index.add(db_x, ids, progress=False)
    ivf.wait_for_index()
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        t = time.perf_counter()
        res = index.search(q_x, 10, oversample=10)
        dt = time.perf_counter() - t
        rows.append(
            (
                f"recall@10 BIN_IVF_FLAT nlist={nlist} nprobe={nprobe}, oversample 10",
                recall(res.ids),
                "",
                f"{len(q_x) / dt:.0f} q/s batched",
            )
        )
    ivf.drop()
    ivf.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", help="http://host:port of a running Milvus; default: start one")
    ap.add_argument("--n", type=int, default=100_000, help="codes for latency and ingest")
    ap.add_argument("--queries", type=int, default=300, help="single-query latency samples")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--nlist", type=int, default=128)
    ap.add_argument("--nprobe", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()

    server = None
    tmp = None
    uri = args.uri
    if uri is None:
        from hashplug_milvus.server import EmbeddedMilvus

        tmp = tempfile.TemporaryDirectory(prefix="bench-milvus-")
        server = EmbeddedMilvus(tmp.name)
        t = timed(server.start)
        uri = server.uri
        print(f"started Milvus 2.3.5 standalone at {uri} in {t:.1f} s")
    rows: list[Row] = []
    try:
        rows += bench_ingest(uri, args.n)
        rows += bench_latency(uri, args.n, args.queries)
        if args.data.exists():
            rows += bench_recall(uri, args.data, args.nprobe, args.nlist)
        else:
            print(f"(no {args.data}: recall skipped)")
    finally:
        if server is not None:
            server.stop(timeout=2)
        if tmp is not None:
            tmp.cleanup()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>12}  unit        note")
    for what, value, unit, note in rows:
        val = f"{value:12.4f}" if value < 10 else f"{value:12.1f}"
        print(f"{what:<{width}}  {val}  {unit:<10}  {note}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [dict(zip(("what", "value", "unit", "note"), r, strict=True)) for r in rows],
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

"""Qdrant Edge benchmark: bare quantized search vs the plugin, local rerank vs native rescoring.

    python benchmarks/bench_qdrant.py                 # 100k codes, 64 bits, k=10, oversample 10
    python benchmarks/bench_qdrant.py --n 20000 --latency-queries 100 --json out.json

Latency (one query per call, p50 over the same queries, all variants interleaved in one run) on a
Qdrant Edge shard of ``--n`` 64-bit codes: the real fmnist_effnet codes (Hashing-Baseline fitted
on db_x) tiled to ``--n`` items, each copy after the first with 2 random bits flipped so that the
copies are near but not exact duplicates.

  bare quantized        shard.query on the edge API directly: ±1 query, BQ scores, no rescoring,
                        limit k*oversample (the coarse search HashIndex needs)
  store.search          QdrantEdgeStore.search, same limit (+ hashplug's input checks, score ->
                        Hamming conversion, ordering by (distance, id))
  store.search+codes    QdrantEdgeStore.search_with_codes (stored vectors returned and packed)
  bare native rescore   shard.query with rescore on: limit k, oversampling O, query tanh(u/2)
  HashIndex local       HashIndex.search(k, oversample): hashing + search_with_codes + Numba rerank
  HashIndex native      HashIndex.search(rescore="store"): hashing + QdrantEdgeStore.search_rescored

Quality: Recall@10 against the exhaustive asymmetric search (numpy, float64,
Σp + (1 - 2p)·b, ties by smaller id) of all q_x queries over the 20000 db_x codes, at
``--oversample`` for both rerank paths (strict id recall, and tie-aware: a hit counts when its exact
distance is within 1e-6 of the 10th exact distance).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from hashplug_qdrant import QdrantEdgeStore

from hashplug import HashIndex, HashingBaseline
from hashplug._validate import sigmoid
from hashplug.bench.datasets import default_embeddings_path
from hashplug.codes import unpack_signs
from hashplug.stores.base import CollectionMeta


def _local_search(index: HashIndex, x: np.ndarray, k: int, oversample: int) -> np.ndarray:
    return index.search(x, k=k, oversample=oversample).ids


def _native_search(index: HashIndex, x: np.ndarray, k: int, oversample: int) -> np.ndarray:
    return index.search(x, k=k, oversample=oversample, rescore="store").ids


def _exhaustive(p: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    bits = np.unpackbits(codes, axis=1).astype(np.float64)
    ids = np.arange(codes.shape[0])
    out_i = np.empty((len(p), k), np.int64)
    kth = np.empty(len(p))
    for s in range(0, len(p), 256):
        pp = p[s : s + 256].astype(np.float64)
        d = pp.sum(1)[:, None] + (1 - 2 * pp) @ bits.T
        for r in range(d.shape[0]):
            part = np.argpartition(d[r], k + 64)[: k + 64]
            o = part[np.lexsort((ids[part], d[r][part]))][:k]
            out_i[s + r] = o
            kth[s + r] = d[r][o[-1]]
    return out_i, kth


def _recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(set(g.tolist()) & set(r.tolist())) / ref.shape[1]
                for g, r in zip(got, ref, strict=True)
            ]
        )
    )


def _recall_ties(got: np.ndarray, p: np.ndarray, codes: np.ndarray, kth: np.ndarray) -> float:
    bits = np.unpackbits(codes, axis=1).astype(np.float64)
    hits = 0
    for r in range(len(got)):
        pp = p[r].astype(np.float64)
        d = pp.sum() + bits[got[r]] @ (1 - 2 * pp)
        hits += int((d <= kth[r] + 1e-6).sum())
    return hits / got.size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="codes in the latency shard")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--oversample", type=int, default=10)
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--recall-queries", type=int, default=2000)
    ap.add_argument("--datatype", default="float16", choices=["float16", "float32"])
    ap.add_argument(
        "--embeddings", default=None, help="npz with db_x, q_x (default: ../shared/data)"
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    path = Path(args.embeddings) if args.embeddings else default_embeddings_path()
    with np.load(path) as d:
        db_x = d["db_x"].astype(np.float32)
        q_x = d["q_x"].astype(np.float32)
    k, os_, C = args.k, args.oversample, args.k * args.oversample
    t0 = time.perf_counter()
    hasher = HashingBaseline(64).fit(db_x)
    meta = CollectionMeta(64, hasher.fingerprint, hasher.get_spec())
    db_codes = hasher.encode(db_x)
    print(
        f"# data: {path.name}: db {db_x.shape}, queries {q_x.shape}; hasher fit+encode "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    rng = np.random.default_rng(0)
    reps = -(-args.n // db_codes.shape[0])
    bits = np.unpackbits(db_codes, axis=1)
    tiles = [bits]
    for _ in range(reps - 1):
        b = bits.copy()
        cols = rng.integers(0, 64, size=(b.shape[0], 2))
        np.bitwise_xor.at(b, (np.arange(b.shape[0])[:, None], cols), 1)
        tiles.append(b)
    big = np.packbits(np.concatenate(tiles)[: args.n], axis=1)

    results: dict[str, Any] = {"n": args.n, "k": k, "oversample": os_, "datatype": args.datatype}
    with tempfile.TemporaryDirectory() as tmp:
        # ---------------------------------------------------------------- latency, --n codes
        store = QdrantEdgeStore(Path(tmp) / "big", datatype=args.datatype, optimize_on_close=False)
        index = HashIndex(store, hasher)
        t0 = time.perf_counter()
        store.upsert(np.arange(args.n), big)
        t_ing = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()
        t_opt = time.perf_counter() - t0
        print(
            f"# ingest {args.n} codes {t_ing:.1f} s, optimize {t_opt:.1f} s, "
            f"{store._shard().info().segments_count} segment(s)",
            flush=True,
        )
        shard = store._shard()
        nq = args.latency_queries
        qx = q_x[:nq]
        u = hasher.logits(qx)
        qcodes = np.packbits(u > 0, axis=1)
        qsigns = [row.tolist() for row in unpack_signs(qcodes, 64).astype(np.float32)]
        qtanh = [row.tolist() for row in np.tanh(u / 2).astype(np.float32)]
        p_bare = qe.SearchParams(
            quantization=qe.QuantizationSearchParams(rescore=False, oversampling=1.0)
        )
        p_nat = qe.SearchParams(
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=float(os_))
        )
        variants: dict[str, Callable[[int], Any]] = {
            "bare quantized (edge API)": lambda i: shard.query(
                qe.QueryRequest(limit=C, query=qe.Query.Nearest(qsigns[i]), params=p_bare)
            ),
            "QdrantEdgeStore.search": lambda i: store.search(qcodes[i : i + 1], C),
            "QdrantEdgeStore.search_with_codes": lambda i: store.search_with_codes(
                qcodes[i : i + 1], C
            ),
            "bare native rescore (edge API)": lambda i: shard.query(
                qe.QueryRequest(limit=k, query=qe.Query.Nearest(qtanh[i]), params=p_nat)
            ),
            "QdrantEdgeStore.search_rescored": lambda i: store.search_rescored(
                u[i : i + 1], k, os_
            ),
            "HashIndex.search, local rerank": lambda i: _local_search(index, qx[i : i + 1], k, os_),
            "HashIndex.search, native rescore": lambda i: _native_search(
                index, qx[i : i + 1], k, os_
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(min(20, nq)):  # warm-up (JIT, page cache)
            for f in variants.values():
                f(i)
        for i in range(nq):  # interleaved: every variant sees the same machine state
            for name, f in variants.items():
                t = time.perf_counter()
                f(i)
                times[name].append(time.perf_counter() - t)
        base = float(np.median(times["bare quantized (edge API)"]))
        print(
            f"\n## Latency on Qdrant Edge, {args.n} x 64-bit codes ({args.datatype}), one query per "
            f"call, k={k}, oversample={os_} (coarse limit {C}), {nq} queries"
        )
        print(f"{'variant':38s} {'p50 ms':>8s} {'p90 ms':>8s} {'x bare':>7s}")
        lat: dict[str, dict[str, float]] = {}
        for name, ts in times.items():
            a = np.asarray(ts) * 1e3
            p50, p90 = float(np.median(a)), float(np.percentile(a, 90))
            lat[name] = {"p50_ms": p50, "p90_ms": p90, "ratio_to_bare": p50 / (base * 1e3)}
            print(f"{name:38s} {p50:8.3f} {p90:8.3f} {p50 / (base * 1e3):7.2f}")
        overhead = lat["QdrantEdgeStore.search"]["ratio_to_bare"]
        print(
            f"plugin overhead (QdrantEdgeStore.search / bare): {overhead:.3f}x "
            f"({'OK' if overhead <= 1.25 else 'ABOVE'} the 1.25x budget)"
        )
        results["latency"] = lat
        results["plugin_overhead"] = overhead
        store.close()

        # ---------------------------------------------------------------- recall, real db codes
        nr = min(args.recall_queries, len(q_x))
        qr = q_x[:nr]
        ur = hasher.logits(qr)
        pr = sigmoid(ur)
        ref, kth = _exhaustive(pr, db_codes, k)
        rows: dict[str, dict[str, float]] = {}
        for dt in ("float16", "float32"):
            st = QdrantEdgeStore(Path(tmp) / f"recall_{dt}", datatype=dt, optimize_on_close=False)
            idx = HashIndex(st, hasher)
            st.upsert(np.arange(db_codes.shape[0]), db_codes)
            st.optimize()
            assert st.read_meta() == meta or st.read_meta().fingerprint == meta.fingerprint
            if dt == args.datatype:
                got = _local_search(idx, qr, k, os_)
                rows[f"local rerank ({dt} store)"] = {
                    "recall": _recall(got, ref),
                    "recall_ties": _recall_ties(got, pr, db_codes, kth),
                }
            got = st.search_rescored(ur, k, os_)[0]
            rows[f"native rescore ({dt} store)"] = {
                "recall": _recall(got, ref),
                "recall_ties": _recall_ties(got, pr, db_codes, kth),
            }
            st.close()
        print(
            f"\n## Recall@{k} vs exhaustive asymmetric search, fmnist {db_codes.shape[0]} codes, "
            f"{nr} queries, oversample {os_}"
        )
        print(f"{'path':34s} {'recall':>8s} {'tie-aware':>10s}")
        for name, r in rows.items():
            print(f"{name:34s} {r['recall']:8.4f} {r['recall_ties']:10.4f}")
        results["recall"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

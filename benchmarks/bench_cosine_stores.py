"""``scoring="cosine"`` vs ``scoring="asymmetric"`` through the engine stores, in one run.

    .venv/bin/python benchmarks/bench_cosine_stores.py [--sets fmnist text] [--bits 64 256]
        [--stores memory lancedb qdrant-edge milvus-lite milvus-server] [--latency-queries 100]

Data: ../shared/data/fmnist_effnet.npz (image, 1280-d, 20k db / 2k queries) and
~/.cache/hashplug/fortunes_minilm.npz (text, MiniLM 384-d, 10k / 1k; benchmarks/make_text_set.py).
Rows L2-normalised; HashingBaseline(bits) fitted on the database; every store ingests it with
``HashIndex.add(..., scoring="cosine")`` (codes + the float16 factors) and is searched with the
default oversample. Per store: recall@10 of each scoring against exact float cosine (all
queries, one batched call), bytes per vector (``store.bytes_per_vector()``: codes + factors),
and the p50 latency of one query per call, cosine / asymmetric, the two interleaved query by query
(3 rounds; medians). ``memory://`` is the reference the engines must match (same ids).
``qdrant-edge-native``: the same Qdrant Edge store searched with ``rescore="store"`` (both
rerankings inside Qdrant: the asymmetric one by rescoring, the cosine one by a formula).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from hashplug import HashIndex, HashingBaseline  # noqa: E402
from hashplug.bench.metrics import recall_at_k  # noqa: E402

SETS = {
    "fmnist": Path(__file__).resolve().parents[1] / "../shared/data/fmnist_effnet.npz",
    "text": Path.home() / ".cache/hashplug/fortunes_minilm.npz",
}
URIS = {
    "memory": "memory://",
    "lancedb": "lancedb://{dir}/lance/t{tag}",
    "qdrant-edge": "qdrant-edge://{dir}/edge{tag}",
    "qdrant-edge-native": "qdrant-edge://{dir}/edge{tag}",  # both rerankings inside Qdrant
    "milvus-lite": "milvus+lite://{dir}/milvus.db/t{tag}",
}
K = 10
SCORINGS = ("asymmetric", "cosine")


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as d:
        x, q = d["db_x"].astype(np.float32), d["q_x"].astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(
        q, axis=1, keepdims=True
    )


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ x.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def latency_ratio(
    idx: HashIndex, q: np.ndarray, rounds: int = 3, rescore: str = "local"
) -> dict[str, float]:
    """p50 ms of one query per call for each scoring, interleaved query by query."""
    for s in SCORINGS:  # warm-up (JIT, caches, engine)
        idx.search(q[:2], k=K, scoring=s, rescore=rescore)
    ms: dict[str, list[float]] = {s: [] for s in SCORINGS}
    for r in range(rounds):
        for i in range(q.shape[0]):
            for s in SCORINGS if (i + r) % 2 == 0 else SCORINGS[::-1]:
                t = time.perf_counter()
                idx.search(q[i], k=K, scoring=s, rescore=rescore)
                ms[s].append((time.perf_counter() - t) * 1e3)
    p50 = {s: float(np.median(v)) for s, v in ms.items()}
    return {"p50_asym_ms": p50["asymmetric"], "p50_cos_ms": p50["cosine"],
            "ratio": p50["cosine"] / p50["asymmetric"]}  # fmt: skip


def run_store(
    name: str, uri: str, h: HashingBaseline, x: np.ndarray, q: np.ndarray, truth: np.ndarray,
    n_lat: int, ref: dict[str, np.ndarray] | None,
) -> dict[str, Any]:  # fmt: skip
    idx = HashIndex(uri, h)
    t = time.perf_counter()
    idx.add(x, np.arange(len(x)), progress=False, scoring="cosine")
    row: dict[str, Any] = {"store": name, "ingest_s": time.perf_counter() - t}
    row["bytes_per_vector"] = idx.store.bytes_per_vector()
    rescore = "store" if name.endswith("-native") else "local"
    ids = {}
    for s in SCORINGS:
        ids[s] = idx.search(q, k=K, scoring=s, rescore=rescore).ids
        row[f"recall_{s}"] = recall_at_k(ids[s], truth, K)
        if ref is not None:
            row[f"same_as_memory_{s}"] = float((ids[s] == ref[s]).mean())
    row.update(latency_ratio(idx, q[:n_lat], rescore=rescore))
    row["_ids"] = ids
    idx.store.drop()
    idx.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--bits", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--stores", nargs="+", default=["memory", "lancedb", "qdrant-edge",
                                                    "qdrant-edge-native", "milvus-lite",
                                                    "milvus-server"])  # fmt: skip
    ap.add_argument("--latency-queries", type=int, default=60)
    ap.add_argument("--out", default=str(Path(__file__).with_name("cosine_stores_results.md")))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hashplug-cosine-stores-"))
    server = None
    if "milvus-server" in args.stores:
        from hashplug_milvus.server import EmbeddedMilvus

        server = EmbeddedMilvus(tmp / "milvus-server")
        t = time.perf_counter()
        server.start()
        print(f"Milvus 2.3.5 server up in {time.perf_counter() - t:.1f} s")
    rows: list[dict[str, Any]] = []
    try:
        tag = 0
        for set_name in args.sets:
            x, q = load(SETS[set_name])
            truth = exact_topk(x, q, K)
            for bits in args.bits:
                h = HashingBaseline(bits).fit(x)
                ref = None
                for store in args.stores:
                    tag += 1
                    if store == "milvus-server":
                        assert server is not None
                        uri = server.store_uri(f"t{tag}")
                    else:
                        uri = URIS[store].format(dir=tmp, tag=tag)
                    row = run_store(store, uri, h, x, q, truth, args.latency_queries, ref)
                    if store == "memory":
                        ref = row["_ids"]
                    row.pop("_ids")
                    row.update(set=set_name, bits=bits, n=len(x), queries=len(q))
                    rows.append(row)
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in row.items()}), flush=True)  # fmt: skip
    finally:
        if server is not None:
            server.stop(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    write_report(rows, Path(args.out))


def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    lines = [
        "# scoring='cosine' vs 'asymmetric' through the stores (benchmarks/bench_cosine_stores.py)",
        "",
        "One run; HashingBaseline, default oversample, recall@10 against exact float cosine (all "
        "queries); latency: p50 of one query per call, the two scorings interleaved (3 rounds); "
        "bytes per vector = codes + float16 factors as each store keeps them.",
        "",
        "| set | bits | store | bytes/vector | recall asym | recall cosine | p50 asym ms | "
        "p50 cosine ms | ratio cos/asym | same ids as memory (asym / cos) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = (
            f"{r['same_as_memory_asymmetric']:.3f} / {r['same_as_memory_cosine']:.3f}"
            if "same_as_memory_cosine" in r
            else "(reference)"
        )
        lines.append(
            f"| {r['set']} | {r['bits']} | {r['store']} | {r['bytes_per_vector']} | "
            f"{r['recall_asymmetric']:.3f} | {r['recall_cosine']:.3f} | {r['p50_asym_ms']:.2f} | "
            f"{r['p50_cos_ms']:.2f} | {r['ratio']:.2f} | {same} |"
        )
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

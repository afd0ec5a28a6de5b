"""Milvus partition key vs a dynamic payload field, for filtered searches by class label.

Per data set: 64-bit Hashing-Baseline codes of the database, written twice into a Milvus server:
collection K with the label as partition key (``partition_key=label``, int64, 16 partitions) and
collection P with the label as an ordinary payload field. Then each query searched with the
filter ``{"label": its own label}`` (the Hamming top-100), one query per call, K and P
interleaved, median ms per query over ``--rounds``; the hits of K and P must have equal distances.

    python adapters/milvus/benchmarks/bench_partitions.py [--uri http://host:19530] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from hashplug_milvus import MilvusStore

from hashplug import HashingBaseline
from hashplug.stores.base import CollectionMeta

SETS = {
    "fmnist_effnet": Path("/work/shared/data/fmnist_effnet.npz"),
    "fortunes_minilm": Path.home() / ".cache/hashplug/fortunes_minilm.npz",
}


def run(uri: str, name: str, path: Path, n_q: int, rounds: int) -> dict:
    """Ingest one set both ways and time the filtered searches; return the row."""
    with np.load(path) as d:
        x, y = d["db_x"].astype(np.float32), d["db_y"].astype(np.int64)
        qx, qy = d["q_x"][:n_q].astype(np.float32), d["q_y"][:n_q].astype(np.int64)
    h = HashingBaseline(64).fit(x)
    meta = CollectionMeta(n_bits=64, fingerprint=h.fingerprint, hasher_spec=h.get_spec())
    codes, qcodes = h.encode(x), h.encode(qx)
    ids = np.arange(len(x), dtype=np.int64)
    pl = [{"label": int(v)} for v in y]
    tag = f"b{int(time.time())}_{name}"
    stores = {
        "partition_key": MilvusStore(
            uri, tag + "_k", partition_key="label", partition_key_type="int64", num_partitions=16
        ),
        "payload_field": MilvusStore(uri, tag + "_p"),
    }
    out: dict = {"data": name, "n": len(x), "queries": n_q, "labels": int(np.unique(y).size)}
    for key, s in stores.items():
        s.open(meta)
        t = time.perf_counter()
        s.upsert(ids, codes, pl)
        out[f"{key}_ingest_s"] = round(time.perf_counter() - t, 2)
        s.flush()
    times: dict[str, list[float]] = {k: [] for k in stores}
    for _ in range(rounds):
        for key, s in stores.items():
            t = time.perf_counter()
            for i in range(n_q):
                s.search(qcodes[i : i + 1], 100, filter={"label": int(qy[i])})
            times[key].append((time.perf_counter() - t) / n_q * 1e3)
    for i in range(n_q):
        a = stores["partition_key"].search(qcodes[i : i + 1], 100, filter={"label": int(qy[i])})
        b = stores["payload_field"].search(qcodes[i : i + 1], 100, filter={"label": int(qy[i])})
        assert np.array_equal(a.distances, b.distances), "partition key changed the hits"
    for key in stores:
        out[f"{key}_ms_per_query"] = round(statistics.median(times[key]), 2)
    for s in stores.values():
        s.drop()
        s.close()
    return out


def main() -> None:
    """Run the comparison on each set and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--uri", default=None, help="a Milvus server (default: start one here)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    srv = None
    uri = args.uri
    if uri is None:
        from hashplug_milvus.server import EmbeddedMilvus

        srv = EmbeddedMilvus(tempfile.mkdtemp(prefix="bench-partitions-")).start()
        uri = srv.uri
    try:
        for name, path in SETS.items():
            if path.is_file():
                print(json.dumps(run(uri, name, path, args.queries, args.rounds)), flush=True)
            else:
                print(json.dumps({"data": name, "skipped": f"{path} not found"}))
    finally:
        if srv is not None:
            srv.stop()


if __name__ == "__main__":
    main()

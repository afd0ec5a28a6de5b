"""attach() on collections written by each engine's own client: rate, kill + resume, recall, latency.

    .venv/bin/python benchmarks/bench_attach.py [--rows 200000] [--engines lancedb qdrant-edge milvus-lite]

Data: the real Fashion-MNIST EfficientNet embeddings of ../shared/data/fmnist_effnet.npz (20k x 1280),
tiled to ``--rows`` with Gaussian noise (``--noise`` x the embedding's std per copy), ids spaced by 3;
queries: the set's held-out test embeddings. Per engine, in one run: the user's collection is written
by the engine's own client; ``hashplug attach`` runs in a child process that is killed (SIGKILL)
once it reports ``--kill-at`` of the rows coded; attach is run again (resume) and must leave every
row coded exactly once; then recall@10 of the
three-stage search against the engine's own exact float search, p50/p99 of one query each, and RAM
bytes per vector of the codes next to the floats.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
NPZ = HERE.parent.parent / "shared" / "data" / "fmnist_effnet.npz"


def make_data(rows: int, noise: float, n_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.load(os.environ.get("HASHPLUG_EMBEDDINGS", NPZ))
    x = d["db_x"].astype(np.float32)
    rng = np.random.default_rng(0)
    sd = float(x.std())
    reps = -(-rows // len(x))
    parts = [x] + [
        x + rng.standard_normal(x.shape).astype(np.float32) * noise * sd for _ in range(reps - 1)
    ]
    big = np.concatenate(parts)[:rows]
    return np.arange(rows, dtype=np.int64) * 3, big, d["q_x"][:n_q].astype(np.float32)


# -- the users' own writers ----------------------------------------------------------------------
def write_lancedb(root: Path, ids: np.ndarray, x: np.ndarray) -> str:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(root)
    tbl = None
    for s in range(0, len(ids), 50_000):
        part = pa.table(
            {
                "id": pa.array(ids[s : s + 50_000]),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(x[s : s + 50_000].reshape(-1)), x.shape[1]
                ),
            }
        )
        if tbl is None:
            tbl = db.create_table("docs", part)
        else:
            tbl.add(part)
    return f"lancedb://{root}/docs?metric=cosine"


def write_qdrant_edge(root: Path, ids: np.ndarray, x: np.ndarray) -> str:
    import qdrant_edge as qe

    path = root / "shard"
    path.mkdir()
    cfg = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=x.shape[1], distance=qe.Distance.Cosine))
    shard = qe.EdgeShard.create(str(path), cfg)
    for s in range(0, len(ids), 2_000):
        pts = [
            qe.Point(int(i), v, None)
            for i, v in zip(ids[s : s + 2_000].tolist(), x[s : s + 2_000].tolist(), strict=True)
        ]
        shard.update(qe.UpdateOperation.upsert_points(pts))
    shard.flush()
    shard.close()
    return f"qdrant-edge://{path}"


def _write_milvus(client_uri: str, ids: np.ndarray, x: np.ndarray) -> None:
    from pymilvus import DataType, MilvusClient

    c = MilvusClient(client_uri)
    schema = c.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=x.shape[1])
    ip = c.prepare_index_params()
    ip.add_index("vector", index_type="FLAT", metric_type="COSINE")
    c.create_collection("docs", schema=schema, index_params=ip)
    for s in range(0, len(ids), 5_000):
        rows = [
            {"id": int(i), "vector": v}
            for i, v in zip(ids[s : s + 5_000].tolist(), x[s : s + 5_000], strict=True)
        ]
        c.insert("docs", rows)
    c.close()


def write_milvus_lite(root: Path, ids: np.ndarray, x: np.ndarray) -> str:
    _write_milvus(str(root / "m.db"), ids, x)
    return f"milvus+lite://{root / 'm.db'}/docs"


_SERVERS: list[Any] = []


def write_milvus(root: Path, ids: np.ndarray, x: np.ndarray) -> str:
    """Write the set into a real Milvus standalone server with pymilvus; return its store URI.

    The server is started here and stopped at exit.
    """
    from hashplug_milvus.server import EmbeddedMilvus

    srv = EmbeddedMilvus(root / "server").start()
    _SERVERS.append(srv)
    _write_milvus(srv.uri, ids, x)
    return srv.store_uri("docs")


WRITERS = {
    "lancedb": write_lancedb,
    "qdrant-edge": write_qdrant_edge,
    "milvus-lite": write_milvus_lite,
    "milvus": write_milvus,
}


def _child_attach(uri: str, progress_file: str) -> None:
    import hashplug

    idx = hashplug.attach(uri, progress=False, batch_size=5_000, sync=False)
    idx.sync(
        progress=False,
        batch_size=5_000,
        on_batch=lambda r: Path(progress_file).write_text(str(r.coded)),
    )


def _coded(progress_file: Path) -> int:
    try:
        return int(progress_file.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def bench_engine(
    name: str,
    ids: np.ndarray,
    x: np.ndarray,
    q: np.ndarray,
    kill_at: float,
    search_options: dict[str, int] | None = None,
) -> dict[str, Any]:
    import hashplug

    root = Path(tempfile.mkdtemp(prefix=f"attach-{name}-"))
    try:
        t = time.perf_counter()
        uri = WRITERS[name](root, ids, x)
        write_s = time.perf_counter() - t
        # 1. attach in a child process, killed part way
        ctx = mp.get_context("spawn")
        progress_file = root / "coded.txt"
        p = ctx.Process(target=_child_attach, args=(uri, str(progress_file)))
        p.start()
        t = time.perf_counter()
        while (
            p.is_alive()
            and _coded(progress_file) < kill_at * len(ids)
            and time.perf_counter() - t < 600
        ):
            time.sleep(0.05)
        coded_at_kill = _coded(progress_file)
        killed = p.is_alive()
        if killed:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        # 2. resume here
        t = time.perf_counter()
        idx = hashplug.attach(uri, progress=True, batch_size=5_000)
        resume_s = time.perf_counter() - t
        rep = idx.last_sync
        stored = np.concatenate(list(idx.store.iter_ids(100_000)))
        exact_once = stored.size == len(ids) and np.array_equal(np.sort(stored), ids)
        # 3. a clean full pass for the rate (every row read, hashed, looked up; nothing to write)
        t = time.perf_counter()
        again = idx.sync(progress=False, batch_size=5_000)
        sync_s = time.perf_counter() - t
        # 4. recall and latency against the engine's own exact float search
        ver = idx.verify(queries=q, progress=True, **(search_options or {}))
        out = {
            "engine": name,
            "rows": len(ids),
            "write_s": write_s,
            "killed_child": killed,
            "child_reported_coded": coded_at_kill,
            "coded_before_kill": int(rep.unchanged),
            "resume_coded": int(rep.coded),
            "resume_s": resume_s,
            "resume_rows_per_s": rep.rate,
            "exactly_once": bool(exact_once),
            "full_sync_rows_per_s": again.scanned / sync_s,
            **{f"verify_{k}": v for k, v in ver.items()},
        }
        idx.close()
        return out
    finally:
        while _SERVERS:
            _SERVERS.pop().stop(timeout=5)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument(
        "--noise", type=float, default=0.5, help="noise std of each copy / embedding std"
    )
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="fraction of rows coded when the first attach is killed",
    )
    ap.add_argument("--engines", nargs="+", default=list(WRITERS))
    ap.add_argument(
        "--candidates", type=int, help="search's Hamming candidates (default: attach's)"
    )
    ap.add_argument("--shortlist", type=int, help="search's shortlist (default: attach's)")
    ap.add_argument("--out", default="reports/bench_attach.json")
    args = ap.parse_args()
    ids, x, q = make_data(args.rows, args.noise, args.queries)
    print(f"{len(ids)} x {x.shape[1]} vectors (noise {args.noise}), {len(q)} held-out queries")
    results = []
    for name in args.engines:
        if name not in WRITERS:
            print(f"{name}: no writer here; skipped")
            continue
        opts = {k: v for k in ("candidates", "shortlist") if (v := getattr(args, k))}
        r = bench_engine(name, ids, x, q, args.kill_at, opts)
        r["search_options"] = opts
        results.append(r)
        print(json.dumps(r, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(
        f"\n{'engine':<13}{'resume rows/s':>14}{'sync rows/s':>12}{'once':>6}{'recall@10':>10}"
        f"{'p50 ms':>9}{'float p50':>10}{'ratio':>7}{'B codes':>8}{'B floats':>9}"
    )
    for r in results:
        print(
            f"{r['engine']:<13}{r['resume_rows_per_s']:>14,.0f}{r['full_sync_rows_per_s']:>12,.0f}"
            f"{'yes' if r['exactly_once'] else 'NO':>6}{r['verify_recall_at_k']:>10.3f}"
            f"{r['verify_hashplug_ms']['p50']:>9.1f}{r['verify_engine_float_ms']['p50']:>10.1f}"
            f"{r['verify_p50_ratio']:>7.2f}{r['verify_ram_bytes_per_vector']['codes']:>8}"
            f"{r['verify_ram_bytes_per_vector']['floats']:>9}"
        )


if __name__ == "__main__":
    main()

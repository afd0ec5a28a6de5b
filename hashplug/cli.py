"""The ``hashplug`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]


def _topk_rows(dist: np.ndarray, k: int) -> np.ndarray:
    k = min(k, dist.shape[1])
    idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
    order = np.lexsort((idx, np.take_along_axis(dist, idx, 1)), axis=1)
    return np.take_along_axis(idx, order, 1)


def cmd_demo(args: argparse.Namespace) -> int:
    """Fit Hashing-Baseline on real embeddings and print mAP@k (float, symmetric, asymmetric)."""
    from .bench.datasets import default_embeddings_path, load_embeddings
    from .bench.metrics import map_at_k
    from .hashers import HashingBaseline

    path = args.embeddings or default_embeddings_path()
    ds = load_embeddings(path)
    print(
        f"embeddings: {path} ({ds.db_x.shape[0]} db, {ds.q_x.shape[0]} queries, d={ds.db_x.shape[1]})"
    )
    xn = ds.db_x / np.linalg.norm(ds.db_x, axis=1, keepdims=True)
    qn = ds.q_x / np.linalg.norm(ds.q_x, axis=1, keepdims=True)
    k = args.k
    print(f"\nmAP@{k} x100 (HashingBaseline, seed {args.seed})")
    print(f"{'method':<28}" + "".join(f"{b:>9} bits" for b in args.bits))
    cos = map_at_k(_topk_rows(-(qn @ xn.T), k), ds.db_y, ds.q_y)
    print(f"{'float cosine (2 KB/vector)':<28}" + "".join(f"{cos:>14.2f}" for _ in args.bits))
    rows: dict[str, list[float]] = {"binary symmetric": [], "binary asymmetric": []}
    t0 = time.perf_counter()
    for nb in args.bits:
        h = HashingBaseline(nb, seed=args.seed).fit(ds.train_x)
        bits = np.unpackbits(h.encode(ds.db_x), axis=1).astype(np.float32)
        p = h.query(ds.q_x)
        for name, w in (
            ("binary symmetric", (p > 0.5).astype(np.float32)),
            ("binary asymmetric", p),
        ):
            dist = w.sum(1, keepdims=True) + (1 - 2 * w) @ bits.T
            rows[name].append(map_at_k(_topk_rows(dist, k), ds.db_y, ds.q_y))
    for name, vals in rows.items():
        print(f"{name:<28}" + "".join(f"{v:>14.2f}" for v in vals))
    print(
        f"\n({time.perf_counter() - t0:.1f} s for fit + encode + search at {len(args.bits)} lengths)"
    )
    return 0


def _bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return the run_bench settings that ``bench`` and ``run`` share."""
    return {
        "hashers": args.hashers,
        "bits": args.bits,
        "k": args.k,
        "seeds": args.seeds,
        "backends": args.backends,
        "oversamples": args.oversample,
    }


def cmd_bench(args: argparse.Namespace) -> int:
    """Write the paper's table and the per-backend figures as Markdown, JSON and PNG."""
    from .bench.datasets import default_embeddings_path
    from .bench.run import run_bench

    path = args.embeddings or default_embeddings_path()
    results, paths = run_bench(
        path,
        args.out,
        other_train=args.other_train,
        ram_price=args.ram_price,
        scoring=args.scoring,
        **_bench_settings(args),
    )
    print(paths["markdown"].read_text())
    print("report written:", ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the main job: real encoder on real labelled data -> fit -> ingest -> search -> report."""
    from .bench.run import run_bench
    from .bench.sources import embed_split, encoder_info, load_source
    from .encoders import load_encoder

    t0 = time.perf_counter()
    split = load_source(args.dataset, args.root).subsample(args.n_db, args.n_query, seed=0)
    print(
        f"[1/3] data: {split.name} ({len(split.db_items)} database, {len(split.q_items)} query "
        f"{split.modality} items, {len(split.classes)} classes)"
    )
    enc = load_encoder(args.encoder)
    print(f"[2/3] encoding with {enc.name} ...")
    ds, cache, timing = embed_split(split, enc, cache_dir=args.cache, batch_size=args.batch_size)
    info = encoder_info(enc, ds, cache, timing)
    if info["cached"]:
        print(f"      read from cache {cache}")
    else:
        print(
            f"      {info['n_items']} items in {info['encode_s']:.1f} s "
            f"({info['items_per_s']:.1f}/s)"
        )
    print(f"[3/3] fit, ingest into {', '.join(args.backends)}, search with rerank, report ...")
    results, paths = run_bench(cache, args.out, extra={"encoder": info}, **_bench_settings(args))
    if not args.no_compare:
        _compact_compare(cache, args.out, paths)
    print(paths["markdown"].read_text())
    print(f"done in {time.perf_counter() - t0:.0f} s; report: {paths['markdown']}")
    print("also:", ", ".join(str(p) for k, p in paths.items() if k != "markdown"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare hashplug with each engine's own quantization.

    Writes the frontier table, plots and a recommendation.
    """
    from .bench.compare import CompareConfig, run_compare
    from .bench.compare_report import write_compare_report
    from .bench.datasets import default_embeddings_path

    engines = list(args.engines)
    if args.milvus_server and "milvus-server" not in engines:
        engines.append("milvus-server")
    cfg = CompareConfig(
        k=args.k,
        bits=args.bits,
        hashers=args.hashers,
        engines=engines,
        methods=args.methods,
        queries=args.queries,
        oversample=args.oversample,
        candidates=args.candidates,
        shortlist=args.shortlist,
        ram_price=args.ram_price,
        disk_price=args.disk_price,
        target_recall=args.target_recall,
        progress=not args.quiet,
    )
    cfg.validate()
    res = run_compare(args.embeddings or default_embeddings_path(), cfg)
    paths = write_compare_report(res, args.out)
    print(paths["markdown"].read_text())
    print("report written:", ", ".join(str(p) for p in paths.values()))
    rec = res["recommendation"]
    if not rec["reached"]:
        raise ValueError(rec["text"])
    return 0


#: What ``hashplug run`` compares: LanceDB's own indexes against hashplug at 64 bits.
RUN_COMPARE_METHODS = [
    "exact:float",
    "lancedb:flat",
    "lancedb:ivf_pq",
    "lancedb:ivf_sq",
    "lancedb:ivf_rq",
    "lancedb:ivf_rq+refine",
    "hashplug:*-64",
    "hashplug:*-64+originals",
]


def _compact_compare(
    embeddings: Any,
    out: str,
    paths: dict[str, Any],
    methods: Sequence[str] = tuple(RUN_COMPARE_METHODS),
    queries: int = 200,
) -> None:
    """LanceDB's native options next to hashplug (64 bits), appended to the run's report."""
    from pathlib import Path

    from .bench.compare import CompareConfig, run_compare
    from .bench.compare_report import compact_markdown, write_compare_report

    print("[+] comparing with LanceDB's own indexes (hashplug compare, compact) ...")
    cfg = CompareConfig(
        bits=(64,),
        engines=("lancedb",),
        hashplug_engines=("memory",),
        methods=list(methods),
        queries=queries,
        progress=False,
    )
    res = run_compare(embeddings, cfg)
    cpaths = write_compare_report(res, Path(out) / "compare")
    md = paths["markdown"]
    md.write_text(md.read_text() + "\n" + compact_markdown(res, Path("compare")))
    paths.update({f"compare_{k}": v for k, v in cpaths.items()})


def _load_array(path: str, *keys: str) -> np.ndarray:
    """Load an .npy array, or the first of ``keys`` (then "x", "embeddings") found in an .npz.

    Memory-mapped where the file allows (see :func:`hashplug._npfiles.open_array`).
    """
    from ._npfiles import open_array

    return open_array(path, *keys)


def _shard_dir(path: str) -> bool:
    """Return True for a local directory or a URI: a set of shards.

    A URI such as ``s3://bucket/prefix`` or ``file:///dir``.
    """
    return os.path.isdir(path) or "://" in path


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a hasher on embeddings and save it (the library's defaults, not the paper's)."""
    from .bench.experiments import LIBRARY_HASHERS as HASHERS

    if _shard_dir(args.embeddings):  # a directory of shards: fit on a streamed sample
        from . import distributed

        h = distributed.fit(
            args.embeddings, method=args.hasher, bits=args.bits, sample=args.sample,
            seed=args.seed, engine=args.engine, workers=args.workers, address=args.address,
            vector_column=args.vector_column, id_column=args.id_column, out=args.out,
        )  # fmt: skip
        print(
            f"{h!r} fitted on a sample of {args.embeddings}; fingerprint {h.fingerprint}; saved {args.out}"
        )
        return 0
    x = _load_array(args.embeddings, "train_x", "db_x")
    if args.hasher not in HASHERS:
        raise ValueError(f"unknown hasher {args.hasher!r}; choose from {', '.join(HASHERS)}")
    h = HASHERS[args.hasher](args.bits, args.seed)
    if hasattr(h, "epochs"):  # HashCoder
        h.epochs = args.epochs
    if getattr(h, "views", None) == "labels":  # supervised: labels beside the embeddings
        if not args.labels and not args.embeddings.endswith(".npz"):
            raise ValueError(f"{args.hasher} needs labels: pass --labels FILE.npy")
        if args.labels:
            y = np.load(args.labels)
        else:
            with np.load(args.embeddings) as d:
                key = "train_y" if "train_x" in d.files else "db_y"
                if key not in d.files:
                    raise ValueError(f"{args.hasher} needs labels: {args.embeddings} has no {key}")
                y = d[key]
        h.fit(x, y)  # type: ignore[call-arg]
    else:
        h.fit(x)
    h.save(args.out)
    print(
        f"{h!r} fitted on {x.shape[0]} x {x.shape[1]}; fingerprint {h.fingerprint}; saved {args.out}"
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Hash embeddings with a saved hasher and upsert them into a store."""
    import json

    from .hashers import load_hasher
    from .index import HashIndex

    if args.engine == "ray" or _shard_dir(args.embeddings):
        if args.scoring == "cosine":
            raise ValueError(
                "--scoring cosine is not available for a directory of shards (--engine ray) "
                "yet: ingest one .npy/.npz file into memory:// or file://"
            )
        return _ingest_shards(args)
    h = load_hasher(args.hasher)
    store = _store_for_scoring(args.store, h, args.scoring)
    x = _load_array(args.embeddings, "db_x")
    ids = np.load(args.ids) if args.ids else np.arange(args.id_start, args.id_start + len(x))
    payloads = None
    if args.payloads:
        with open(args.payloads) as f:
            payloads = [json.loads(line) if line.strip() != "null" else None for line in f]
    t = time.perf_counter()
    with HashIndex(store, h) as index:
        n = index.add(x, ids, payloads, batch_size=args.batch_size, scoring=args.scoring)
        index.store.finish_writes()  # index build / compaction / old versions (LanceDB)
        total = len(index)
    dt = time.perf_counter() - t
    print(f"ingested {n} vectors into {args.store} in {dt:.1f} s ({n / dt:,.0f}/s); {total} stored")
    return 0


def _ingest_shards(args: argparse.Namespace) -> int:
    """``ingest`` of a directory of Parquet / .npy shards, resumable, in-process or on Ray."""
    import json
    import warnings

    from . import distributed

    if not _shard_dir(args.embeddings):
        raise ValueError(
            f"--engine ray reads a directory of .parquet or .npy shards; {args.embeddings} is not one"
        )
    if args.ids or args.payloads:
        raise ValueError(
            "--ids and --payloads apply to one file; shards carry their ids (--id-column)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", distributed.DuplicateIdsWarning)
        r = distributed.ingest(
            args.embeddings, args.hasher, args.store, engine=args.engine, workers=args.workers,
            address=args.address, vector_column=args.vector_column, id_column=args.id_column,
            item_column=args.item_column, encoder=args.encoder, id_start=args.id_start,
            batch_size=args.batch_size, writers=args.writers, state_dir=args.state_dir,
            restart=args.restart,
        )  # fmt: skip
    for w in caught:
        print(f"hashplug: warning: {w.message}", file=sys.stderr)
    print(
        f"ingested {r.written} vectors from {r.shards_written} shards ({r.shards_skipped} already "
        f"done) into {args.store} in {r.seconds:.1f} s ({r.vectors_per_s:,.0f}/s, {r.engine}, "
        f"{r.workers} workers, writers: {r.writers}); {r.stored} stored"
    )
    if args.report:
        os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
        with open(args.report, "w") as f:
            json.dump(r.to_dict(), f, indent=2)
    return 0


def _store_for_scoring(uri: str, hasher: Any, scoring: str) -> Any:
    """Open the store at ``uri``, checking first what ``scoring="cosine"`` needs.

    Before anything is created: that the store keeps the per-vector factors and that the hasher
    computes them.
    """
    from .stores.registry import open_store

    store = open_store(uri)
    if scoring == "cosine" and not store.supports_corrections:
        store.close()
        raise ValueError(
            f"--scoring cosine needs a store that keeps the per-vector cosine factors; {uri} "
            f"({type(store).__name__}) does not"
        )
    if scoring == "cosine" and not hasattr(hasher, "correction"):
        store.close()
        raise ValueError(
            f"--scoring cosine needs a linear hasher (hashing-baseline, itq, lsh); "
            f"{type(hasher).__name__} has no cosine factors"
        )
    return store


def cmd_search(args: argparse.Namespace) -> int:
    """Search a store with query embeddings; prints ids and distances (or JSON)."""
    import json

    from .hashers import load_hasher
    from .index import HashIndex

    h = load_hasher(args.hasher)
    q = _load_array(args.queries, "q_x")
    if q.ndim == 1:
        q = q[None, :]
    q = q[: args.limit_queries] if args.limit_queries else q
    flt = json.loads(args.filter) if args.filter else None
    if args.no_rerank and args.scoring == "cosine":
        raise ValueError("--scoring cosine reranks the candidates; it cannot go with --no-rerank")
    store = _store_for_scoring(args.store, h, args.scoring)
    if store.read_meta() is None:  # a read command never creates a collection
        store.close()
        raise ValueError(
            f"no hashplug collection at {args.store} (check the path; hashplug ingest writes one)"
        )
    with HashIndex(store, h) as index:
        res = index.search(
            q,
            k=args.k,
            oversample=args.oversample,
            rerank=not args.no_rerank,
            filter=flt,
            with_payloads=args.payloads,
            scoring=args.scoring,
        )
    if args.json:
        pls: list[Any] = list(res.payloads) if res.payloads else [None] * len(res.ids)
        rows = [
            {
                "ids": i.tolist(),
                "distances": d.tolist(),
                **({"payloads": p} if res.payloads else {}),
            }
            for i, d, p in zip(res.ids, res.distances, pls, strict=True)
        ]
        print(json.dumps(rows))
    else:
        for r, (i, d) in enumerate(zip(res.ids, res.distances, strict=True)):
            pairs = "  ".join(f"{a}:{b:.3f}" for a, b in zip(i, d, strict=True) if a >= 0)
            print(f"query {r}: {pairs}")
    return 0


_BITS = "code lengths in bits (default: 16 32 64)"
_SEED = "random seed (default 0)"
_OVERSAMPLES = "Hamming top-(O x k) before the rerank, one run per O (default: 1 2 5 10 20)"
_OUT = "output folder"
_HASHER_FILE = "a hasher file written by `hashplug fit` (.safetensors)"
#: the nearest-neighbour scorings of HashIndex.search (README "Nearest-neighbour scoring")
_SCORINGS = ("asymmetric", "cosine")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="hashplug",
        description="Binary hashing for vector databases: fit hashers, write codes into LanceDB, "
        "Milvus or Qdrant, search them, attach to existing collections, and compare.",
    )
    ap.add_argument("--version", action="version", version=f"hashplug {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="fit Hashing-Baseline on an embedding set and print mAP")
    d.add_argument(
        "--embeddings", help="an .npz embedding set (default: ../shared/data/fmnist_effnet.npz)"
    )
    d.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64], help=_BITS)
    d.add_argument("--k", type=int, default=1000, help="mAP@k (default 1000)")
    d.add_argument("--seed", type=int, default=0, help=_SEED)
    d.set_defaults(func=cmd_demo)

    from .bench.experiments import DEFAULT_HASHERS, HASHERS

    b = sub.add_parser("bench", help="paper-style table + per-backend figures -> report")
    b.add_argument(
        "--embeddings", help="an .npz embedding set (default: ../shared/data/fmnist_effnet.npz)"
    )
    b.add_argument(
        "--hashers", nargs="+", default=list(DEFAULT_HASHERS), choices=list(HASHERS),
        help=f"hashers to measure (default: {' '.join(DEFAULT_HASHERS)})",
    )  # fmt: skip
    b.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64], help=_BITS)
    b.add_argument(
        "--k", type=int, default=1000, help="mAP@k (paper: 1000 CIFAR-10, 5000 multi-label)"
    )
    b.add_argument("--seeds", type=int, default=10, help="seeds per setting (default 10)")
    b.add_argument("--backends", nargs="*", default=None, help="default: every installed backend")
    b.add_argument(
        "--oversample", type=int, nargs="+", default=[1, 2, 5, 10, 20], help=_OVERSAMPLES
    )
    b.add_argument(
        "--other-train", help="an .npz whose train_x/db_x fits the 'PCA on another set' ablation"
    )
    b.add_argument("--ram-price", type=float, default=None, help="USD per GiB-month (default 5.0)")
    b.add_argument(
        "--scoring",
        default="asymmetric",
        choices=["asymmetric", "bce", "sym-bce"],
        help="query-side scorer of the non-symmetric binary column (see hashplug.scoring)",
    )
    b.add_argument("--out", default="reports/bench", help=_OUT + " (default reports/bench)")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser(
        "run",
        help="main job: encode real labelled data, fit, ingest, search with rerank, report",
    )
    r.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, cifar10, esc50, ...")
    r.add_argument("--root", help="dataset folder (fashion-mnist: Debian's by default)")
    r.add_argument("--encoder", default="effnet:efficientnet-lite0", help="an encoder spec")
    r.add_argument("--n-db", type=int, default=10_000, help="database items (random subset)")
    r.add_argument("--n-query", type=int, default=1_000, help="queries (default 1000)")
    r.add_argument("--batch-size", type=int, default=64, help="encoder batch size (default 64)")
    r.add_argument("--cache", help="embedding cache folder (default ~/.cache/hashplug)")
    r.add_argument(
        "--hashers",
        nargs="+",
        default=["hashing-baseline", "itq", "lsh", "hashcoder-neighbors"],
        choices=list(HASHERS),
        help="default: the training-free ones and the learned HashCoder (unsupervised)",
    )
    r.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64], help=_BITS)
    r.add_argument("--k", type=int, default=1000, help="mAP@k (default 1000)")
    r.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
    r.add_argument(
        "--backends", nargs="+", default=["local", "lancedb"],
        help="stores searched (default: local lancedb; also milvus-lite, qdrant-edge, ...)",
    )  # fmt: skip
    r.add_argument(
        "--oversample", type=int, nargs="+", default=[1, 2, 5, 10, 20], help=_OVERSAMPLES
    )
    r.add_argument(
        "--no-compare", action="store_true", help="skip the compact LanceDB-vs-hashplug comparison"
    )
    r.add_argument("--out", default="reports/main", help=_OUT + " (default reports/main)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser(
        "compare",
        help="hashplug vs each database's own quantization: frontier, plots, recommendation",
    )
    c.add_argument(
        "--embeddings", help="an .npz set: db_x, q_x (+ db_y, q_y labels, train_x optional)"
    )
    c.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names or globs (e.g. 'lancedb:*' 'hashplug:itq-*'); default: all available",
    )
    c.add_argument(
        "--engines", nargs="+", default=["lancedb", "qdrant-edge", "milvus-lite"],
        help="engines whose native options are measured (default: lancedb qdrant-edge milvus-lite)",
    )  # fmt: skip
    c.add_argument(
        "--milvus-server",
        action="store_true",
        help="also the real Milvus 2.3.5 server (slow start)",
    )
    c.add_argument(
        "--hashers", nargs="+", default=["hb", "itq", "hashcoder"],
        help="hashplug hashers: hb (Hashing-Baseline), itq, hashcoder (default: all three)",
    )  # fmt: skip
    c.add_argument(
        "--bits", type=int, nargs="+", default=[32, 64, 128, 256],
        help="code lengths, where bits <= dimension (default: 32 64 128 256)",
    )  # fmt: skip
    c.add_argument("--k", type=int, default=10, help="recall@k against exact float search")
    c.add_argument("--queries", type=int, default=1000, help="queries used (the first N)")
    c.add_argument("--oversample", type=int, default=10, help="hashplug: Hamming top-(O x k)")
    c.add_argument("--candidates", type=int, default=1000, help="+originals: Hamming top-C")
    c.add_argument("--shortlist", type=int, default=100, help="+originals: rescored with floats")
    c.add_argument("--ram-price", type=float, default=5.0, help="USD per GiB-month of RAM")
    c.add_argument("--disk-price", type=float, default=0.10, help="USD per GiB-month of disk")
    c.add_argument(
        "--target-recall", type=float, default=0.95,
        help="the recall@k the recommendation must reach (default 0.95)",
    )  # fmt: skip
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--out", default="reports/compare", help=_OUT + " (default reports/compare)")
    c.set_defaults(func=cmd_compare)

    f = sub.add_parser(
        "fit", help="fit a hasher on embeddings (.npy, or .npz train_x/db_x) and save it"
    )
    f.add_argument(
        "--embeddings",
        required=True,
        help=".npy, .npz, or a directory of shards (a path or a URI: s3://bucket/prefix ...)",
    )
    f.add_argument(
        "--hasher", default="hashing-baseline", choices=list(HASHERS),
        help="which hasher (default hashing-baseline)",
    )  # fmt: skip
    f.add_argument("--bits", type=int, default=64, help="code length in bits (default 64)")
    f.add_argument("--seed", type=int, default=0, help=_SEED)
    f.add_argument("--out", required=True, help="the hasher file to write (.safetensors)")
    f.add_argument(
        "--labels", help=".npy labels for supervised hashers (default: train_y/db_y of the .npz)"
    )
    f.add_argument(
        "--sample", type=int, default=100_000, help="rows sampled from a shard directory"
    )
    f.add_argument(
        "--epochs",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="HashCoder epochs: 'auto' (>= 500 optimiser steps, the default) or a number",
    )
    _add_shard_args(f)
    f.set_defaults(func=cmd_fit)

    i = sub.add_parser("ingest", help="hash embeddings and upsert them into a store")
    i.add_argument("--hasher", required=True, help=_HASHER_FILE)
    i.add_argument("--store", required=True, help="a store URI, e.g. lancedb://./data/docs")
    i.add_argument(
        "--embeddings", required=True,
        help=".npy, .npz with db_x, or a directory of .parquet / .npy shards (path or URI)",
    )  # fmt: skip
    i.add_argument("--ids", help=".npy of int64 ids (default: consecutive from --id-start)")
    i.add_argument("--id-start", type=int, default=0, help="first consecutive id (default 0)")
    i.add_argument("--payloads", help="JSON lines, one object (or null) per vector")
    i.add_argument("--batch-size", type=int, default=50_000, help="rows per hashed/written batch")
    i.add_argument(
        "--scoring", default="asymmetric", choices=list(_SCORINGS),
        help="cosine: require the per-vector factors that `search --scoring cosine` needs "
        "(every built-in store keeps them whenever they fit; normalise the rows); default "
        "asymmetric",
    )  # fmt: skip
    _add_shard_args(i)
    i.add_argument("--item-column", help="Parquet column of raw items, encoded with --encoder")
    i.add_argument("--encoder", help="encoder spec for --item-column (GPU actors when present)")
    i.add_argument(
        "--writers", default="auto", choices=["auto", "workers", "driver"],
        help="who writes: the workers (engines taking parallel writes) or this process",
    )  # fmt: skip
    i.add_argument(
        "--state-dir", help="where per-shard done-markers live (default: beside the store)"
    )
    i.add_argument("--restart", action="store_true", help="ignore done-markers; write every shard")
    i.add_argument("--report", help="write the run's report as JSON here")
    i.set_defaults(func=cmd_ingest)

    s = sub.add_parser("search", help="search a store with query embeddings")
    s.add_argument("--hasher", required=True, help=_HASHER_FILE)
    s.add_argument("--store", required=True, help="the store URI the codes were ingested into")
    s.add_argument("--queries", required=True, help=".npy, or .npz with q_x")
    s.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    s.add_argument(
        "--oversample", type=int, default=None,
        help="Hamming top-(oversample x k) reranked by the asymmetric distance (default: "
        "max(10, sqrt(N)/5) for N codes)",
    )  # fmt: skip
    s.add_argument("--no-rerank", action="store_true", help="the store's Hamming order only")
    s.add_argument(
        "--scoring", default="asymmetric", choices=list(_SCORINGS),
        help="rerank by asymmetric distance (default; class-level mAP) or by estimated cosine "
        "(nearest neighbours); distances are then 1 - cosine",
    )  # fmt: skip
    s.add_argument("--filter", help='a JSON object of equalities, e.g. {"color": "red"}')
    s.add_argument("--payloads", action="store_true", help="print each hit's payload too")
    s.add_argument("--limit-queries", type=int, default=0, help="use the first N queries (0: all)")
    s.add_argument("--json", action="store_true", help="one JSON object per query on stdout")
    s.set_defaults(func=cmd_search)

    from .sources.cli import add_parsers as add_attach_parsers

    add_attach_parsers(sub)
    return ap


def _add_shard_args(p: argparse.ArgumentParser) -> None:
    """Options for a directory of shards (``hashplug.distributed``)."""
    p.add_argument(
        "--engine", default="local", choices=["local", "ray"],
        help="local: this process; ray: Ray Data actors (pip install 'hashplug[distributed]')",
    )  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors working in parallel")
    p.add_argument("--vector-column", default="vector", help="Parquet column of the vectors")
    p.add_argument("--id-column", default="id", help="Parquet column of the int ids")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hashplug`` command line with ``argv``; return the exit status."""
    from .stores.base import StoreError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, StoreError) as e:
        print(f"hashplug: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

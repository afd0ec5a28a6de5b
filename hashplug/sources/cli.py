"""``hashplug attach`` and ``hashplug sync``: the command-line face of :func:`hashplug.attach`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parsers"]


def _open(args: argparse.Namespace, *, sync: bool) -> Any:
    from .core import attach

    options: dict[str, Any] = {}
    if getattr(args, "metric", None):
        options["metric"] = args.metric
    return attach(
        args.uri,
        vector_field=args.vector_field,
        id_field=args.id_field,
        hasher=args.hasher,
        bits=getattr(args, "bits", 64),
        method=getattr(args, "method", "hashing-baseline"),
        fit_sample=getattr(args, "fit_sample", 100_000),
        codes_uri=args.codes_uri,
        state_dir=args.state_dir,
        batch_size=args.batch_size,
        sync=sync,
        **options,
    )


def _print_sync(idx: Any) -> None:
    rep = idx.last_sync
    print(idx.info.describe())
    print(
        f"codes: {idx.store.name} ({idx.hasher.n_bits} bits, hasher {idx.hasher.fingerprint}, file {idx.hasher_file})"
    )
    if rep is not None:
        print(
            f"synced {rep.scanned} rows in {rep.seconds:.1f} s ({rep.rate:,.0f} rows/s): "
            f"{rep.coded} coded, {rep.updated} recoded, {rep.unchanged} unchanged, "
            f"{rep.deleted} stale codes dropped, {rep.skipped} without a vector, {rep.invalid} NaN/inf"
        )


def cmd_attach(args: argparse.Namespace) -> int:
    """Attach to an existing collection (fit or load a hasher, code every row), optionally verify."""
    with _open(args, sync=not args.no_sync) as idx:
        _print_sync(idx)
        if args.verify or args.queries:
            queries = _load_queries(args.queries, args.verify) if args.queries else None
            rep = idx.verify(args.verify or 100, queries=queries, out=args.out)
            _print_verify(rep)
            if args.out:
                print(f"written: {args.out}")
    return 0


def _load_queries(path: str, n: int) -> Any:
    import numpy as np

    data = np.load(path)
    q = data["q_x"] if hasattr(data, "files") else data
    q = np.asarray(q, np.float32)
    if q.ndim != 2:
        raise ValueError(
            f"{path}: queries must be a 2-D array (or q_x of an .npz), got shape {q.shape}"
        )
    return q[:n] if n else q


def _print_verify(rep: dict[str, Any]) -> None:
    ram = rep["ram_bytes_per_vector"]
    print(
        f"\nverify on {rep['queries']} source vectors as queries, k={rep['k']}, {rep['rows']} rows"
    )
    print(f"{'':<26}{'recall@k':>10}{'p50 ms':>10}{'p99 ms':>10}{'RAM B/vector':>14}")
    e, h = rep["engine_float_ms"], rep["hashplug_ms"]
    print(
        f"{'engine float search':<26}{1.0:>10.3f}{e['p50']:>10.2f}{e['p99']:>10.2f}{ram['floats']:>14}"
    )
    print(
        f"{'hashplug three-stage':<26}{rep['recall_at_k']:>10.3f}{h['p50']:>10.2f}{h['p99']:>10.2f}"
        f"{ram['codes']:>14}"
    )


def cmd_sync(args: argparse.Namespace) -> int:
    """Code rows added since the last sync, recode changed rows, drop codes of deleted rows."""
    with _open(args, sync=True) as idx:
        _print_sync(idx)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "uri",
        help="the existing collection, e.g. lancedb://./data/docs, qdrant-edge://DIR, milvus+lite://f.db/coll",
    )
    p.add_argument("--vector-field", help="the float vector field (needed when there are several)")
    p.add_argument("--id-field", help="the primary key field (LanceDB: default 'id')")
    p.add_argument("--hasher", help="a hasher file (.safetensors) instead of fitting one")
    p.add_argument(
        "--codes-uri", help="where the codes go (default: a sibling named <source>__hashplug)"
    )
    p.add_argument(
        "--state-dir",
        help="folder for the hasher file (default: beside the collection, else ~/.cache/hashplug/attach)",
    )
    p.add_argument(
        "--metric", choices=["cosine", "dot", "l2"], help="override the discovered metric"
    )
    p.add_argument("--batch-size", type=int, default=10_000, help="rows read per batch")


def add_parsers(sub: Any) -> None:
    """Add ``attach`` and ``sync`` to the ``hashplug`` sub-command parser."""
    a = sub.add_parser("attach", help="add hashplug codes beside an existing float collection")
    _common(a)
    a.add_argument("--bits", type=int, default=64, help="code length when fitting (default 64)")
    a.add_argument(
        "--method",
        default="hashing-baseline",
        help="hasher to fit: hashing-baseline, itq, lsh, hashcoder-neighbors",
    )
    a.add_argument(
        "--fit-sample", type=int, default=100_000, help="vectors streamed to fit the hasher"
    )
    a.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="N",
        help="compare with the engine's float search on N source vectors",
    )
    a.add_argument(
        "--queries",
        help="verify with these query vectors (.npy, or .npz with q_x) instead of source vectors",
    )
    a.add_argument("--out", help="write the verification as JSON here")
    a.add_argument("--no-sync", action="store_true", help="open only; do not read the source")
    a.set_defaults(func=cmd_attach)
    s = sub.add_parser("sync", help="bring an attached collection's codes up to date")
    _common(s)
    s.set_defaults(func=cmd_sync)

"""The ``hashplug`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hashplug", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="fit Hashing-Baseline on an embedding set and print mAP")
    d.add_argument(
        "--embeddings", help="an .npz embedding set (default: ../shared/data/fmnist_effnet.npz)"
    )
    d.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    d.add_argument("--k", type=int, default=1000)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"hashplug: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

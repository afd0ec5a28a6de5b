"""Query calibration ("none" vs "per-bit") and HashCoder training length (5 epochs vs "auto").

Protocol of DESIGN.md: fit on db_x, database db_x, queries q_x, exhaustive asymmetric search;
mAP@1000 x100 against the labels (db_y, q_y) and recall@10 against exact float (cosine) top-10,
mean ± std over seeds; "sat" is the fraction of float32 query probabilities exactly 0 or 1.
HashCoder (views="neighbors"; one fit per seed, its queries scored both ways) prints fit seconds.

    .venv/bin/python benchmarks/bench_calibration.py SET.npz [SET.npz ...] [--seeds 3]
        [--bits 16 32 64] [--hashcoder | --hashcoder-only] [--train-rows N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hashplug import ITQ, LSH, HashCoder, HashingBaseline
from hashplug.bench.datasets import load_embeddings
from hashplug.bench.experiments import float_topk
from hashplug.bench.metrics import map_at_k, recall_at_k
from hashplug.hashers.base import Hasher
from hashplug.rerank import search_codes

LINEAR = {"hashing-baseline": HashingBaseline, "itq": ITQ, "lsh": LSH}


def _eval(h: Hasher, ds: Any, truth10: np.ndarray, k: int) -> dict[str, float]:
    p = h.query(ds.q_x)
    ids, _ = search_codes(p, h.encode(ds.db_x), k)
    return {
        "map": map_at_k(ids, ds.db_y, ds.q_y),  # x100 already
        "r10": recall_at_k(ids[:, :10], truth10, 10),
        "sat": float(((p == 0) | (p == 1)).mean()),
    }


def _cell(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {m: [r[m] for r in rows] for m in rows[0]}


def _fmt(cell: dict[str, list[float]]) -> str:
    m, r, s = (np.asarray(cell[x]) for x in ("map", "r10", "sat"))
    out = f"mAP {m.mean():5.2f}±{m.std():4.2f}  R@10 {r.mean():.3f}  sat {100 * s.mean():5.2f}%"
    if "fit_s" in cell:
        out += f"  fit {np.median(cell['fit_s']):5.1f}s"
    return out


def run_set(path: str, args: argparse.Namespace) -> dict[str, Any]:
    ds = load_embeddings(path)
    truth10 = float_topk(ds.q_x, ds.db_x, 10)
    norm = float(np.median(np.linalg.norm(ds.db_x, axis=1)))
    print(
        f"\n== {Path(path).name}: db {ds.db_x.shape}, queries {len(ds.q_x)}, median norm {norm:.1f}"
    )
    res: dict[str, Any] = {}
    for name, cls in LINEAR.items() if not args.hashcoder_only else ():
        for nb in args.bits:
            cells: dict[str, list[dict[str, float]]] = {"none": [], "per-bit": []}
            for s in range(args.seeds):
                h = cls(nb, seed=s, calibration="per-bit").fit(ds.train_x)
                cells["per-bit"].append(_eval(h, ds, truth10, args.k))
                h.query_scale_ = None  # the same codes (calibration is query-only): "none"
                cells["none"].append(_eval(h, ds, truth10, args.k))
            for cal in ("none", "per-bit"):
                res[f"{name}/{nb}/{cal}"] = c = _cell(cells[cal])
                print(f"{name:17s} {nb:3d} bits  {cal:8s} {_fmt(c)}", flush=True)
    if args.hashcoder or args.hashcoder_only:
        for nb in args.bits:
            for ep in (5, "auto"):
                rows = []
                for s in range(args.seeds):
                    t0 = time.perf_counter()
                    h = HashCoder(nb, seed=s, epochs=ep, device="cpu")
                    h.fit(ds.train_x[: args.train_rows], progress=False)
                    fit_s = time.perf_counter() - t0
                    rc = _eval(h, ds, truth10, args.k)
                    h.query_scale_ = None  # the same network, plain sigmoid queries ("none")
                    rows.append({**_eval(h, ds, truth10, args.k), "fit_s": fit_s})
                    rows[-1].update({f"{m}_cal": v for m, v in rc.items()})
                c = _cell(rows)
                res[f"hashcoder/{nb}/epochs={ep}"] = c
                cal = {m: c[f"{m}_cal"] for m in ("map", "r10", "sat")}
                print(f"hashcoder {nb:3d} bits epochs={ep!s:4s} none    {_fmt(c)}", flush=True)
                print(f"hashcoder {nb:3d} bits epochs={ep!s:4s} per-bit {_fmt(cal)}", flush=True)
    return {"median_norm": norm, "results": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sets", nargs="+", help="embedding sets (.npz with db_x, db_y, q_x, q_y)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--k", type=int, default=1000, help="mAP@k (the seed protocol's 1000)")
    ap.add_argument("--hashcoder", action="store_true", help="also HashCoder 5 epochs vs auto")
    ap.add_argument("--hashcoder-only", action="store_true", help="HashCoder rows only")
    ap.add_argument(
        "--train-rows", type=int, help="fit HashCoder on the first N rows only (small-data case)"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    out = {p: run_set(p, args) for p in args.sets}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

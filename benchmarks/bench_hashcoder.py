"""HashCoder (CroVCA probe) against Hashing-Baseline and ITQ on a real embedding set.

Protocol of DESIGN.md: fit on the training split (db_x), database db_x, queries q_x, mAP@1000 x100,
mean ± std over seeds, exhaustive exact search. Every hasher's queries are scored three ways
(asymmetric Hamming, BCE, symmetric BCE; see hashplug.scoring), plus symmetric Hamming. Fit times
are wall-clock seconds of ``fit`` on this machine (HashCoder: torch, ``device="auto"``).

    .venv/bin/python benchmarks/bench_hashcoder.py [--seeds 3] [--bits 16 32 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

from hashplug.bench.datasets import default_embeddings_path, load_embeddings
from hashplug.bench.experiments import HASHERS, binary_topk, fit_hasher, float_topk
from hashplug.bench.metrics import map_at_k

SCORINGS = ("asymmetric", "bce", "sym-bce")
DEFAULT = ["hashing-baseline", "itq", "hashcoder-neighbors", "hashcoder-noise", "hashcoder-labels"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_embeddings(args.embeddings or default_embeddings_path())
    k = args.k
    res: dict[str, Any] = {
        "float_cosine": map_at_k(float_topk(ds.q_x, ds.db_x, k), ds.db_y, ds.q_y),
        "hashers": {},
    }
    for name in args.hashers:
        for nb in args.bits:
            cell: dict[str, list[float]] = {s: [] for s in (*SCORINGS, "symmetric", "fit_s")}
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                h = fit_hasher(HASHERS[name](nb, seed), ds, progress=False)
                cell["fit_s"].append(time.perf_counter() - t0)
                codes = h.encode(ds.db_x)
                for s in SCORINGS:
                    top = binary_topk(h, ds, k, symmetric=False, codes=codes, scoring=s)
                    cell[s].append(map_at_k(top, ds.db_y, ds.q_y))
                top = binary_topk(h, ds, k, symmetric=True, codes=codes)
                cell["symmetric"].append(map_at_k(top, ds.db_y, ds.q_y))
            res["hashers"].setdefault(name, {})[str(nb)] = cell
            print(
                f"  {name:<20} {nb:>3} bits: asym {np.mean(cell['asymmetric']):.2f}  "
                f"fit {np.mean(cell['fit_s']):.1f} s",
                flush=True,
            )
    return res


def table(res: dict[str, Any], bits: list[int], seeds: int) -> str:
    def ms(v: list[float]) -> str:
        return f"{np.mean(v):.2f} ± {np.std(v):.2f}"

    head = "| hasher | scoring | " + " | ".join(f"{b} bits" for b in bits) + " |"
    lines = [head, "|---|---|" + "---|" * len(bits)]
    lines.append(
        "| float cosine (reference) | - | "
        + " | ".join(f"{res['float_cosine']:.2f}" for _ in bits)
        + " |"
    )
    for name, per in res["hashers"].items():
        for s in (*SCORINGS, "symmetric"):
            cells = " | ".join(ms(per[str(b)][s]) for b in bits)
            lines.append(f"| {name} | {s} | {cells} |")
        cells = " | ".join(
            f"{np.mean(per[str(b)]['fit_s']):.1f} (max {np.max(per[str(b)]['fit_s']):.1f})"
            for b in bits
        )
        lines.append(f"| {name} | fit seconds | {cells} |")
    return (
        f"mAP@1000 x100, mean ± std over {seeds} seeds (fit on db_x, database db_x, queries q_x)\n\n"
        + "\n".join(lines)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--embeddings", help="an .npz embedding set (default: the shared fmnist set)")
    ap.add_argument("--hashers", nargs="+", default=DEFAULT, choices=list(HASHERS))
    ap.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run(args)
    print()
    print(table(res, args.bits, args.seeds))
    try:
        import torch

        threads = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        threads = "no torch"
    print(f"\n{platform.machine()}, {threads}; total {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

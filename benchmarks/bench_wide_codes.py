"""Exact asymmetric search at 64, 128 and 256 bits against FAISS IndexBinaryFlat (issue 17).

    .venv/bin/python benchmarks/bench_wide_codes.py [--n 1000000 4000000] [--q 50] [--repeats 5]
        [--set fmnist|text]

Data: Hashing-Baseline codes of ../shared/data/fmnist_effnet.npz (fitted on its 20k database;
``--set text``: ~/.cache/hashplug/fortunes_minilm.npz, benchmarks/make_text_set.py),
tiled to N rows with about 3% of the bytes of each copy randomised, so that every row is distinct;
queries are the set's test queries (p = hasher.query, FAISS gets their hard codes).
Timed, 1 thread each, interleaved, median of --repeats: ``search_codes(p, codes, 10)`` (exact
asymmetric top-10) and ``IndexBinaryFlat.search(hard codes, 10)`` (symmetric Hamming, the bar).
Read the ratio column: absolute times drift on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hashplug import HashingBaseline, search_codes  # noqa: E402
from hashplug.bench.datasets import default_embeddings_path  # noqa: E402

try:
    import faiss
except ImportError:  # pragma: no cover - optional
    faiss = None


def tiled_codes(codes: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``codes`` repeated to n rows, about 3% of each copy's bytes replaced by random bytes."""
    rng = np.random.default_rng(seed)
    reps = -(-n // len(codes))
    out = np.empty((reps * len(codes), codes.shape[1]), np.uint8)
    for r in range(reps):
        part = out[r * len(codes) : (r + 1) * len(codes)]
        mask = rng.random(codes.shape) < 0.03
        part[:] = np.where(mask, rng.integers(0, 256, codes.shape, dtype=np.uint8), codes)
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--bits", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--q", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", default="fmnist", choices=["fmnist", "text"])
    args = ap.parse_args()
    if faiss is None:
        raise SystemExit("faiss-cpu is not installed: pip install faiss-cpu")
    numba.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    path = (
        default_embeddings_path()
        if args.set == "fmnist"
        else Path.home() / ".cache/hashplug/fortunes_minilm.npz"
    )
    d = np.load(path)
    x, qx = d["db_x"], d["q_x"][: args.q]
    rows = []
    for bits in args.bits:
        h = HashingBaseline(bits).fit(x)
        base, p, hq = h.encode(x), h.query(qx), h.encode(qx)
        for n in args.n:
            codes = tiled_codes(base, n)
            index = faiss.IndexBinaryFlat(bits)
            index.add(codes)
            search_codes(p, codes, 10)  # compile, warm
            index.search(hq, 10)
            t_ours, t_faiss = [], []
            for _ in tqdm(range(args.repeats), desc=f"{bits} bits, {n:,} codes", leave=False):
                t = time.perf_counter()
                index.search(hq, 10)
                t_faiss.append(time.perf_counter() - t)
                t = time.perf_counter()
                search_codes(p, codes, 10)
                t_ours.append(time.perf_counter() - t)
            mo, mf = float(np.median(t_ours)), float(np.median(t_faiss))
            ns = 1e9 / (n * len(qx))
            rows.append(f"| {bits} | {n:,} | {mo * ns:.2f} | {mf * ns:.2f} | {mo / mf:.2f} |")
            del index, codes
    print(f"\n{len(qx)} queries, k=10, 1 thread, median of {args.repeats} interleaved runs\n")
    print(
        "| bits | codes | ours exact asymmetric, ns/code | FAISS IndexBinaryFlat, ns/code | ratio |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

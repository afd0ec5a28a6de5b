"""Hashing throughput: fitted 1280-d -> 64-bit ``encode`` vs the bare matrix product (the floor).

    .venv/bin/python benchmarks/bench_hashing.py [--n 200000] [--bits 64] [--repeats 5]

Both run side by side in one process on the same input; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hashplug import ITQ, LSH, HashingBaseline
from hashplug.bench.datasets import default_embeddings_path, load_embeddings


def best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    try:
        base = load_embeddings(default_embeddings_path()).db_x
        src = "real fmnist_effnet embeddings, tiled"
    except FileNotFoundError:
        base = np.random.default_rng(0).normal(size=(20_000, 1280)).astype(np.float32)
        src = "random Gaussian embeddings"
    x = np.ascontiguousarray(np.resize(base, (a.n, base.shape[1])), dtype=np.float32)
    print(f"{a.n} x {x.shape[1]} float32 ({src}) -> {a.bits} bits, median of {a.repeats}")
    print(f"{'what':<34}{'seconds':>10}{'emb/s':>14}{'vs matmul':>11}")
    for name, h in (
        ("HashingBaseline.encode", HashingBaseline(a.bits).fit(base)),
        ("ITQ.encode", ITQ(a.bits, n_iter=20).fit(base)),
        ("LSH.encode", LSH(a.bits).fit(base)),
    ):
        w = h.projection_
        t_mm = best(lambda w=w: x @ w, a.repeats)
        t_enc = best(lambda h=h: h.encode(x), a.repeats)
        t_q = best(lambda h=h: h.query(x), a.repeats)
        if name.startswith("Hashing"):
            print(
                f"{'matrix product x @ W (floor)':<34}{t_mm:>10.3f}{a.n / t_mm:>14,.0f}{1.0:>11.2f}"
            )
        print(f"{name:<34}{t_enc:>10.3f}{a.n / t_enc:>14,.0f}{t_enc / t_mm:>11.2f}")
        print(
            f"{name.replace('encode', 'query'):<34}{t_q:>10.3f}{a.n / t_q:>14,.0f}{t_q / t_mm:>11.2f}"
        )


if __name__ == "__main__":
    main()

"""Two-stage recall@10 against the exact asymmetric search as N grows: fixed oversample vs the default rule.

    .venv/bin/python benchmarks/bench_oversample.py [--sets fmnist text] [--sizes 100000 1000000 10000000]

Data: each set's database embeddings, hashed (HashingBaseline, --bits), then tiled to N with noisy
copies: copy t is x + e_t with e_t ~ N(0, (noise * std(x))^2 I), drawn directly in logit space
(the hasher is linear, so e_t's logits are Gaussian with covariance sigma^2 W^T W; nothing of size
N x d is made). Queries: the set's held-out query embeddings. For each N, in one run: recall@10 of
``search_codes(p, codes, 10, candidates=k * oversample)`` against ``search_codes(p, codes, 10)``
(exact) for fixed oversamples and for ``hashplug.index.default_oversample(N, 10)``.
Sets: fmnist = ../shared/data/fmnist_effnet.npz (image, 1280-d); text = the MiniLM fortunes set
(benchmarks/make_text_set.py; skipped with a message when it is not built).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import hashplug
from hashplug.bench.metrics import recall_at_k
from hashplug.index import default_oversample
from hashplug.rerank import probs_from_logits, search_codes

HERE = Path(__file__).resolve().parent
SETS = {
    "fmnist": HERE.parent.parent / "shared" / "data" / "fmnist_effnet.npz",
    "text": Path(os.environ.get("HASHPLUG_CACHE", Path.home() / ".cache" / "hashplug"))
    / "fortunes_minilm.npz",
    "packages": Path(os.environ.get("HASHPLUG_CACHE", Path.home() / ".cache" / "hashplug"))
    / "debian_packages_minilm.npz",
}


def tiled_codes(h: hashplug.HashingBaseline, x: np.ndarray, n: int, noise: float) -> np.ndarray:
    """Codes of x and of noisy copies of x, n rows in all (noise added to the logits)."""
    base = h.query_logits(np.zeros((1, x.shape[1]), np.float32))
    w = h.query_logits(np.eye(x.shape[1], dtype=np.float32)) - base  # the linear map, (d, bits)
    chol = np.linalg.cholesky(w.T @ w + 1e-9 * np.eye(h.n_bits))
    logits, sd, rng = h.query_logits(x), float(x.std()), np.random.default_rng(0)
    parts, got = [np.packbits(logits > 0, axis=1)], len(x)
    with tqdm(total=n, initial=got, desc="tile codes", unit="code") as bar:
        while got < n:
            z = rng.standard_normal((len(x), h.n_bits)).astype(np.float32) @ chol.T
            parts.append(np.packbits(logits + noise * sd * z > 0, axis=1))
            got += len(x)
            bar.update(len(x))
    return np.concatenate(parts)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--fixed", nargs="+", type=int, default=[10, 50, 200])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    k = 10
    head = ["set", "N"] + [f"over {o}" for o in args.fixed] + ["default rule (over)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name in args.sets:
        if not SETS[name].exists():
            print(f"| {name} | skipped: {SETS[name]} not found (benchmarks/make_text_set.py) |")
            continue
        d = np.load(SETS[name])
        x, q = d["db_x"].astype(np.float32), d["q_x"][: args.queries].astype(np.float32)
        h = hashplug.HashingBaseline(args.bits, seed=0).fit(x)
        p = probs_from_logits(h.query_logits(q))
        codes = tiled_codes(h, x, max(args.sizes), args.noise)
        for n in sorted(args.sizes):
            c = codes[:n]
            exact, _ = search_codes(p, c, k)
            cells = [
                recall_at_k(search_codes(p, c, k, candidates=k * o)[0], exact) for o in args.fixed
            ]
            auto = default_oversample(n, k)
            got = recall_at_k(search_codes(p, c, k, candidates=k * auto)[0], exact)
            row = [name, f"{n:,}"] + [f"{v:.3f}" for v in cells] + [f"{got:.3f} ({auto})"]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

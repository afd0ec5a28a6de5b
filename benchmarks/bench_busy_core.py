"""Single-query latency with the other cores idle and busy (issue 17: within 1.5x).

    .venv/bin/python benchmarks/bench_busy_core.py [--n 1048576] [--queries 300]

One exact ``search_codes`` query over N random 64-bit codes, repeated (2 ms apart), in a fresh
process per setting: hashplug's default (its thread pool starts with OMP_WAIT_POLICY=PASSIVE),
the OpenMP default a user gets by setting nothing before hashplug did this (emulated with
OMP_WAIT_POLICY=ACTIVE, the spin-wait policy), and one thread. "busy" runs one pure-Python busy
loop per other core meanwhile (``--busy N``: N loops, e.g. one per core). Prints p50/p90 and the busy/idle ratio of p50 and p90.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, numba
from hashplug import search_codes
n, q, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads:
    numba.set_num_threads(threads)
rng = np.random.default_rng(0)
codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
p = rng.random((1, 64)).astype(np.float32)
search_codes(p, codes, 10)
ts = []
for _ in range(q):
    t = time.perf_counter()
    search_codes(p, codes, 10)
    ts.append(time.perf_counter() - t)
    time.sleep(0.002)
print(json.dumps([float(np.median(ts)), float(np.percentile(ts, 90))]))
"""
SETTINGS = {
    "hashplug default": ({}, 0),
    "OMP_WAIT_POLICY=ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, 0),
    "1 thread": ({}, 1),
}


def run(env: dict[str, str], threads: int, n: int, q: int) -> list[float]:
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(q), str(threads)],
        env=full,
        capture_output=True,
        text=True,
        check=True,
    )
    return [1e3 * t for t in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument(
        "--busy", type=int, default=0, help="busy loops (default: one per core but one)"
    )
    args = ap.parse_args()
    rows = []
    for name, (env, threads) in SETTINGS.items():
        idle = run(env, threads, args.n, args.queries)
        busy_procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy or max(1, (os.cpu_count() or 2) - 1))
        ]
        try:
            busy = run(env, threads, args.n, args.queries)
        finally:
            for b in busy_procs:
                b.kill()
                b.wait()
        rows.append(
            f"| {name} | {idle[0]:.2f} / {idle[1]:.2f} | {busy[0]:.2f} / {busy[1]:.2f} |"
            f" {busy[0] / idle[0]:.2f} / {busy[1] / idle[1]:.2f} |"
        )
    print(f"\nOne query, {args.n:,} codes of 64 bits, {args.queries} repeats, ms (p50 / p90)\n")
    print("| setting | other cores idle | other cores busy | busy / idle |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

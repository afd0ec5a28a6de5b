"""Bulk ingest into a ``file://`` LocalStore: time per batch and bytes written as N grows (issue 17).

    .venv/bin/python benchmarks/bench_local_ingest.py [--n 10000000] [--batch 50000] [--bits 64]

Random codes (the store does not look at them), ids 0..N-1 in batches, no payloads, one
``upsert`` per batch, as ``hashplug ingest`` does. Prints the median seconds of the first and
last 10 batches (their ratio shows whether a batch's cost grows with the store), the total
time, the bytes this process wrote (``/proc/self/io``) over the bytes the store holds, and the
time to open the store again (reading every segment).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hashplug.stores import open_store
from hashplug.testing import make_meta


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--dir", help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hashplug-ingest-"))
    path = root / "store"
    try:
        s = open_store(f"file://{path}")
        s.open(make_meta(n_bits=args.bits))
        rng = np.random.default_rng(0)
        times = []
        w0, t0 = written_bytes(), time.perf_counter()
        for start in tqdm(range(0, args.n, args.batch), desc="upsert", unit="batch"):
            ids = np.arange(start, min(start + args.batch, args.n), dtype=np.int64)
            codes = rng.integers(0, 256, (ids.size, args.bits // 8), dtype=np.uint8)
            t = time.perf_counter()
            s.upsert(ids, codes)
            times.append(time.perf_counter() - t)
        total, wrote = time.perf_counter() - t0, written_bytes() - w0
        held = sum(p.stat().st_size for p in path.iterdir())
        t = time.perf_counter()
        count = open_store(f"file://{path}").count()
        reopen = time.perf_counter() - t
        first, last = float(np.median(times[:10])), float(np.median(times[-10:]))
        print(f"\n{args.n:,} codes of {args.bits} bits in batches of {args.batch:,}\n")
        print(
            "| first 10 batches, s/batch | last 10, s/batch | last/first | total s |"
            " written GB | store GB | written/store | reopen s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        print(
            f"| {first:.3f} | {last:.3f} | {last / first:.1f} | {total:.1f} | {wrote / 1e9:.2f} |"
            f" {held / 1e9:.2f} | {wrote / max(held, 1):.1f} | {reopen:.2f} |"
        )
        assert count == args.n, (count, args.n)
    finally:
        shutil.rmtree(root if not args.dir else path, ignore_errors=True)


if __name__ == "__main__":
    main()

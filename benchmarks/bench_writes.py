"""The local store's write path as N grows: ingest, writes between searches, reopen (issue 17).

    .venv/bin/python benchmarks/bench_writes.py [--sizes 1000000 10000000] [--sets text fmnist]
        [--no-file] [--out benchmarks/results]

Data: each set's database embeddings hashed to 64 bits (HashingBaseline) and tiled to N codes
with noisy copies (``tiled_codes`` of ``bench_oversample.py``); 100 held-out queries.
Per (set, N), in one process, 1 thread:
- ingest in 50k batches into ``memory://`` and ``file://`` LocalStores, and FAISS
  ``IndexBinaryFlat.add`` beside them (ms per batch as the store fills: the plot);
- the inverted file: ``build_ivf`` time, single-query latency (store top-C, C as
  ``HashIndex.search``'s default) of the exhaustive scan and of the ivf, recall@10 of both after
  the rerank against the exact asymmetric top-10;
- write 1k rows then search, 10 rounds: the write's and the search's ms next to the idle search;
  delete 10 ids then search;
- ``file://``: reopen, then the first ivf search (lists loaded from ``ivf.safetensors``).
Writes ``writes.md``, ``writes.json`` and ``writes.png`` under ``--out``. 100M codes
(``--sizes 100000000 --no-file``) need about 12 GB of RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_oversample import SETS, tiled_codes  # noqa: E402

import hashplug  # noqa: E402
from hashplug.bench.metrics import recall_at_k  # noqa: E402
from hashplug.index import default_oversample  # noqa: E402
from hashplug.rerank import probs_from_logits, rerank, search_codes  # noqa: E402
from hashplug.stores import LocalStore  # noqa: E402
from hashplug.testing import make_meta  # noqa: E402

BATCH = 50_000
K = 10


def _ms(f: Any) -> float:
    t = time.perf_counter()
    f()
    return 1e3 * (time.perf_counter() - t)


def _ingest(add: Any, codes: np.ndarray, desc: str) -> list[float]:
    """Return ms per 50k batch of ``add(ids, codes)``."""
    per = []
    for s in tqdm(range(0, len(codes), BATCH), desc=desc, unit="batch", leave=False):
        e = min(s + BATCH, len(codes))
        per.append(_ms(lambda s=s, e=e: add(np.arange(s, e), codes[s:e])))
    return per


def run_one(name: str, n: int, with_file: bool, queries: int = 100) -> dict[str, Any]:
    """Measure one (set, N); returns the row of the table and the per-batch curves."""
    import faiss

    d = np.load(SETS[name])
    x, q = d["db_x"].astype(np.float32), d["q_x"][:queries].astype(np.float32)
    h = hashplug.HashingBaseline(64, seed=0).fit(x)
    codes = tiled_codes(h, x, n, 0.5)
    p = probs_from_logits(h.query_logits(q))
    qc = np.packbits(p > 0.5, axis=1)
    exact = search_codes(p, codes, K).ids
    c = K * default_oversample(n, K)
    out: dict[str, Any] = {"set": name, "N": n, "C": c}

    mem = LocalStore(name=f"bench-{name}-{n}", ivf="auto")
    mem.open(make_meta(64))
    exhaustive = LocalStore(name=f"bench-{name}-{n}")  # the same rows, no inverted file
    curves = {"memory://": _ingest(lambda i, b: mem.upsert(i, b), codes, "memory ingest")}
    flat = faiss.IndexBinaryFlat(64)
    curves["FAISS flat add"] = _ingest(lambda i, b: flat.add(b), codes, "faiss add")
    flat.reset()
    tmp = Path(tempfile.mkdtemp(prefix="bench_writes_"))
    try:
        if with_file:
            fil = LocalStore(tmp / "c", ivf="auto")
            fil.open(make_meta(64))
            curves["file://"] = _ingest(lambda i, b: fil.upsert(i, b), codes, "file ingest")
            out["disk B/vec"] = sum(f.stat().st_size for f in (tmp / "c").iterdir()) / n
        for key, per in curves.items():
            out[f"{key} M/s"] = n / sum(per) / 1e3
            out[f"{key} last/first"] = float(np.median(per[-5:]) / np.median(per[:5]))

        def recall(store: LocalStore) -> float:
            hits = store.search_with_codes(qc, c)
            return recall_at_k(rerank(p, hits.ids, hits.codes, K).ids, exact)

        def single(store: LocalStore) -> float:
            return float(np.median([_ms(lambda i=i: store.search(qc[i : i + 1], c))
                                    for i in range(20)]))  # fmt: skip

        out["ivf build s"] = _ms(mem.build_ivf) / 1e3
        out["ivf nlist"] = mem._ivf.nlist if mem._ivf is not None else 0
        out["ivf nprobe"] = mem._probes(mem._lists) if mem._lists is not None else 0
        ivf_ms, ivf_rec = single(mem), recall(mem)
        flat_ms, flat_rec = single(exhaustive), recall(exhaustive)
        out.update({"flat ms": flat_ms, "flat recall": flat_rec, "ivf ms": ivf_ms,
                    "ivf recall": ivf_rec})  # fmt: skip
        rng, w, s = np.random.default_rng(0), [], []
        for r in range(10):
            new = np.arange(n + r * 1000, n + (r + 1) * 1000)
            w.append(_ms(lambda new=new: mem.upsert(new, codes[rng.integers(0, n, 1000)])))
            s.append(_ms(lambda: mem.search(qc[:1], c)))
        out["write 1k ms"], out["search after write ms"] = float(np.median(w)), float(np.median(s))
        out["delete 10 ms"] = _ms(lambda: mem.delete(np.arange(10)))
        out["search after delete ms"] = _ms(lambda: mem.search(qc[:1], c))
        if with_file:
            out["file first search s"] = _ms(lambda: fil.search(qc[:1], c)) / 1e3
            t = time.perf_counter()
            again = LocalStore(tmp / "c", ivf="auto")  # opening reads the segments
            again.count()
            out["reopen s"] = time.perf_counter() - t
            out["reopen first search s"] = _ms(lambda: again.search(qc[:1], c)) / 1e3
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        mem.drop()
    out["curves"] = curves
    return out


COLUMNS = [
    ("set", "set", "{}"), ("N", "N", "{:,}"), ("memory:// ingest M/s", "memory:// M/s", "{:.2f}"),
    ("last/first batch", "memory:// last/first", "{:.2f}"),
    ("file:// ingest M/s", "file:// M/s", "{:.2f}"),
    ("last/first batch", "file:// last/first", "{:.2f}"),
    ("FAISS flat add", "FAISS flat add M/s", "{:.2f}"), ("ivf build", "ivf build s", "{:.1f}"),
    ("flat ms (recall)", ("flat ms", "flat recall"), "{:.2f} ({:.3f})"),
    ("ivf nprobe (nlist)", ("ivf nprobe", "ivf nlist"), "{} ({})"),
    ("ivf ms (recall)", ("ivf ms", "ivf recall"), "{:.2f} ({:.3f})"),
    ("write 1k ms", "write 1k ms", "{:.1f}"),
    ("search after write ms", "search after write ms", "{:.2f}"),
    ("delete 10 ms", "delete 10 ms", "{:.0f}"),
    ("search after delete ms", "search after delete ms", "{:.0f}"),
    ("file first search s", "file first search s", "{:.2f}"),
    ("reopen s", "reopen s", "{:.2f}"),
    ("reopen first search s", "reopen first search s", "{:.2f}"),
]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """Return the markdown table of the runs."""
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for _, key, fmt in COLUMNS:
            keys = key if isinstance(key, tuple) else (key,)
            cells.append(fmt.format(*(r[k] for k in keys)) if all(k in r for k in keys) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Plot ms per 50k batch (rolling median of 5) against rows stored, for each set's largest N.

    Colour: the store; line style: the set.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"memory://": "tab:blue", "file://": "tab:orange", "FAISS flat add": "tab:green"}
    styles = ["-", "--", ":", "-."]
    biggest = {r["set"]: r for r in sorted(rows, key=lambda r: r["N"])}
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, r) in enumerate(biggest.items()):
        for key, per in r["curves"].items():
            y = np.asarray(per)
            y = np.array([np.median(y[max(0, j - 2) : j + 3]) for j in range(y.size)])
            at = np.arange(y.size) * BATCH + BATCH
            ax.plot(at, y, lw=1.2, color=colours.get(key), ls=styles[i % len(styles)],
                    label=f"{key}, {name}, N={r['N']:,}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows stored after the batch")
    ax.set_ylabel("ms per 50k-row batch (rolling median of 5)")
    ax.set_title("Ingest cost per batch as the store fills (flat = linear ingest)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 10_000_000])
    ap.add_argument("--sets", nargs="+", default=["text", "fmnist"], choices=list(SETS))
    ap.add_argument("--no-file", action="store_true", help="skip the file:// store")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--report-only", action="store_true", help="rewrite the plot from writes.json")
    args = ap.parse_args(argv)
    if args.report_only:
        rows = json.loads((args.out / "writes.json").read_text())
        plot(rows, args.out / "writes.png")
        return rows
    numba.set_num_threads(1)
    rows = []
    for name in args.sets:
        if not SETS[name].exists():
            print(f"skipped {name}: {SETS[name]} not found (benchmarks/make_text_set.py)")
            continue
        for n in args.sizes:
            rows.append(run_one(name, n, not args.no_file, args.queries))
            print(table(rows[-1:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    md = table(rows)
    (args.out / "writes.md").write_text(md + "\n")
    (args.out / "writes.json").write_text(json.dumps(rows, indent=1))
    if rows:
        plot(rows, args.out / "writes.png")
    print(md)
    return rows


if __name__ == "__main__":
    main()

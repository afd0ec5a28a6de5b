"""Cost growth from 100k to 10M codes: hashplug's local store next to FAISS, in one run (issue 17).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 100000 1000000 10000000] [--sets fmnist text]
        [--queries 100] [--single 20] [--repeats 3] [--out benchmarks/results] [--report-only]

Data: each set's database embeddings, hashed (HashingBaseline, 64 bits), tiled to N codes with
noisy copies in logit space (``tiled_codes`` of ``bench_oversample.py``); queries: the set's
held-out queries (``--queries``, a batch; ``--single`` of them one call each). Sets: fmnist =
../shared/data/fmnist_effnet.npz (image, 1280-d), text = ~/.cache/hashplug/fortunes_minilm.npz.

Each (set, N) runs in its own child process (its peak RSS is the N's), which holds every method
at once and times them interleaved (median of ``--repeats`` rounds; single queries: median over
all calls), with 1 and 2 threads (``numba.set_num_threads``, ``faiss.omp_set_num_threads``;
``OMP_WAIT_POLICY=PASSIVE``):
- ``exact``: ``search_codes(p, codes, 10)``, the exact asymmetric top-10 (recall's reference);
- ``hp flat``: ``HashIndex.search(q, 10)`` on ``LocalStore()`` (two-stage, default oversample);
- ``hp ivf np=P``: the same on ``LocalStore(ivf="auto")`` with ``store.nprobe = P``;
- ``faiss flat``: ``IndexBinaryFlat`` Hamming top-C, then ``hashplug.rerank`` of its candidates
  (C = 10 * default oversample, as ``hp flat``); ``faiss ivf np=P``: ``IndexBinaryIVF`` (nlist as
  ours, trained on 64 * nlist codes, 10 iterations as ours) likewise; ``faiss mih ...``:
  ``IndexBinaryMultiHash`` (nhash tables of b bits, nflip) likewise.
Ingest: 50k-row batches (``store.upsert``; FAISS ``add``), IVF training (+ list build) timed
apart; memory per vector: the arrays a LocalStore holds (FAISS: its serialized index), and the
RSS growth while adding; disk per vector: a ``file://`` LocalStore's files, FAISS's serialized index. Writes ``scale.md``, ``scale.json`` and ``scale.png`` under ``--out``.
``--report-only`` rewrites the markdown and the plot from ``scale.json``. 100M codes
(``--sizes 100000000``) need about 20 GB of RAM with every method held, and the in-memory
store's ingest in 50k batches grows with N (see the ingest rates): not part of the default run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
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
from hashplug.stores._ivf import auto_nlist  # noqa: E402

try:
    import faiss
except ImportError:  # pragma: no cover - optional
    faiss = None

K, BITS, BATCH = 10, 64, 50_000
NPROBES = (8, 16, 32, 64, 128, 256, 512)
MIH = ((4, 16, 1), (4, 16, 2))  # (nhash, b, nflip); 8x8 nflip 0: 40 ms/query at 1M text codes
THREADS = (1, 2)
PLOT = ("exact", "hp flat", "hp ivf np=32", "hp ivf np=128", "faiss flat", "faiss ivf np=32",
        "faiss ivf np=128") + tuple(f"faiss mih {h}x{b} f{f}" for h, b, f in MIH)  # fmt: skip


def rss_mb() -> float:
    """Return the resident set size of this process, MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def held_bytes(obj: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of the numpy arrays reachable from ``obj`` (dicts, lists, object attributes), once each."""
    seen = set() if seen is None else seen
    if depth > 6 or obj is None or isinstance(obj, str | bytes | int | float | Path):
        return 0
    if isinstance(obj, np.ndarray):
        base = obj if obj.base is None else obj.base
        if id(base) in seen or not isinstance(base, np.ndarray):
            return 0 if id(base) in seen else obj.nbytes
        seen.add(id(base))
        return int(base.nbytes)
    if isinstance(obj, dict):
        return sum(held_bytes(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return 8 * len(obj) + sum(held_bytes(v, seen, depth + 1) for v in obj[:1000])
    if hasattr(obj, "__dict__"):
        return held_bytes(vars(obj), seen, depth + 1)
    return 0


def store_bytes(store: LocalStore) -> int:
    """Bytes a LocalStore holds: its state (ids, codes, id index ...) and its inverted file."""
    return held_bytes([store._state, store._ivf, store._lists])


def _ingest(add: Callable[[np.ndarray, np.ndarray], None], codes: np.ndarray, what: str) -> float:
    """Add ``codes`` (ids 0..N-1) in batches; return the seconds it took."""
    n = len(codes)
    t = time.perf_counter()
    for s in tqdm(range(0, n, BATCH), desc=f"ingest {what}", leave=False, unit="batch"):
        add(np.arange(s, min(n, s + BATCH), dtype=np.int64), codes[s : s + BATCH])
    return time.perf_counter() - t


class Ingest:
    """Records ingest rate, training time, RSS growth and disk bytes of one method."""

    def __init__(self, n: int):
        self.n, self.rows = n, {}

    def record(self, name: str, add_s: float, rss0: float, train_s: float, held: int, disk: int):
        """Record one method: add and training seconds, RSS since ``rss0``, held and disk bytes."""
        self.rows[name] = {
            "vectors_per_s": self.n / add_s if add_s else None,
            "add_s": add_s,
            "train_s": train_s,
            "rss_growth_mb": rss_mb() - rss0,
            "mem_bytes_per_vector": held / self.n,
            "disk_bytes_per_vector": disk / self.n if disk else None,
        }


def build(codes: np.ndarray, h: Any, tmp: Path) -> tuple[dict[str, Any], Ingest, int]:
    """Ingest ``codes`` into every method; return (searchers' backends, ingest records, C)."""
    n = len(codes)
    ing, objs = Ingest(n), {}
    limit = K * default_oversample(n, K)
    warm = hashplug.HashIndex(LocalStore(ivf="auto"), h)  # compile the kernels outside the timings
    warm.store.upsert(np.arange(5000), codes[:5000])
    warm.store.build_ivf()
    warm.store.search(codes[:2], K)
    del warm
    r0 = rss_mb()
    objs["hp flat"] = hashplug.HashIndex(LocalStore(), h)
    add_s = _ingest(objs["hp flat"].store.upsert, codes, "hp flat")
    objs["hp flat"].store.search(codes[:1], K)  # a search builds what it needs
    ing.record("hp flat", add_s, r0, 0.0, store_bytes(objs["hp flat"].store), 0)
    r0 = rss_mb()
    objs["hp ivf"] = hashplug.HashIndex(LocalStore(ivf="auto"), h)
    add_s = _ingest(objs["hp ivf"].store.upsert, codes, "hp ivf")
    t = time.perf_counter()
    objs["hp ivf"].store.build_ivf()
    train_s = time.perf_counter() - t
    objs["hp ivf"].store.search(codes[:1], K)
    ing.record("hp ivf", add_s, r0, train_s, store_bytes(objs["hp ivf"].store), 0)
    if faiss is None:
        _file_store(codes, h, tmp, ing)
        return objs, ing, limit
    r0 = rss_mb()
    fl = faiss.IndexBinaryFlat(BITS)
    add_s = _ingest(lambda i, c: fl.add(c), codes, "faiss flat")
    ing.record("faiss flat", add_s, r0, 0.0, *[len(faiss.serialize_index_binary(fl))] * 2)
    objs["faiss flat"] = fl
    r0 = rss_mb()
    nlist = max(2, auto_nlist(n))
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, nlist)
    ivf.cp.niter = 10
    sample = np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)
    t = time.perf_counter()
    ivf.train(codes[np.sort(sample)])
    train_s = time.perf_counter() - t
    add_s = _ingest(lambda i, c: ivf.add(c), codes, "faiss ivf")
    ing.record("faiss ivf", add_s, r0, train_s, *[len(faiss.serialize_index_binary(ivf))] * 2)
    objs["faiss ivf"] = ivf
    for nh, b, nf in MIH:
        r0 = rss_mb()
        mih = faiss.IndexBinaryMultiHash(BITS, nh, b)
        mih.nflip = nf
        name = f"faiss mih {nh}x{b} f{nf}"
        add_s = _ingest(lambda i, c, m=mih: m.add(c), codes, name)
        ing.record(name, add_s, r0, 0.0, *[len(faiss.serialize_index_binary(mih))] * 2)
        objs[name] = mih
    _file_store(codes, h, tmp, ing)
    return objs, ing, limit


def _file_store(codes: np.ndarray, h: Any, tmp: Path, ing: Ingest) -> None:
    """Time ingest into a ``file://`` LocalStore and record its disk bytes (then drop it)."""
    r0 = rss_mb()
    fs = hashplug.HashIndex(LocalStore(tmp / "file_store"), h).store
    add_s = _ingest(fs.upsert, codes, "file://")
    fs.search(codes[:1], K)
    ing.record("hp file://", add_s, r0, 0.0, store_bytes(fs), dir_bytes(tmp / "file_store"))
    fs.close()
    shutil.rmtree(tmp / "file_store", ignore_errors=True)


def searchers(objs, codes, p, qx, qc, limit) -> dict[str, Callable[[slice], np.ndarray]]:
    """Name -> f(query slice) returning the top-10 ids, one per method."""
    out: dict[str, Callable[[slice], np.ndarray]] = {
        "exact": lambda s: search_codes(p[s], codes, K)[0]
    }
    out["hp flat"] = lambda s: objs["hp flat"].search(qx[s], K).ids
    st = objs["hp ivf"].store

    def hp_ivf(nprobe: int) -> Callable[[slice], np.ndarray]:
        def f(s: slice) -> np.ndarray:
            st.nprobe = nprobe
            return objs["hp ivf"].search(qx[s], K).ids

        return f

    for npb in NPROBES:
        out[f"hp ivf np={npb}"] = hp_ivf(npb)

    def reranked(
        index: Any, setup: Callable[[], None] = lambda: None
    ) -> Callable[[slice], np.ndarray]:
        def f(s: slice) -> np.ndarray:
            setup()
            _, rows = index.search(qc[s], limit)
            return rerank(p[s], rows, codes[np.maximum(rows, 0)], K).ids

        return f

    if "faiss flat" in objs:
        out["faiss flat"] = reranked(objs["faiss flat"])
        for npb in NPROBES:
            out[f"faiss ivf np={npb}"] = reranked(
                objs["faiss ivf"], lambda v=npb: setattr(objs["faiss ivf"], "nprobe", v)
            )
        for name in (k for k in objs if k.startswith("faiss mih")):
            out[name] = reranked(objs[name])
    return out


def run_one(set_name: str, n: int, nq: int, n_single: int, repeats: int) -> dict[str, Any]:
    """Build and time every method on ``n`` codes of ``set_name``; one child process per call."""
    d = np.load(SETS[set_name])
    x, qx = d["db_x"].astype(np.float32), d["q_x"][:nq].astype(np.float32)
    h = hashplug.HashingBaseline(BITS, seed=0).fit(x)
    u = h.query_logits(qx)
    p, qc = probs_from_logits(u), np.packbits(u > 0, axis=1)
    codes = tiled_codes(h, x, n, 0.5)
    base_rss = rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        objs, ing, limit = build(codes, h, Path(tmp))
    fns = searchers(objs, codes, p, qx, qc, limit)
    exact = fns["exact"](slice(None))
    res: dict[str, Any] = {m: {"recall": None, "single_ms": {}, "batch_ms": {}} for m in fns}
    single = {(m, t): [] for m in fns for t in THREADS}
    batch = {(m, t): [] for m in fns for t in THREADS}
    for t in THREADS:
        numba.set_num_threads(t)
        if faiss is not None:
            faiss.omp_set_num_threads(t)
        for f in fns.values():  # warm (compile, first IVF lists)
            f(slice(0, 1))
            f(slice(None))
        for _ in tqdm(range(repeats), desc=f"{set_name} {n:,} {t} thr", leave=False):
            for m, f in fns.items():
                for i in range(n_single):
                    s = time.perf_counter()
                    f(slice(i, i + 1))
                    single[m, t].append(time.perf_counter() - s)
                s = time.perf_counter()
                ids = f(slice(None))
                batch[m, t].append(time.perf_counter() - s)
                if t == 1 and res[m]["recall"] is None:
                    res[m]["recall"] = recall_at_k(ids, exact)
    for m in fns:
        for t in THREADS:
            res[m]["single_ms"][t] = 1e3 * float(np.median(single[m, t]))
            res[m]["batch_ms"][t] = 1e3 * float(np.median(batch[m, t])) / len(qx)
    ivf = objs["hp ivf"].store._ivf
    return {
        "set": set_name, "n": n, "candidates": limit, "nlist": ivf.nlist if ivf else None,
        "queries": len(qx), "single_queries": n_single, "repeats": repeats,
        "search": res, "ingest": ing.rows, "codes_rss_mb": base_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def _first_at(s: dict[str, Any], prefix: str, target: float) -> str | None:
    """Return the first method named ``prefix...`` (in probe order) with recall >= target."""
    names = [m for m in s if m.startswith(prefix)]
    return next((m for m in names if s[m]["recall"] >= target), names[-1] if names else None)


def _cell(s: dict[str, Any], m: str | None) -> str:
    """Return "single / batch (recall, setting)" of method ``m``, 1 thread."""
    if m is None or m not in s:
        return ""
    v = s[m]
    tag = m.split(" ", 2)[-1] if m.startswith(("hp ivf", "faiss ivf", "faiss mih")) else ""
    rec = f"{v['recall']:.3f}" + (f", {tag}" if tag else "")
    return f"{v['single_ms'][1]:.2f} / {v['batch_ms'][1]:.2f} ({rec})"


def summary(runs: list[dict[str, Any]], target: float = 0.95) -> list[str]:
    """Return the summary table: per set and N, each family at its first setting >= target."""
    head = ["set", "N", "exact", "hp flat", f"hp ivf (recall >= {target})", "faiss flat",
            f"faiss ivf (recall >= {target})", "faiss mih (best)", "hp flat / hp ivf",
            "hp ingest vec/s", "hp ivf build s", "faiss ivf train+add s", "peak RSS MB"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        s, ing = r["search"], r["ingest"]

        hp_ivf, f_ivf = _first_at(s, "hp ivf", target), _first_at(s, "faiss ivf", target)
        mih = max(
            (m for m in s if m.startswith("faiss mih")), key=lambda m: s[m]["recall"], default=None
        )
        speed = s["hp flat"]["single_ms"][1] / s[hp_ivf]["single_ms"][1] if hp_ivf else float("nan")
        fi = ing.get("faiss ivf")
        row = [r["set"], f"{r['n']:,}", _cell(s, "exact"), _cell(s, "hp flat"), _cell(s, hp_ivf), _cell(s, "faiss flat"),
               _cell(s, f_ivf), _cell(s, mih), f"{speed:.1f}x", f"{ing['hp flat']['vectors_per_s']:,.0f}",
               f"{ing['hp ivf']['train_s']:.1f}", f"{fi['train_s'] + fi['add_s']:.1f}" if fi else "",
               f"{r['peak_rss_mb']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(runs: list[dict[str, Any]]) -> str:
    """Return the report: a summary, then a search and an ingest table per set and N."""
    sizes = sorted({r["n"] for r in runs})
    sets = list(dict.fromkeys(r["set"] for r in runs))
    lines = [
        "# Cost growth with N: hashplug LocalStore vs FAISS (64-bit codes, one run)",
        "",
        f"Command: `python benchmarks/bench_scale.py --sizes {' '.join(map(str, sizes))} "
        f"--sets {' '.join(sets)}`; machine: {os.cpu_count()} cores (shared).",
        "Data: Hashing-Baseline codes of each set's database, tiled to N with noisy copies "
        "(bench_oversample.tiled_codes, noise 0.5); queries: the set's held-out queries. "
        "recall@10 against the exact asymmetric top-10 (`search_codes`). "
        "Times: ms per query, medians, all methods interleaved in one process per (set, N); "
        "batch = one call of all queries, divided by their number. "
        "C = candidates reranked (10 x default oversample) for every two-stage method. "
        "Ingest: 50k-row batches; train s = IVF training (ours: `build_ivf`, which also builds "
        "the lists; FAISS: `train`, its `add` assigns). Memory B/vector: the arrays a LocalStore "
        "holds (ids, codes, id index, IVF lists) / FAISS's serialized index; disk B/vector: the "
        "`file://` store's files / FAISS's serialized index. RSS growth: measured while adding "
        "(allocator reuse makes it noisy at small N); peak RSS: the child process holding every "
        "method at once (the data, the codes and the libraries: about 170-330 MB of it).",
        "",
        "## Summary (ms per query, 1 thread: single / batch (recall@10, setting))",
        "",
        *summary(runs),
        "",
    ]
    for r in runs:
        lines += [
            f"## {r['set']}, N = {r['n']:,} (C = {r['candidates']}, nlist = {r['nlist']}, "
            f"{r['queries']} queries, {r['single_queries']} single, {r['repeats']} rounds, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB)",
            "",
            "| method | recall@10 | single 1 thr | single 2 thr | batch 1 thr | batch 2 thr "
            "| single 1 thr / exact | single 1 thr / faiss flat |",
            "|---|---|---|---|---|---|---|---|",
        ]
        s = r["search"]
        ref_e = s["exact"]["single_ms"][1]
        ref_f = s.get("faiss flat", s["exact"])["single_ms"][1]
        for m, v in s.items():
            sm, bm = v["single_ms"], v["batch_ms"]
            lines.append(
                f"| {m} | {v['recall']:.3f} | {sm[1]:.3f} | {sm[2]:.3f} | {bm[1]:.3f} | "
                f"{bm[2]:.3f} | {sm[1] / ref_e:.2f} | {sm[1] / ref_f:.2f} |"
            )
        lines += [
            "",
            "| ingest | vectors/s (add) | add s | train s | RSS growth MB | memory B/vector "
            "| disk B/vector |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, v in r["ingest"].items():
            disk = v["disk_bytes_per_vector"]
            lines.append(
                f"| {m} | {v['vectors_per_s']:,.0f} | {v['add_s']:.2f} | {v['train_s']:.2f} | "
                f"{v['rss_growth_mb']:.0f} | {v['mem_bytes_per_vector']:.1f} | "
                f"{'' if disk is None else f'{disk:.1f}'} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Time per query vs N, log-log: one panel per set and mode (single / batch, 1 thread)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["set"] for r in runs))
    fig, axes = plt.subplots(len(sets), 2, figsize=(12, 4.5 * len(sets)), squeeze=False)
    styles = ["-o", "-s", "--^", "--v", ":o", ":^", ":v", "-.s", "-.D", "-.x"]
    for row, name in zip(axes, sets, strict=True):
        rs = sorted((r for r in runs if r["set"] == name), key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        for ax, mode in zip(row, ("single_ms", "batch_ms"), strict=True):
            for m, sty in zip(PLOT, styles, strict=False):
                if all(m in r["search"] for r in rs):
                    ax.plot(ns, [r["search"][m][mode][1] for r in rs], sty, label=m)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ns, [f"{n:,}" for n in ns])
            ax.set_xlabel("codes in the collection (N, 64 bits)")
            what = "single query" if mode == "single_ms" else f"batch of {rs[0]['queries']}"
            ax.set_ylabel("ms per query (1 thread)")
            ax.set_title(f"{name}: {what}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; return the runs (also written under ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--sets", nargs="+", default=["fmnist", "text"], choices=list(SETS))
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--single", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--in-process", action="store_true", help="no child process per (set, N)")
    ap.add_argument("--report-only", action="store_true", help="rewrite md/png from scale.json")
    args = ap.parse_args(argv)
    if args.report_only:
        runs = json.loads((args.out / "scale.json").read_text())
        for r in runs:  # JSON turned the thread counts into strings
            for v in r["search"].values():
                for key in ("single_ms", "batch_ms"):
                    v[key] = {int(t): x for t, x in v[key].items()}
        (args.out / "scale.md").write_text(markdown(runs))
        plot(runs, args.out / "scale.png")
        return runs
    runs = []
    todo = [(s, n) for s in args.sets for n in sorted(args.sizes)]
    for s, n in tqdm(todo, desc="bench_scale"):
        if not SETS[s].exists():
            print(f"skipped {s}: {SETS[s]} not found (benchmarks/make_text_set.py)")
            continue
        call = (s, n, args.queries, args.single, args.repeats)
        if args.in_process:
            runs.append(run_one(*call))
        else:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as ex:
                runs.append(ex.submit(run_one, *call).result())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(runs, indent=1))
        (args.out / "scale.md").write_text(markdown(runs))
    if runs:
        plot(runs, args.out / "scale.png")
        print(markdown(runs))
    return runs


if __name__ == "__main__":
    main()

"""Asymmetric search and rerank kernels (hashplug.rerank) against numpy, torch.cdist and FAISS.

    .venv/bin/python benchmarks/bench_rerank.py [--n 1000000] [--q 1000] [--k 10]
        [--candidates 100 1000 10000] [--repeats 3] [--baseline-q 100]

Data
  random: N uniform random 64-bit codes; Q queries with p ~ Uniform(0, 1) per bit (the hard case
          for the pruning bound: many weak bits).
  real:   64-bit codes of the 20k Fashion-MNIST EfficientNet database (../shared/data/fmnist_effnet.npz;
          PCA-64 + random rotation fitted on it, codes = logits > 0), Q test queries p = sigmoid(logits).
          The 20k database is used as is (not tiled: tiling would only duplicate codes).
Methods (same codes and queries, same process)
  ours exact      search_codes(p, codes, k): exact asymmetric top-k, pruned scan
  ours two-stage  search_codes(p, codes, k, candidates=C): Hamming top-C, then exact rerank
  FAISS           IndexBinaryFlat.search(hard query codes, k): symmetric Hamming (the speed bar)
  numpy           exact asymmetric top-k with BLAS: sum(p) + bits @ (1 - 2p), argpartition
                  (bits unpacked to float32 beforehand, not timed); run on --baseline-q queries, scaled
  torch           torch.cdist(p, bits_as_float, p=1) + topk (the seed code's approach); same subset
Rerank: Q queries x 1000 candidates each (their Hamming top-1000, best first, as a database returns
them). rerank_rows gathers the candidates' codes itself (the "gather included" figure the targets
use); rerank is timed on codes already gathered, and numpy's gather codes[rows] on its own. The
"floor" row only reads each candidate's code (rerank_rows's own gather, nothing scored): no exact
rerank can take less, so the baselines' times over it bound the ratios reachable on this machine.
Times are medians of --repeats runs, interleaved across methods, each timed call right after an
untimed call of the same method (steady state; "caches swept" rows read 64 MB first). "1 thread"
pins numba, FAISS and torch to one thread, "all" uses every core. M codes/s counts query x code
pairs scored per second.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # FAISS's and numba's OpenMP pools, side by side

import numba  # noqa: E402
import numpy as np  # noqa: E402

R = importlib.import_module("hashplug.rerank")  # noqa: E402
K = importlib.import_module("hashplug._kernels.candidates")  # noqa: E402

try:
    import faiss
except ImportError:  # pragma: no cover - optional
    faiss = None
try:
    import torch
except ImportError:  # pragma: no cover - optional
    torch = None

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fmnist_effnet.npz"


def keep_freed_memory() -> bool:
    """Ask glibc to serve blocks up to 32 MB from the heap and keep freed memory.

    Otherwise each call of the numpy baseline maps, faults in and unmaps its temporaries anew (here
    1,855 page faults per 100-query rerank call: 14.7 ms instead of 8.9), and its times swing
    between runs.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap_ok = libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
    return bool(mmap_ok and libc.mallopt(m_trim_threshold, 1 << 30))


def median_times(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    prepare: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    """Median wall time of each function.

    Repeats are interleaved across the functions, so that a change in background load hits every
    method alike; each timed call is preceded by an untimed call of the same function (steady state:
    every method is timed in its own warm caches, whatever ran before it), or by ``prepare[name]()``
    where given.
    """
    prepare = prepare or {}
    ts: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            prepare.get(name, f)()
            t = time.perf_counter()
            f()
            ts[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in ts.items()}


_SWEEP = np.ones(1 << 23, np.int64)  # 64 MB: twice this machine's L3


def sweep_caches() -> None:
    """Evict the caches (read 64 MB) before a cold-cache measurement."""
    _SWEEP.sum()


def set_threads(n: int) -> None:
    numba.set_num_threads(n)
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def random_data(n: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8), dtype=np.uint8), rng.random((q, 64)).astype(np.float32)


def real_data(q: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not DATA.is_file():
        return None
    with np.load(DATA) as z:
        x = z["db_x"].astype(np.float32)
        qx = z["q_x"][:q].astype(np.float32)
    mu = x.mean(axis=0)
    xc = x - mu
    _, vecs = np.linalg.eigh((xc.T @ xc).astype(np.float64) / len(x))
    rot, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))
    w = (vecs[:, ::-1][:, :64] @ rot).astype(np.float32)
    return np.packbits(xc @ w > 0, axis=1), R.probs_from_logits((qx - mu) @ w)


# ---- baselines ----------------------------------------------------------------------------------
def numpy_topk(p: np.ndarray, bits: np.ndarray, k: int) -> np.ndarray:
    d = p.sum(axis=1, keepdims=True) + (1.0 - 2.0 * p) @ bits.T
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(np.take_along_axis(d, part, 1), axis=1), 1)


def torch_topk(p: np.ndarray, bits_t: object, k: int) -> object:
    assert torch is not None
    d = torch.cdist(torch.from_numpy(p), bits_t, p=1)
    return torch.topk(d, k, dim=1, largest=False)


def numpy_rerank(p: np.ndarray, codes: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((p.shape[0], k), np.int64)
    for q0 in range(0, p.shape[0], 100):  # chunks keep the (q, C, 64) temporary reasonable
        cc = codes[rows[q0 : q0 + 100]]  # gather
        bits = np.unpackbits(cc, axis=2).astype(np.float32)
        d = np.abs(bits - p[q0 : q0 + 100, None, :]).sum(axis=2)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        out[q0 : q0 + 100] = np.take_along_axis(rows[q0 : q0 + 100], part, 1)
    return out


def torch_rerank(p: np.ndarray, codes: np.ndarray, rows: np.ndarray, k: int) -> object:
    assert torch is not None
    bits = torch.from_numpy(np.unpackbits(codes[rows], axis=2)).float()  # gather + unpack
    d = torch.cdist(torch.from_numpy(p)[:, None, :], bits, p=1)[:, 0, :]
    return torch.topk(d, k, dim=1, largest=False)


@numba.njit(cache=True, parallel=True)
def read_candidates(rows: np.ndarray, cw: np.ndarray, n_chunks: int) -> int:
    """Measure the floor of any exact rerank: every candidate's code read once, nothing scored.

    The gather rerank_rows does, in the same chunks. Returns a checksum so that nothing is skipped.
    """
    nq, nc = rows.shape
    per = (nq + n_chunks - 1) // n_chunks
    sums = np.zeros(n_chunks, np.uint64)
    for ch in numba.prange(n_chunks):
        buf_w = np.empty((nc, cw.shape[1]), np.uint64)
        buf_r = np.empty(nc, np.int64)
        s = np.uint64(0)
        for qi in range(ch * per, min(nq, ch * per + per)):
            n = K._gather_rows(rows[qi], cw, buf_w, buf_r)
            s ^= buf_w[n - 1, 0] if n > 0 else np.uint64(0)
        sums[ch] = s
    return int(sums.sum())


def read_floor(rows: np.ndarray, cw: np.ndarray) -> int:
    """read_candidates under rerank_rows's own threading rule (one thread for small work)."""
    with R._threads_for(rows.size):
        return int(read_candidates(rows, cw, R._n_chunks(rows.shape[0])))


# ---- reporting ----------------------------------------------------------------------------------
class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: object) -> None:
        self.rows.append(tuple(str(c) for c in cells))

    def show(self, header: tuple[str, ...]) -> None:
        rows = [header, *self.rows]
        w = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for j, r in enumerate(rows):
            print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
            if j == 0:
                print("  ".join("-" * x for x in w))
        self.rows = []


def first_call_times() -> str:
    """Import + first call of each kernel in a fresh interpreter (cache load, or compile if cold)."""
    code = (
        'import time; t0=time.perf_counter(); import numpy as np; import importlib; R = importlib.import_module("hashplug.rerank");'
        "t1=time.perf_counter(); p=np.random.rand(2,64).astype(np.float32);"
        "c=np.random.randint(0,256,(100,8)).astype(np.uint8); out=[];"
        "fs=[lambda: R.search_codes(p,c,3), lambda: R.search_codes(p,c,3,candidates=10),"
        "lambda: R.rerank(p,np.zeros((2,4),np.int64),np.zeros((2,4,8),np.uint8),2),"
        "lambda: R.hamming_topk(c[:2],c,3), lambda: R.asymmetric_distances(p,c)]\n"
        "for f in fs:\n t=time.perf_counter(); f(); out.append(time.perf_counter()-t)\n"
        "print('import %.2fs; first calls: exact %.2fs, two-stage %.2fs, rerank %.2fs, "
        "hamming_topk %.2fs, asymmetric_distances %.2fs' % (t1-t0, *out))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return (r.stdout or r.stderr).strip()


def bench_search(
    name: str, codes: np.ndarray, p: np.ndarray, a: argparse.Namespace, got: dict[str, float]
) -> None:
    """Run exhaustive / two-stage search on one data set, against FAISS, numpy and torch.

    The figures the targets are judged on go into ``got``.
    """
    k, rep = a.k, a.repeats
    all_threads = numba.config.NUMBA_NUM_THREADS
    n, nq = codes.shape[0], p.shape[0]
    cs = sorted({min(c, n) for c in (a.candidates or [10 * k, 1_000, 10_000])})
    qb = min(a.baseline_q, nq)
    pairs = nq * n
    bits = np.unpackbits(codes, axis=1).astype(np.float32)
    bits_t = torch.from_numpy(bits) if torch is not None else None
    qcodes = np.packbits(p > 0.5, axis=1)
    index = None
    if faiss is not None:
        index = faiss.IndexBinaryFlat(64)
        index.add(codes)
    ex_i, _ = R.search_codes(p, codes, k)
    recalls = []
    for cc in cs:
        two_i, _ = R.search_codes(p, codes, k, candidates=cc)
        r = np.mean([len(set(x) & set(y)) / k for x, y in zip(ex_i, two_i, strict=True)])
        recalls.append(f"C={cc:,}: {r:.4f}")
        got[f"{name} recall C={cc}"] = float(r)
    print(
        f"\n== {name}: {n:,} codes x {nq:,} queries, 64 bits, k={k}; two-stage recall@{k} vs "
        f"exact {', '.join(recalls)}; numpy/torch on {qb} queries, scaled =="
    )
    tab = Table()
    for threads in sorted({1, all_threads}):
        set_threads(threads)
        fns: dict[str, Callable[[], object]] = {
            "ex": lambda: R.search_codes(p, codes, k),
            **{f"two{cc}": (lambda cc=cc: R.search_codes(p, codes, k, candidates=cc)) for cc in cs},
            "np": lambda: numpy_topk(p[:qb], bits, k),
        }
        if index is not None:
            fns["faiss"] = lambda: index.search(qcodes, k)
        if torch is not None:
            fns["torch"] = lambda: torch_topk(p[:qb], bits_t, k)
        tm = median_times(fns, rep)
        t_ex, t_np = tm["ex"], tm["np"] * nq / qb
        t_f = tm.get("faiss")
        t_th = tm["torch"] * nq / qb if "torch" in tm else None
        lbl = f"{threads} thr"
        got[f"{name} {lbl} exact M/s/core"] = pairs / t_ex / 1e6 / threads
        if t_f:
            got[f"{name} {lbl} exact/FAISS"] = t_ex / t_f
            for cc in cs:
                got[f"{name} {lbl} two-stage C={cc}/FAISS"] = tm[f"two{cc}"] / t_f
        for meth, t in (
            ("ours exact", t_ex),
            *((f"ours two-stage C={cc:,}", tm[f"two{cc}"]) for cc in cs),
            ("FAISS symmetric", t_f),
            ("numpy BLAS exact", t_np),
            ("torch.cdist exact", t_th),
        ):
            if t is None:
                continue
            rate = pairs / t / 1e6
            tab.add(
                lbl,
                meth,
                f"{t * 1e3:.1f}",
                f"{rate:,.0f}",
                f"{rate / threads:,.0f}",
                f"{t / t_f:.2f}" if t_f else "-",
                f"{t_np / t:.1f}",
                f"{t_th / t:.1f}" if t_th else "-",
            )
    tab.show(
        (
            "threads",
            "method",
            "ms",
            "M/s",
            "M/s/core",
            "x FAISS time",
            "numpy/this",
            "torch/this",
        )
    )


def bench_rerank(
    name: str, codes: np.ndarray, p: np.ndarray, a: argparse.Namespace, got: dict[str, float]
) -> None:
    """Rerank of each query's Hamming top-C candidates (gather of their codes included)."""
    k, rep = a.k, a.repeats
    all_threads = numba.config.NUMBA_NUM_THREADS
    nq, cc = p.shape[0], min(a.rerank_c, codes.shape[0])
    rows, _ = R.hamming_topk(np.packbits(p > 0.5, axis=1), codes, cc)
    given = codes[rows]
    cw = R._words(codes)
    qb = min(a.baseline_q, nq)
    print(
        f"\n== rerank ({name}: {codes.shape[0]:,} codes): {nq:,} queries x {cc:,} candidates "
        f"(their Hamming top-{cc}, best first), k={k} =="
    )
    tab = Table()
    for threads in sorted({1, all_threads}):
        set_threads(threads)
        rr = lambda: R.rerank_rows(p, rows, codes, k)  # noqa: E731
        fns = {
            "rr": rr,
            "rr cold": rr,
            "read": lambda: read_floor(rows, cw),
            "r": lambda: R.rerank(p, rows, given, k),
            "gather": lambda: codes[rows],
            "np": lambda: numpy_rerank(p[:qb], codes, rows[:qb], k),
        }
        if torch is not None:
            fns["torch"] = lambda: torch_rerank(p[:qb], codes, rows[:qb], k)
        tm = median_times(fns, rep, prepare={"rr cold": sweep_caches})
        t_np = tm["np"] * nq / qb
        t_th = tm["torch"] * nq / qb if "torch" in tm else None
        got[f"{name} {threads} thr rerank numpy/ours"] = t_np / tm["rr"]
        got[f"{name} {threads} thr rerank numpy/ours ceiling"] = t_np / tm["read"]
        if t_th:
            got[f"{name} {threads} thr rerank torch/ours"] = t_th / tm["rr"]
            got[f"{name} {threads} thr rerank torch/ours ceiling"] = t_th / tm["read"]
        for meth, t in (
            ("ours rerank_rows (gather fused)", tm["rr"]),
            ("  same, caches swept before each call", tm["rr cold"]),
            ("ours rerank (codes given: no gather)", tm["r"]),
            ("floor: candidates' codes read, not scored", tm["read"]),
            ("numpy codes[rows] (the gather alone)", tm["gather"]),
            ("numpy |b-p| sum, gather included", t_np),
            ("torch.cdist p=1, gather included", t_th),
        ):
            if t is None:
                continue
            tab.add(
                f"{threads} thr",
                meth,
                f"{t * 1e3:.2f}",
                f"{nq * cc / t / 1e6:,.0f}",
                f"{t_np / t:.1f}",
                f"{t_th / t:.1f}" if t_th else "-",
            )
    tab.show(("threads", "method", "ms", "M cand/s", "numpy/this", "torch/this"))


def show_targets(got: dict[str, float], k: int) -> None:
    """Print the issue's targets next to the figures measured above (same run)."""
    all_t = numba.config.NUMBA_NUM_THREADS
    rows: list[tuple[str, str, str, str]] = []

    def check(label: str, key: str, ok: Callable[[float], bool], fmt: str) -> None:
        if key in got:
            v = got[key]
            cap = got.get(key + " ceiling")
            cap_s = "-" if cap is None else fmt.format(cap)
            rows.append((label, fmt.format(v), "met" if ok(v) else "MISSED", cap_s))

    for name in ("random", "real"):
        for thr in sorted({1, all_t}):
            t = f"{name} {thr} thr"
            check(
                f"{t}: exact, M codes/s/core >= 400",
                f"{t} exact M/s/core",
                lambda v: v >= 400,
                "{:,.0f}",
            )
            check(
                f"{t}: exact time <= 5x FAISS (stretch 2x)",
                f"{t} exact/FAISS",
                lambda v: v <= 5,
                "{:.2f}x",
            )
            check(
                f"{t}: rerank >= 20x numpy", f"{t} rerank numpy/ours", lambda v: v >= 20, "{:.1f}x"
            )
            check(
                f"{t}: rerank >= 50x torch.cdist",
                f"{t} rerank torch/ours",
                lambda v: v >= 50,
                "{:.1f}x",
            )
    c = 10 * k  # the two-stage target: candidates = 10·k on the real codes
    check(
        f"real: two-stage C={c} recall@{k} >= 0.99",
        f"real recall C={c}",
        lambda v: v >= 0.99,
        "{:.4f}",
    )
    for thr in sorted({1, all_t}):
        check(
            f"real {thr} thr: two-stage C={c} time <= 1.5x FAISS",
            f"real {thr} thr two-stage C={c}/FAISS",
            lambda v: v <= 1.5,
            "{:.2f}x",
        )
    print("\n== targets (issue 3), from the figures above ==")
    tab = Table()
    for r in rows:
        tab.add(*r)
    tab.show(("target", "measured", "", "ceiling"))
    print(
        "ceiling: the baseline's time over the floor row above (reading each candidate's code once,"
        " nothing scored),\nthe most any exact rerank could reach in this run"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--q", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=None,
        help="two-stage candidate counts (default: 10*k, 1000, 10000)",
    )
    ap.add_argument("--rerank-c", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-q", type=int, default=100, help="queries for numpy/torch (scaled)")
    a = ap.parse_args()
    all_threads = numba.config.NUMBA_NUM_THREADS
    kept = keep_freed_memory()
    print(
        f"machine: {os.cpu_count()} cores; numba {numba.__version__} ({all_threads} threads), ",
        end="",
    )
    print(
        f"faiss {getattr(faiss, '__version__', 'absent')}, torch {getattr(torch, '__version__', 'absent')}"
    )
    print("freed memory kept by malloc (stable baselines):", "yes" if kept else "no")
    print("first call in a fresh process:", first_call_times())

    sets = [("random", *random_data(a.n, a.q))]
    real = real_data(a.q)
    if real is not None:
        sets.append(("real", *real))
    else:
        print(f"(real data absent: {DATA})")

    got: dict[str, float] = {}
    for name, codes, p in sets:
        bench_search(name, codes, p, a, got)

    for name, codes, p in sets:
        bench_rerank(name, codes, p, a, got)
    show_targets(got, a.k)


if __name__ == "__main__":
    main()

"""``hashplug compare``: hashplug against each database's own quantization, on the user's data.

Every method sees the same L2-normalised vectors (cosine = dot product) and the same queries, and
is scored by recall@k against exact float cosine search (and mAP@k when the set has labels), RAM
and disk bytes per vector measured from the engine, one-query latency (p50/p99), QPS, build time and
a monthly cost per million vectors. Engines' native options come from each adapter's ``native``
module (see :mod:`hashplug.bench.native`), imported by name: an ImportError means "not installed".
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from .datasets import EmbeddingSet
from .experiments import HASHERS, fit_hasher, float_topk
from .metrics import map_at_k, recall_at_k
from .native import CompareData, MethodRun, dir_bytes, time_queries

__all__ = [
    "CompareConfig",
    "ENGINE_MODULES",
    "HASHPLUG_HASHERS",
    "load_compare_set",
    "catalogue",
    "run_compare",
    "pareto_front",
    "recommend",
]

#: Engine -> the adapter module that runs its native options.
ENGINE_MODULES: dict[str, str] = {
    "lancedb": "hashplug_lancedb.native",
    "qdrant-edge": "hashplug_qdrant.native",
    "milvus-lite": "hashplug_milvus.native",
    "milvus-server": "hashplug_milvus.native",
}
#: Short hasher names used in method names (``hashplug:itq-64``) -> HASHERS keys.
HASHPLUG_HASHERS: dict[str, str] = {
    "hb": "hashing-baseline",
    "itq": "itq",
    "hashcoder": "hashcoder-neighbors",
    "mb": "multibit",
}
#: Engine-free references (engine column in brackets).
REFERENCES: dict[str, str] = {
    "exact:float": "numpy",
    "faiss:binary-flat": "faiss",
    "faiss:rabitq": "faiss",
    "faiss:rabitq+refine": "faiss",
    "st:binary+rescore": "sentence-transformers",
}
#: Known but absent everywhere here: listed so the report says so.
ABSENT_ELSEWHERE = {
    "milvus:ivf_rabitq": "RaBitQ is not in Milvus 2.3.5 nor Milvus Lite 2.5 (it came in Milvus 2.6)"
}
GIB = 2**30


@dataclass
class CompareConfig:
    """What ``run_compare`` runs. Prices: USD per GiB-month of RAM and of disk."""

    k: int = 10
    bits: Sequence[int] = (32, 64, 128, 256)
    hashers: Sequence[str] = ("hb", "itq", "hashcoder")
    engines: Sequence[str] = ("lancedb", "qdrant-edge", "milvus-lite")
    hashplug_engines: Sequence[str] = ("memory", "lancedb")
    lancedb_hashers: Sequence[str] = ("itq",)  # hashplug through LanceDB: these hashers only
    # scoring="cosine" (``hashplug:itq-64-cos``, memory store, codes alone): these hashers
    cosine_hashers: Sequence[str] = ("itq", "mb")
    methods: Sequence[str] | None = None  # names or glob patterns; None = everything available
    queries: int = 1000
    oversample: int = 10
    candidates: int = 1000  # "+originals": Hamming top-C ...
    shortlist: int = 100  # ... asymmetric rerank to S, exact float rescoring of the S
    ram_price: float = 5.0
    disk_price: float = 0.10
    target_recall: float = 0.95
    seed: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"--target-recall must be in (0, 1], got {self.target_recall}")
        if self.k < 1 or self.queries < 1:
            raise ValueError(
                f"k and queries must be positive, got k={self.k}, queries={self.queries}"
            )
        for b in self.bits:
            if b <= 0 or b % 8:
                raise ValueError(f"bits must be positive multiples of 8, got {b}")
        for h in (*self.hashers, *self.lancedb_hashers, *self.cosine_hashers):
            if h not in HASHPLUG_HASHERS:
                raise ValueError(f"unknown hasher {h!r}; choose from {', '.join(HASHPLUG_HASHERS)}")
        for e in self.engines:
            if e not in ENGINE_MODULES:
                raise ValueError(f"unknown engine {e!r}; choose from {', '.join(ENGINE_MODULES)}")
        if self.ram_price < 0 or self.disk_price < 0:
            raise ValueError("prices must be >= 0")
        if self.shortlist < self.k or self.candidates < self.shortlist:
            raise ValueError(
                f"need k <= shortlist <= candidates, got {self.k}, {self.shortlist}, {self.candidates}"
            )


def load_compare_set(path: str | os.PathLike[str]) -> EmbeddingSet:
    """Load an ``.npz`` embedding set whose labels are optional; NaN/inf rows are a ValueError."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no embedding set at {p}")
    with np.load(p, allow_pickle=False) as d:
        for key in ("db_x", "q_x"):
            if key not in d.files:
                raise ValueError(f"{p} lacks array {key!r} (has {d.files})")
        db_x = np.ascontiguousarray(d["db_x"], np.float32)
        q_x = np.ascontiguousarray(d["q_x"], np.float32)
        train = np.ascontiguousarray(d["train_x"], np.float32) if "train_x" in d.files else db_x
        labelled = "db_y" in d.files and "q_y" in d.files
        db_y = np.asarray(d["db_y"]).astype(np.int64) if labelled else np.zeros(0, np.int64)
        q_y = np.asarray(d["q_y"]).astype(np.int64) if labelled else np.zeros(0, np.int64)
        info = str(d["info"]) if "info" in d.files else ""
    if db_x.ndim != 2 or q_x.ndim != 2 or db_x.shape[1] != q_x.shape[1] or train.ndim != 2:
        raise ValueError(f"{p}: db_x {db_x.shape} and q_x {q_x.shape} must be (n, d) with equal d")
    for name, a in (("db_x", db_x), ("q_x", q_x), ("train_x", train)):
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"{p}: {name} has NaN or inf in {rows.size} rows (first: {rows[:5].tolist()})"
            )
    if labelled and (db_y.shape[0] != db_x.shape[0] or q_y.shape[0] != q_x.shape[0]):
        raise ValueError(f"{p}: label arrays do not match the embeddings")
    return EmbeddingSet(db_x, db_y, q_x, q_y, train, info)


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


# -- the catalogue ---------------------------------------------------------------------------------
@dataclass
class Entry:
    method: str
    engine: str
    run: Callable[[CompareData, Path], MethodRun] | None  # None: unavailable
    reason: str = ""  # why unavailable


def _hashplug_entries(cfg: CompareConfig, dim: int) -> list[Entry]:
    out = []
    for engine in cfg.hashplug_engines:
        names = cfg.hashers if engine == "memory" else cfg.lancedb_hashers
        for h in names:
            for nb in cfg.bits:
                for plus in ("", "+originals"):
                    m = f"hashplug:{h}-{nb}{plus}"
                    if nb > dim:
                        out.append(Entry(m, engine, None, f"{nb} bits > dimension {dim}"))
                        continue
                    out.append(Entry(m, engine, _HashplugRunner(cfg, h, nb, engine, bool(plus))))
    if "memory" in cfg.hashplug_engines:
        for h in cfg.cosine_hashers:
            for nb in cfg.bits:
                m = f"hashplug:{h}-{nb}-cos"
                run = _HashplugRunner(cfg, h, nb, "memory", False, scoring="cosine")
                out.append(Entry(m, "memory", run))
    return out


def catalogue(cfg: CompareConfig, dim: int) -> tuple[list[Entry], dict[str, str]]:
    """Every method this installation knows, available or not, and each engine's version."""
    entries = [Entry(m, e, _REFERENCE_RUNNERS[m]) for m, e in REFERENCES.items()]
    versions: dict[str, str] = {}
    for engine in cfg.engines:
        try:
            mod = importlib.import_module(ENGINE_MODULES[engine])
        except ImportError as e:
            versions[engine] = f"not installed ({e})"
            continue
        versions[engine] = mod.engine_version(engine)
        for method, why in mod.native_methods(engine).items():
            why = why or None
            if why is None and method in ABSENT_ELSEWHERE and engine.startswith("milvus"):
                why = f"not in this version ({ABSENT_ELSEWHERE[method]})"
            runner = None if why else _native_runner(mod, engine, method)
            entries.append(Entry(method, engine, runner, why or ""))
    entries += _hashplug_entries(cfg, dim)
    return entries, versions


def _native_runner(mod: Any, engine: str, method: str) -> Callable[[CompareData, Path], MethodRun]:
    return lambda data, work: mod.run_native(engine, method, data, work)


def _select(entries: list[Entry], patterns: Sequence[str] | None) -> list[Entry]:
    """Return the entries named by ``patterns`` (exact names or globs).

    Asking for an unknown name, or by exact name for an option the installed engine lacks, is a
    ValueError.
    """
    if not patterns:
        return entries
    known = sorted({e.method for e in entries})
    chosen: list[Entry] = []
    for pat in patterns:
        hit = [e for e in entries if fnmatch.fnmatchcase(e.method, pat)]
        if not hit:
            raise ValueError(
                f"unknown method {pat!r}; known: {', '.join(known[:12])}, ... "
                "(globs such as 'lancedb:*' or 'hashplug:itq-*' work)"
            )
        if not any(ch in pat for ch in "*?[") and all(e.run is None for e in hit):
            raise ValueError(f"{pat} is unavailable: {hit[0].reason} ({hit[0].engine})")
        chosen += [e for e in hit if e not in chosen]
    return chosen


# -- hashplug's own methods ------------------------------------------------------------------------
class _HashplugRunner:
    """Run hashplug through HashIndex on ``memory://`` or LanceDB.

    Hamming top-(oversample * k) -> asymmetric rerank (plain), or Hamming top-C -> asymmetric rerank
    to S -> exact float rescoring of the S with the originals (``+originals``). Originals: in RAM
    next to the memory store; in a float32 file on disk (read by row) next to LanceDB.
    ``scoring="cosine"``: the rerank is the nearest-neighbour estimator with the per-vector factors
    (``-cos`` methods).
    """

    _fitted: dict[tuple[int, str, int], tuple[Any, float]] = {}

    def __init__(
        self,
        cfg: CompareConfig,
        hasher: str,
        n_bits: int,
        engine: str,
        originals: bool,
        scoring: str = "asymmetric",
    ):
        self.cfg, self.hasher, self.n_bits = cfg, hasher, n_bits
        self.engine, self.originals, self.scoring = engine, originals, scoring

    def _fit(self, data: CompareData) -> tuple[Any, float]:
        key = (id(data), self.hasher, self.n_bits)
        if key not in self._fitted:
            h = HASHERS[HASHPLUG_HASHERS[self.hasher]](self.n_bits, self.cfg.seed)
            t = time.perf_counter()
            ds = EmbeddingSet(
                data.train_x, np.zeros(0, np.int64), data.q_x, np.zeros(0, np.int64), data.train_x
            )
            fit_hasher(h, ds, progress=False)
            self._fitted[key] = (h, time.perf_counter() - t)
        return self._fitted[key]

    def __call__(self, data: CompareData, work: Path) -> MethodRun:
        from ..index import HashIndex

        cfg, k = self.cfg, data.k
        hasher, fit_s = self._fit(data)
        uri = "memory://" if self.engine == "memory" else f"lancedb://{work}/codes"
        t = time.perf_counter()
        index = HashIndex(uri, hasher)
        index.add(data.db_x, np.arange(data.n, dtype=np.int64), progress=False, scoring=self.scoring)
        if index.store.supports_native_index:
            index.store.create_index()  # type: ignore[attr-defined]
        originals: NDArray[np.float32] | None = None
        if self.originals:
            if self.engine == "memory":
                originals = data.db_x
            else:  # originals on disk, rows read at rescoring
                path = work / "originals.f32"
                mm = np.lib.format.open_memmap(path, "w+", np.float32, data.db_x.shape)
                mm[:] = data.db_x
                mm.flush()
                del mm
                originals = np.load(path, mmap_mode="r")
        build_s = fit_s + time.perf_counter() - t
        s_k, c_over = cfg.shortlist, max(1, cfg.candidates // cfg.shortlist)

        def search(q: NDArray[np.float32]) -> NDArray[np.int64]:
            if originals is None:
                return index.search(q, k=k, oversample=cfg.oversample, scoring=self.scoring).ids[0]
            short = index.search(q, k=s_k, oversample=c_over).ids[0]
            short = short[short >= 0]
            sims = np.asarray(originals[np.sort(short)]) @ q[0]
            order = np.lexsort((np.sort(short), -sims))[:k]
            return np.sort(short)[order]

        ids, ms = time_queries(search, data.q_x, k)
        code_bytes = hasher.n_bits // 8
        if self.engine == "memory":
            st = index.store._state  # type: ignore[attr-defined]
            corr = st.get("corr")  # the scoring="cosine" factors, kept with linear hashers
            ram = float(
                st["codes"].nbytes + st["ids"].nbytes + (0 if corr is None else corr.nbytes)
            )
            how = "codes + ids (+ cosine factors) arrays of the store"
            disk = 0.0
            if self.originals:
                ram += data.db_x.nbytes
                how += " + float32 originals in RAM"
        else:
            lance = [p for p in Path(work).rglob("*.lance") if p.is_dir()]
            idx = sum(dir_bytes(p / "_indices") for p in lance if (p / "_indices").exists())
            ram = float(idx)
            how = "LanceDB index files (IVF_FLAT hamming + id BTree)"
            disk = float(dir_bytes(Path(work)))
            if self.originals:
                how += "; originals in a float32 file on disk"
        index.store.drop()
        index.close()
        params = {
            "bits": self.n_bits,
            "code_bytes": code_bytes,
            "hasher": HASHPLUG_HASHERS[self.hasher],
            "scoring": self.scoring,
        }
        if self.originals:
            params.update(candidates=cfg.candidates, shortlist=cfg.shortlist)
        else:
            params.update(candidates=cfg.oversample * k)
        tail = ("+originals" if self.originals else "") + ("-cos" if self.scoring == "cosine" else "")
        return MethodRun(
            f"hashplug:{self.hasher}-{self.n_bits}{tail}",
            self.engine,
            ids,
            ms,
            build_s,
            ram,
            disk,
            how,
            params,
        )


# -- engine-free references ------------------------------------------------------------------------
def _exact(data: CompareData, work: Path) -> MethodRun:
    db = data.db_x  # unit rows: cosine = dot product

    def search(q: NDArray[np.float32]) -> NDArray[np.int64]:
        sim = db @ q[0]
        top = np.argpartition(-sim, data.k - 1)[: data.k]
        return top[np.lexsort((top, -sim[top]))]

    ids, ms = time_queries(search, data.q_x, data.k)
    return MethodRun("exact:float", "numpy", ids, ms, 0.0, float(db.nbytes), 0.0, "float32 matrix")


def _faiss_binary(data: CompareData, work: Path) -> MethodRun:
    import faiss

    mean = data.train_x.mean(axis=0)
    t = time.perf_counter()
    index = faiss.IndexBinaryFlat(data.dim)
    index.add(np.packbits(data.db_x - mean > 0, axis=1))
    build_s = time.perf_counter() - t

    def search(q: NDArray[np.float32]) -> NDArray[np.int64]:
        return index.search(np.packbits(q - mean > 0, axis=1), data.k)[1][0]

    ids, ms = time_queries(search, data.q_x, data.k)
    ram = float(faiss.serialize_index_binary(index).nbytes)
    return MethodRun(
        "faiss:binary-flat",
        "faiss",
        ids,
        ms,
        build_s,
        ram,
        0.0,
        "serialized index (sign bits of centred vectors)",
    )


def _faiss_rabitq(refine: bool) -> Callable[[CompareData, Path], MethodRun]:
    def run(data: CompareData, work: Path) -> MethodRun:
        import faiss

        t = time.perf_counter()
        base = faiss.IndexRaBitQ(data.dim, faiss.METRIC_INNER_PRODUCT)
        index: Any = faiss.IndexRefineFlat(base) if refine else base
        if refine:
            index.k_factor = 10.0
        index.train(data.train_x)
        index.add(data.db_x)
        build_s = time.perf_counter() - t

        def search(q: NDArray[np.float32]) -> NDArray[np.int64]:
            return index.search(q, data.k)[1][0]

        ids, ms = time_queries(search, data.q_x, data.k)
        ram = float(faiss.serialize_index(index).nbytes)
        how = "serialized index" + (" (RaBitQ codes + float32 originals)" if refine else "")
        name = "faiss:rabitq+refine" if refine else "faiss:rabitq"
        params: dict[str, object] = {"k_factor": 10} if refine else {}
        return MethodRun(name, "faiss", ids, ms, build_s, ram, 0.0, how, params)

    return run


def _st_binary(data: CompareData, work: Path) -> MethodRun:
    """Run sentence-transformers' binary quantization + rescoring.

    As its semantic_search_faiss: Hamming top-(4k) of the unsigned binary codes, rescored by the
    float query's dot product with the ±1 codes.
    """
    import faiss
    from sentence_transformers.util.quantization import quantize_embeddings

    mult = 4
    t = time.perf_counter()
    codes: Any = quantize_embeddings(data.db_x, precision="ubinary")
    index = faiss.IndexBinaryFlat(data.dim)
    index.add(codes)
    build_s = time.perf_counter() - t

    def search(q: NDArray[np.float32]) -> NDArray[np.int64]:
        qb: Any = quantize_embeddings(q, precision="ubinary")
        cand = index.search(qb, data.k * mult)[1][0]
        cand = cand[cand >= 0]
        signs = np.unpackbits(codes[cand], axis=1).astype(np.float32) * 2 - 1
        return cand[np.argsort(-(signs @ q[0]), kind="stable")[: data.k]]

    ids, ms = time_queries(search, data.q_x, data.k)
    ram = float(faiss.serialize_index_binary(index).nbytes)
    return MethodRun(
        "st:binary+rescore",
        "sentence-transformers",
        ids,
        ms,
        build_s,
        ram,
        0.0,
        "binary codes (faiss IndexBinaryFlat)",
        {"rescore_multiplier": mult},
    )


_REFERENCE_RUNNERS: dict[str, Callable[[CompareData, Path], MethodRun]] = {
    "exact:float": _exact,
    "faiss:binary-flat": _faiss_binary,
    "faiss:rabitq": _faiss_rabitq(False),
    "faiss:rabitq+refine": _faiss_rabitq(True),
    "st:binary+rescore": _st_binary,
}


# -- frontier and recommendation -------------------------------------------------------------------
def pareto_front(rows: list[dict[str, Any]], cost_key: str) -> list[int]:
    """Return the indices of the rows not dominated in (lower ``cost_key``, higher recall).

    Ordered by cost.
    """
    order = sorted(range(len(rows)), key=lambda i: (rows[i][cost_key], -rows[i]["recall_at_10"]))
    front, best = [], -1.0
    for i in order:
        if rows[i]["recall_at_10"] > best:
            front.append(i)
            best = rows[i]["recall_at_10"]
    return front


def recommend(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Return the cheapest and the fastest option at ``target`` recall.

    Cheapest: by monthly USD per million, then p50.
    """
    ok = [r for r in rows if r["recall_at_10"] >= target]
    if not ok:
        best = max(rows, key=lambda r: (r["recall_at_10"], -r["usd_month_per_million"]))
        return {
            "target_recall": target,
            "reached": False,
            "closest": _label(best),
            "closest_recall": best["recall_at_10"],
            "text": (
                f"No option reaches recall@10 >= {target:.2f}; the closest is {_label(best)} "
                f"at {best['recall_at_10']:.3f}."
            ),
        }
    cheap = min(ok, key=lambda r: (r["usd_month_per_million"], r["p50_ms"]))
    fast = min(ok, key=lambda r: (r["p50_ms"], r["usd_month_per_million"]))
    text = (
        f"{len(ok)} of {len(rows)} options reach recall@10 >= {target:.2f}. Cheapest: "
        f"{_label(cheap)} ({cheap['bytes_per_vector']:.0f} B/vector RAM, "
        f"${cheap['usd_month_per_million']:.3f}/M/month, p50 {cheap['p50_ms']:.2f} ms, recall "
        f"{cheap['recall_at_10']:.3f}). Fastest: {_label(fast)} (p50 {fast['p50_ms']:.2f} ms, "
        f"{fast['bytes_per_vector']:.0f} B/vector, recall {fast['recall_at_10']:.3f})."
    )
    hp = [r for r in ok if r["method"].startswith("hashplug:")]
    nat = [r for r in ok if not r["method"].startswith(("hashplug:", "exact:"))]
    out: dict[str, Any] = {
        "target_recall": target,
        "reached": True,
        "cheapest": _label(cheap),
        "fastest": _label(fast),
    }
    if hp and nat:
        h = min(hp, key=lambda r: r["bytes_per_vector"])
        n = min(nat, key=lambda r: r["bytes_per_vector"])
        ratio = n["bytes_per_vector"] / max(h["bytes_per_vector"], 1e-9)
        lat = n["p50_ms"] / max(h["p50_ms"], 1e-9)
        less = f"{ratio:.2g}x less" if ratio >= 1 else f"{1 / ratio:.2g}x more"
        faster = f"{lat:.2g}x faster" if lat >= 1 else f"{1 / lat:.2g}x slower"
        text += (
            f" At this recall the leanest hashplug option ({_label(h)}) uses {less} RAM than "
            f"the leanest other one ({_label(n)}) and answers {faster} (p50)."
        )
        out.update(bytes_ratio=ratio, latency_ratio=lat)
    out["text"] = text
    return out


def _label(r: dict[str, Any]) -> str:
    return f"{r['method']} [{r['engine']}]"


def _row(
    run: MethodRun,
    data: CompareData,
    exact: NDArray[np.int64],
    labels: tuple[Any, Any] | None,
    cfg: CompareConfig,
) -> dict[str, Any]:
    ram = run.ram_bytes / data.n
    disk = run.disk_bytes / data.n
    ram_usd = ram * 1e6 / GIB * cfg.ram_price
    disk_usd = disk * 1e6 / GIB * cfg.disk_price
    row: dict[str, Any] = {
        "method": run.method,
        "engine": run.engine,
        "bytes_per_vector": ram,
        "disk_bytes_per_vector": disk,
        "recall_at_10": recall_at_k(run.ids[:, :10], exact[:, :10], min(10, data.k)),
        "p50_ms": float(np.percentile(run.lat_ms, 50)),
        "p99_ms": float(np.percentile(run.lat_ms, 99)),
        "qps": float(1e3 / run.lat_ms.mean()),
        "build_s": run.build_s,
        "ram_usd_month_per_million": ram_usd,
        "disk_usd_month_per_million": disk_usd,
        "usd_month_per_million": ram_usd + disk_usd,
        "ram_counted_as": run.ram_how,
        "params": run.params,
    }
    if labels is not None:
        row[f"map_at_{data.k}"] = map_at_k(run.ids, labels[0], labels[1])
    return row


def run_compare(
    ds: EmbeddingSet | str | os.PathLike[str], cfg: CompareConfig | None = None
) -> dict[str, Any]:
    """Run every selected method on one embedding set; return the results dict.

    See the README: ``frontier`` rows, ``unavailable``, ``versions``, ``recommendation``.
    """
    cfg = cfg or CompareConfig()
    cfg.validate()
    path = None if isinstance(ds, EmbeddingSet) else str(ds)
    if not isinstance(ds, EmbeddingSet):
        ds = load_compare_set(ds)
    nq = min(cfg.queries, ds.q_x.shape[0])
    data = CompareData(_unit(ds.db_x), _unit(ds.q_x[:nq]), _unit(ds.train_x), cfg.k)
    labelled = ds.db_y.size > 0 and ds.q_y.size > 0
    labels = (ds.db_y, ds.q_y[:nq]) if labelled else None
    entries, versions = catalogue(cfg, data.dim)
    chosen = _select(entries, cfg.methods)
    runnable = [e for e in chosen if e.run is not None]
    unavailable = [
        {"method": e.method, "engine": e.engine, "reason": e.reason}
        for e in chosen
        if e.run is None
    ]
    exact = float_topk(data.q_x, data.db_x, max(10, cfg.k))
    _HashplugRunner._fitted.clear()  # keyed by id(data): never reuse across runs
    rows, failed = [], []
    t0 = time.perf_counter()
    for e in tqdm(runnable, desc="compare", disable=not cfg.progress):
        work = Path(tempfile.mkdtemp(prefix="hashplug-compare-"))
        try:
            assert e.run is not None
            t = time.perf_counter()
            rows.append(_row(e.run(data, work), data, exact, labels, cfg))
            rows[-1]["wall_s"] = time.perf_counter() - t  # build + all queries
        except Exception as ex:  # noqa: BLE001 - one engine's failure must not hide the others
            failed.append(
                {"method": e.method, "engine": e.engine, "error": f"{type(ex).__name__}: {ex}"}
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _close_engines(cfg.engines)
    _HashplugRunner._fitted.clear()
    if not rows:
        raise ValueError("no method ran: " + "; ".join(f["error"] for f in failed)[:300])
    for key, flag in (("bytes_per_vector", "on_ram_front"), ("p50_ms", "on_latency_front")):
        front = set(pareto_front(rows, key))
        for i, r in enumerate(rows):
            r[flag] = i in front
    return {
        "dataset": {
            "path": path,
            "info": ds.info,
            "n_db": data.n,
            "n_query": nq,
            "dim": data.dim,
            "labelled": labelled,
        },
        "config": {
            "k": cfg.k,
            "bits": list(cfg.bits),
            "hashers": list(cfg.hashers),
            "engines": list(cfg.engines),
            "oversample": cfg.oversample,
            "candidates": cfg.candidates,
            "shortlist": cfg.shortlist,
            "ram_price": cfg.ram_price,
            "disk_price": cfg.disk_price,
            "target_recall": cfg.target_recall,
            "methods": list(cfg.methods) if cfg.methods else None,
        },
        "versions": versions,
        "frontier": rows,
        "unavailable": unavailable,
        "failed": failed,
        "recommendation": recommend(rows, cfg.target_recall),
        "elapsed_s": time.perf_counter() - t0,
        **cfg.extra,
    }


def _close_engines(engines: Sequence[str]) -> None:
    for engine in engines:
        try:
            mod = importlib.import_module(ENGINE_MODULES[engine])
        except ImportError:
            continue
        close = getattr(mod, "close_collections", None)
        if callable(close):
            close()

"""The seed paper's experiments (Table 1 and ablations) on an embedding set.

Every mAP is x100 and reported as mean ± std over seeds. Binary searches are exhaustive and exact
(``hashplug.search_codes``); symmetric search is the same kernel with binary query "probabilities",
whose asymmetric distance is exactly the Hamming distance. Ties go to the smaller database index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from ..hashers import ITQ, LSH, HashCoder, Hasher, HashingBaseline, MultiBitBaseline
from ..scoring import SCORINGS, ranking_probs
from .datasets import EmbeddingSet
from .metrics import map_at_k

__all__ = [
    "HASHERS",
    "LIBRARY_HASHERS",
    "DEFAULT_HASHERS",
    "PaperConfig",
    "run_paper",
    "fit_hasher",
    "float_topk",
    "binary_topk",
    "summarise",
]

#: The seed paper's settings, kept so that the paper table reproduces it: plain sigmoid
#: queries and HashCoder's 5 epochs (the library defaults are per-bit calibration and "auto").
PAPER = "none"  # the paper's calibration
PAPER_EPOCHS = 5

#: Hasher name -> factory(n_bits, seed). The names are the CLI's ``--hashers`` values.
HASHERS: dict[str, Callable[[int, int], Hasher]] = {
    "hashing-baseline": lambda nb, s: HashingBaseline(nb, seed=s, calibration=PAPER),
    "itq": lambda nb, s: ITQ(nb, seed=s, calibration=PAPER),
    "lsh": lambda nb, s: LSH(nb, seed=s, calibration=PAPER),
    "hashcoder-neighbors": lambda nb, s: HashCoder(
        nb, views="neighbors", seed=s, calibration=PAPER, epochs=PAPER_EPOCHS
    ),
    "hashcoder-noise": lambda nb, s: HashCoder(
        nb, views="noise", seed=s, calibration=PAPER, epochs=PAPER_EPOCHS
    ),
    # needs train_y
    "hashcoder-labels": lambda nb, s: HashCoder(
        nb, views="labels", seed=s, calibration=PAPER, epochs=PAPER_EPOCHS
    ),
    # made for scoring="cosine" (no calibration setting; allocation "auto")
    "multibit": lambda nb, s: MultiBitBaseline(nb, seed=s),
}
#: The same names with the library's defaults (per-bit calibration, HashCoder epochs "auto"),
#: for fitting hashers to use rather than to reproduce the paper.
LIBRARY_HASHERS: dict[str, Callable[[int, int], Hasher]] = {
    "hashing-baseline": lambda nb, s: HashingBaseline(nb, seed=s),
    "itq": lambda nb, s: ITQ(nb, seed=s),
    "lsh": lambda nb, s: LSH(nb, seed=s),
    "hashcoder-neighbors": lambda nb, s: HashCoder(nb, views="neighbors", seed=s),
    "hashcoder-noise": lambda nb, s: HashCoder(nb, views="noise", seed=s),
    "hashcoder-labels": lambda nb, s: HashCoder(nb, views="labels", seed=s),
    "multibit": lambda nb, s: MultiBitBaseline(nb, seed=s),
}
#: The training-free hashers run by default (the HashCoders need torch and train for seconds each).
DEFAULT_HASHERS = ("hashing-baseline", "itq", "lsh")
#: The paper's ablations of Hashing-Baseline.
ABLATIONS: dict[str, Callable[[int, int], Hasher]] = {
    "no-rotation": lambda nb, s: HashingBaseline(nb, seed=s, rotate=False, calibration=PAPER),
    "no-pca": lambda nb, s: HashingBaseline(nb, seed=s, pca=False, calibration=PAPER),
}


@dataclass
class PaperConfig:
    """Settings of the paper's table: hashers, code lengths, k and seeds."""

    hashers: Sequence[str] = ("hashing-baseline", "itq", "lsh")
    bits: Sequence[int] = (16, 32, 64)
    k: int = 1000
    seeds: int = 10
    ablations: bool = True
    other_train: NDArray[np.float32] | None = None  # for the "PCA fitted on another set" ablation
    other_name: str = ""
    progress: bool = True
    scoring: str = "asymmetric"  # query-side scorer: "asymmetric", "bce" or "sym-bce"
    extra: dict[str, Any] = field(default_factory=dict)


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def float_topk(
    q: NDArray[np.float32], db: NDArray[np.float32], k: int, block: int = 512
) -> NDArray[np.int64]:
    """Exact cosine top-k (Q, k) database indices, ties by smaller index, in query blocks."""
    qn, dn = _unit(q), _unit(db)
    k = min(k, db.shape[0])
    out = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], block):
        sim = qn[s : s + block] @ dn.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.lexsort((idx, -np.take_along_axis(sim, idx, 1)), axis=1)
        out[s : s + block] = np.take_along_axis(idx, order, 1)
    return out


def fit_hasher(hasher: Hasher, ds: EmbeddingSet, *, progress: bool = True) -> Hasher:
    """Fit on ``ds.train_x``, with ``ds.train_y`` for a supervised HashCoder."""
    if isinstance(hasher, HashCoder):
        if hasher.views == "labels" and ds.train_y is None:
            raise ValueError("a supervised hasher needs training labels (train_y) in the set")
        return hasher.fit(ds.train_x, ds.train_y, progress=progress)
    return hasher.fit(ds.train_x)


def binary_topk(
    hasher: Hasher,
    ds: EmbeddingSet,
    k: int,
    *,
    symmetric: bool,
    codes: NDArray[np.uint8] | None = None,
    scoring: str = "asymmetric",
) -> NDArray[np.int64]:
    """Return the exhaustive binary top-k.

    Symmetric (binary queries) or with sigmoid queries scored by ``scoring`` (asymmetric Hamming,
    BCE or symmetric BCE; see :mod:`hashplug.scoring`).
    """
    from ..rerank import search_codes

    db_codes = hasher.encode(ds.db_x) if codes is None else codes
    p = hasher.query(ds.q_x)
    if symmetric:
        p = (p > 0.5).astype(np.float32)
    else:
        p = ranking_probs(p, scoring)  # same ranking as the scorer, through the asymmetric kernel
    ids, _ = search_codes(p, db_codes, k)
    return ids


def _stats(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "values": [float(v) for v in a]}


def run_paper(ds: EmbeddingSet, cfg: PaperConfig) -> dict[str, Any]:
    """Measure the paper's table; return the ``map`` and ``ablations`` parts of the report's JSON.

    Original cosine, PCA-float cosine, binary symmetric/asymmetric per hasher and length, and the
    ablations.
    """
    k = cfg.k
    y_db, y_q = ds.db_y, ds.q_y
    if cfg.scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {cfg.scoring!r}; choose from {', '.join(SCORINGS)}")
    out: dict[str, Any] = {"k": k, "seeds": cfg.seeds, "scoring": cfg.scoring}
    out["float_cosine"] = map_at_k(float_topk(ds.q_x, ds.db_x, k), y_db, y_q)
    jobs = [(h, nb) for h in cfg.hashers for nb in cfg.bits]
    bar = tqdm(total=len(jobs) * cfg.seeds, desc="paper table", disable=not cfg.progress)
    per: dict[str, Any] = {}
    pca_float: dict[str, float] = {}
    for name, nb in jobs:
        if name not in HASHERS:
            raise ValueError(f"unknown hasher {name!r}; choose from {', '.join(HASHERS)}")
        sym, asym = [], []
        for seed in range(cfg.seeds):
            h = fit_hasher(HASHERS[name](nb, seed), ds, progress=cfg.progress)
            codes = h.encode(ds.db_x)
            top = binary_topk(h, ds, k, symmetric=False, codes=codes, scoring=cfg.scoring)
            asym.append(map_at_k(top, y_db, y_q))
            sym.append(map_at_k(binary_topk(h, ds, k, symmetric=True, codes=codes), y_db, y_q))
            if name == "hashing-baseline" and seed == 0:
                # PCA float: cosine on the centred top-n_bits PCA coordinates (rotation-invariant).
                assert isinstance(h, HashingBaseline) and h.components_ is not None
                assert h.mean_ is not None
                proj = h.components_.T
                zq, zd = (ds.q_x - h.mean_) @ proj, (ds.db_x - h.mean_) @ proj
                pca_float[str(nb)] = map_at_k(float_topk(zq, zd, k), y_db, y_q)
            bar.update()
        per.setdefault(name, {})[str(nb)] = {
            "binary_symmetric": _stats(sym),
            "binary_asymmetric": _stats(asym),
        }
    bar.close()
    out["pca_float"] = pca_float
    out["hashers"] = per
    if cfg.ablations:
        out["ablations"] = _ablations(ds, cfg)
    return out


def _ablations(ds: EmbeddingSet, cfg: PaperConfig) -> dict[str, Any]:
    """Return the mAP of Hashing-Baseline variants.

    No rotation, no PCA, and PCA fitted on another set.
    """
    variants: dict[str, tuple[Callable[[int, int], Hasher], NDArray[np.float32]]] = {
        name: (make, ds.train_x) for name, make in ABLATIONS.items()
    }
    if cfg.other_train is not None:
        if cfg.other_train.shape[1] != ds.db_x.shape[1]:
            raise ValueError(
                f"the other training set has dimension {cfg.other_train.shape[1]}, "
                f"not {ds.db_x.shape[1]}"
            )
        variants[f"pca-on-{cfg.other_name or 'other'}"] = (
            HASHERS["hashing-baseline"],
            cfg.other_train,
        )
    res: dict[str, Any] = {}
    for name, (make, train) in variants.items():
        res[name] = {}
        for nb in cfg.bits:
            vals = [
                map_at_k(
                    binary_topk(make(nb, s).fit(train), ds, cfg.k, symmetric=False), ds.db_y, ds.q_y
                )
                for s in range(cfg.seeds)
            ]
            res[name][str(nb)] = _stats(vals)
    return res


def summarise(value: dict[str, Any] | float) -> str:
    """'63.52 ± 0.21' for a stats dict, '66.35' for a number."""
    if isinstance(value, dict):
        return f"{value['mean']:.2f} ± {value['std']:.2f}"
    return f"{value:.2f}"

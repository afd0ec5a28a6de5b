"""``hashplug bench``: the paper's table plus the per-backend production figures, as one report."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends import (
    BackendConfig,
    available_backends,
    exact_references,
    float_baseline,
    run_backend,
)
from .datasets import load_embeddings
from .experiments import HASHERS, PaperConfig, run_paper
from .report import write_report

__all__ = ["run_bench"]


def run_bench(
    embeddings: str | Path,
    out: str | Path,
    *,
    hashers: Sequence[str] = ("hashing-baseline", "itq", "lsh"),
    bits: Sequence[int] = (16, 32, 64),
    k: int = 1000,
    seeds: int = 10,
    backends: Sequence[str] | None = None,
    backend_bits: int = 64,
    oversamples: Sequence[int] = (1, 2, 5, 10, 20),
    other_train: str | Path | None = None,
    ram_price: float | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    scoring: str = "asymmetric",
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run everything on one embedding set and write the report into ``out``.

    ``extra`` is merged into the results (e.g. ``{"encoder": {...}}`` from ``hashplug run``).
    """
    t0 = time.perf_counter()
    ds = load_embeddings(embeddings)
    other = load_embeddings(other_train).train_x if other_train else None
    cfg = PaperConfig(
        hashers=list(hashers),
        bits=list(bits),
        k=k,
        seeds=seeds,
        other_train=other,
        other_name=Path(other_train).stem if other_train else "",
        progress=progress,
        scoring=scoring,
    )
    results: dict[str, Any] = {
        "dataset": {
            "path": str(embeddings),
            "info": ds.info,
            "n_db": int(ds.db_x.shape[0]),
            "n_query": int(ds.q_x.shape[0]),
            "n_train": int(ds.train_x.shape[0]),
            "dim": int(ds.db_x.shape[1]),
            "multilabel": ds.multilabel,
        },
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    results["paper"] = run_paper(ds, cfg)

    names = available_backends() if backends is None else list(backends)
    bcfg = BackendConfig(oversamples=list(oversamples), progress=progress, map_k=k)
    if ram_price is not None:
        bcfg.ram_price = ram_price
    results["config"] = {
        "hashers": list(hashers),
        "bits": list(bits),
        "k": k,
        "seeds": seeds,
        "scoring": scoring,
        "backends": names,
        "backend_bits": backend_bits,
        "oversamples": list(oversamples),
        "ram_price": bcfg.ram_price,
    }
    results["backends"] = {}
    if names:
        hasher = HASHERS["hashing-baseline"](backend_bits, 0).fit(ds.train_x)
        exact_asym, exact_float = exact_references(ds, hasher, bcfg.k)
        for name in names:
            if name not in available_backends():
                results["backends"][name] = {"error": f"store plugin for {name} not installed"}
                continue
            results["backends"][name] = run_backend(name, ds, hasher, bcfg, exact_asym, exact_float)
        results["float_baseline"] = float_baseline(ds, bcfg)
    results.update(extra or {})
    results["elapsed_s"] = time.perf_counter() - t0
    return results, write_report(results, out)

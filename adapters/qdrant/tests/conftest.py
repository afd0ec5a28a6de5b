"""Fixtures for hashplug-qdrant's tests: real hashplug codes from ../shared/data when present."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hashplug import HashingBaseline
from hashplug.bench.datasets import default_embeddings_path
from hashplug.stores.base import CollectionMeta


@dataclass
class RealCodes:
    hasher: HashingBaseline
    meta: CollectionMeta
    ids: np.ndarray  # int64 (n,)
    codes: np.ndarray  # uint8 (n, 8): database codes of Fashion-MNIST EfficientNet embeddings
    logits: np.ndarray  # float32 (Q, 64): query logits u

    def exact_asym(self, q_rows: slice | None = None) -> np.ndarray:
        """Exhaustive asymmetric distances Σ|b - p| (float64, (Q, n))."""
        u = self.logits if q_rows is None else self.logits[q_rows]
        p = 1.0 / (1.0 + np.exp(-u.astype(np.float64)))
        bits = np.unpackbits(self.codes, axis=1).astype(np.float64)
        return p.sum(1)[:, None] + (1.0 - 2.0 * p) @ bits.T


@pytest.fixture(scope="session")
def real_codes() -> RealCodes:
    """64-bit Hashing-Baseline codes of the real fmnist_effnet embeddings (skip when absent)."""
    path = default_embeddings_path()
    if not path.is_file():
        pytest.skip(f"real embeddings not found at {path} (../shared/data is absent)")
    with np.load(path) as d:
        db = d["db_x"][:8000].astype(np.float32)
        q = d["q_x"][:200].astype(np.float32)
    h = HashingBaseline(64).fit(db[:4000])
    meta = CollectionMeta(n_bits=64, fingerprint=h.fingerprint, hasher_spec=h.get_spec())
    ids = np.arange(10, 10 + db.shape[0], dtype=np.int64)
    return RealCodes(h, meta, ids, h.encode(db), h.query_logits(q).astype(np.float32))

"""Embedding sets: the ``.npz`` format the benchmark reads (db_x, db_y, q_x, q_y, train_x)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["EmbeddingSet", "load_embeddings", "default_embeddings_path"]


@dataclass
class EmbeddingSet:
    """Database and query embeddings with labels; ``train_x`` defaults to the database."""

    db_x: NDArray[np.float32]
    db_y: NDArray[np.int64]
    q_x: NDArray[np.float32]
    q_y: NDArray[np.int64]
    train_x: NDArray[np.float32]
    info: str = ""
    train_y: NDArray[np.int64] | None = None  # labels of train_x, for supervised hashers

    @property
    def multilabel(self) -> bool:
        """Whether labels are multi-hot (N, C) rather than one class per item."""
        return self.db_y.ndim == 2


def default_embeddings_path() -> Path:
    """``$HASHPLUG_EMBEDDINGS``, else the shared real set next to this checkout."""
    env = os.environ.get("HASHPLUG_EMBEDDINGS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    for base in (here.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"):
        p = base / "data" / "fmnist_effnet.npz"
        if p.is_file():
            return p
    return here.parent / "shared" / "data" / "fmnist_effnet.npz"


def load_embeddings(path: str | os.PathLike[str]) -> EmbeddingSet:
    """Read an embedding set; labels 1-D ints (single-label) or 2-D 0/1 (multi-label)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"no embedding set at {p}: pass --embeddings FILE.npz with arrays db_x, db_y, q_x, q_y "
            "(and optionally train_x), or set HASHPLUG_EMBEDDINGS"
        )
    with np.load(p, allow_pickle=False) as d:
        missing = [k for k in ("db_x", "db_y", "q_x", "q_y") if k not in d.files]
        if missing:
            raise ValueError(f"{p} lacks arrays {missing} (has {d.files})")
        db_x = np.ascontiguousarray(d["db_x"], dtype=np.float32)
        q_x = np.ascontiguousarray(d["q_x"], dtype=np.float32)
        train = np.ascontiguousarray(d["train_x"], np.float32) if "train_x" in d.files else db_x
        train_y = np.asarray(d["train_y"]).astype(np.int64) if "train_y" in d.files else None
        info = str(d["info"]) if "info" in d.files else ""
        db_y, q_y = np.asarray(d["db_y"]).astype(np.int64), np.asarray(d["q_y"]).astype(np.int64)
    if db_x.ndim != 2 or q_x.ndim != 2 or db_x.shape[1] != q_x.shape[1]:
        raise ValueError(f"{p}: db_x {db_x.shape} and q_x {q_x.shape} must be (n, d) with equal d")
    if db_y.shape[0] != db_x.shape[0] or q_y.shape[0] != q_x.shape[0] or db_y.ndim != q_y.ndim:
        raise ValueError(f"{p}: label arrays do not match the embeddings")
    if train_y is None and train is db_x:
        train_y = db_y
    if train_y is not None and train_y.shape[0] != train.shape[0]:
        raise ValueError(f"{p}: train_y {train_y.shape} does not match train_x {train.shape}")
    return EmbeddingSet(db_x, db_y, q_x, q_y, train, info, train_y)

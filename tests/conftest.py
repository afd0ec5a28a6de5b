"""Shared fixtures: the real embedding set from ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_NPZ = Path(
    os.environ.get("HASHPLUG_EMBEDDINGS", REPO.parent / "shared" / "data" / "fmnist_effnet.npz")
)


@pytest.fixture(scope="session")
def fmnist() -> dict[str, np.ndarray]:
    """Real EfficientNet embeddings of Fashion-MNIST (float32), or skip when ../shared is absent."""
    if not SHARED_NPZ.is_file():
        pytest.skip(f"real embeddings not found at {SHARED_NPZ} (../shared/data is absent)")
    with np.load(SHARED_NPZ) as d:
        return {
            "db_x": d["db_x"].astype(np.float32),
            "db_y": d["db_y"].astype(np.int64),
            "q_x": d["q_x"].astype(np.float32),
            "q_y": d["q_y"].astype(np.int64),
        }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads real models (deselect with -m 'not slow')")

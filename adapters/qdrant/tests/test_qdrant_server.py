"""QdrantStore against a real Qdrant server in Docker (adapters/qdrant/docker/docker-compose.yml).

Uses the pytest-docker fixture module adapters/qdrant/docker/pytest_qdrant.py. Where no Docker engine
answers (``docker info`` fails), every test here is skipped with the reason "no Docker engine";
the same suite runs on Qdrant Edge and on local mode in the other test modules.
What a server run exercises beyond those: the REST and gRPC transports, api-key auth, collection
metadata on the server (Qdrant >= 1.16), binary quantization and rescoring in the server.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hashplug_qdrant import QdrantStore
from qdrant_client import models as m

from hashplug.stores.base import StoreError
from hashplug.testing import (
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    PayloadConformance,
    PersistenceConformance,
    RescoringConformance,
    make_meta,
    random_codes,
)

_FIXTURES = Path(__file__).resolve().parents[1] / "docker" / "pytest_qdrant.py"


def _load_fixtures() -> ModuleType | None:
    if not _FIXTURES.is_file():
        return None
    spec = importlib.util.spec_from_file_location("hashplug_qdrant_docker_fixtures", _FIXTURES)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_fx = _load_fixtures()
if _fx is None:
    pytest.skip(f"docker fixtures not found at {_FIXTURES}", allow_module_level=True)

# The fixtures, made visible to pytest in this module.
docker_compose_file = _fx.docker_compose_file
docker_compose_project_name = _fx.docker_compose_project_name
qdrant_server = _fx.qdrant_server


def _server_store(server: dict, name: str, **kw) -> QdrantStore:
    opts = dict(host=server["host"], port=server["port"], api_key=server["api_key"], timeout=10)
    opts.update(kw)
    return QdrantStore(name, **opts)


class TestQdrantServerConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
):
    """The shared Store contract against a real Qdrant server over REST."""

    @pytest.fixture
    def make_store(self, qdrant_server: dict):
        prefix = uuid.uuid4().hex[:8]
        return lambda name: _server_store(qdrant_server, f"t{prefix}_{name}")


class TestQdrantServerConformanceGrpc(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
):
    """The same over gRPC."""

    n_items = 120

    @pytest.fixture
    def make_store(self, qdrant_server: dict):
        prefix = uuid.uuid4().hex[:8]
        return lambda name: _server_store(
            qdrant_server,
            f"g{prefix}_{name}",
            prefer_grpc=True,
            grpc_port=qdrant_server["grpc_port"],
        )


def test_server_collection_layout(qdrant_server: dict) -> None:
    s = _server_store(qdrant_server, f"layout_{uuid.uuid4().hex[:8]}")
    meta = make_meta(64)
    s.open(meta)
    info = s._client.get_collection(s.collection)
    vec = info.config.params.vectors
    assert vec.size == 64 and vec.distance == m.Distance.DOT and vec.datatype == m.Datatype.FLOAT16
    assert isinstance(info.config.quantization_config, m.BinaryQuantization)
    assert info.config.quantization_config.binary.always_ram is True
    assert info.config.hnsw_config.m == 0
    assert info.config.metadata["hashplug"] == meta.to_json()
    s.drop()
    s.close()


def test_server_native_rescoring_matches_exact_asymmetric(qdrant_server: dict) -> None:
    s = _server_store(qdrant_server, f"resc_{uuid.uuid4().hex[:8]}", datatype="float32")
    s.open(make_meta(64))
    codes = random_codes(2000, 64, seed=3)
    s.upsert(np.arange(2000), codes)
    u = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    ids, dist = s.search_rescored(u, 10, 2000 // 10)  # every item is a candidate: exact
    p = 1 / (1 + np.exp(-u.astype(np.float64)))
    bits = np.unpackbits(codes, axis=1).astype(np.float64)
    exact = p.sum(1)[:, None] + (1 - 2 * p) @ bits.T
    np.testing.assert_allclose(dist, np.sort(exact, axis=1)[:, :10], atol=1e-4)
    s.drop()
    s.close()


def test_wrong_api_key_is_a_clear_error(qdrant_server: dict) -> None:
    s = _server_store(qdrant_server, "anything", api_key="wrong-key")
    with pytest.raises(StoreError, match="api_key"):
        s.count()
    s.close()


class TestQdrantServerShardKeyConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
):
    """The same through one shard key of a custom-sharded collection (``shard_key=eu``)."""

    n_items = 120

    @pytest.fixture
    def make_store(self, qdrant_server: dict):
        prefix = uuid.uuid4().hex[:8]
        return lambda name: _server_store(qdrant_server, f"k{prefix}_{name}", shard_key="eu")


def test_server_shard_keys_write_apart_and_search_together(qdrant_server: dict) -> None:
    name = f"shk_{uuid.uuid4().hex[:8]}"
    meta = make_meta(64)
    eu, us = (_server_store(qdrant_server, name, shard_key=k) for k in ("eu", "us"))
    eu.open(meta)
    us.open(meta)  # the second key is created on demand
    codes = random_codes(300, 64, seed=4)
    eu.upsert(np.arange(200), codes[:200])
    us.upsert(np.arange(200, 300), codes[200:])
    assert (eu.count(), us.count()) == (200, 100)
    both = _server_store(qdrant_server, name, shard_key=["eu", "us"])
    both.open(meta)
    assert both.count() == 300
    got_i, _ = both.search(codes[250:252], 1)  # Qdrant searches both keys and merges
    assert got_i[:, 0].tolist() == [250, 251]
    assert not eu.lookup_codes([250])[1].any() and us.lookup_codes([250])[1].all()
    with pytest.raises(ValueError, match="writes go to one"):
        both.upsert([1], codes[:1])
    with pytest.raises(ValueError, match=r"shard keys \['asia'\] do not exist"):
        _server_store(qdrant_server, name, shard_key=["eu", "asia"]).open(meta)
    plain = _server_store(qdrant_server, name)
    with pytest.raises(ValueError, match="uses custom sharding"):
        plain.upsert([1], codes[:1])
    other = _server_store(qdrant_server, name + "_plain")
    other.open(meta)
    with pytest.raises(ValueError, match="not created with custom sharding"):
        _server_store(qdrant_server, other.collection, shard_key="eu").open(meta)
    assert eu.count() == 200  # nothing lost by the refusals
    for s in (other, eu):
        s.drop()
    for s in (eu, us, both, plain, other):
        s.close()

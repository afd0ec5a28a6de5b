"""Qdrant custom sharding through ``shard_key``: the option, and the requests a store sends.

No Qdrant server runs on this machine (the server tests in test_qdrant_server.py, custom
sharding included, skip without Docker), and qdrant-client's local mode has no shards (it
ignores ``shard_key_selector`` and refuses ``create_shard_key``), so these tests build the real
qdrant-client request models and check them, in REST (JSON) and gRPC form, without sending them.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hashplug_qdrant import QdrantStore
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.conversions.conversion import RestToGrpc

from hashplug.testing import make_meta

UNREACHABLE = "qdrant://127.0.0.1:9/docs"  # nothing is sent by these tests


def test_shard_key_options_from_the_uri() -> None:
    assert QdrantStore.from_uri(f"{UNREACHABLE}?shard_key=eu").shard_keys == ("eu",)
    assert QdrantStore.from_uri(f"{UNREACHABLE}?shard_key=eu,us").shard_keys == ("eu", "us")
    assert QdrantStore("docs", host="h", shard_key=7).shard_keys == (7,)
    assert QdrantStore("docs", host="h", shard_key=["eu", 3]).shard_keys == ("eu", 3)
    assert QdrantStore.from_uri(UNREACHABLE).shard_keys == ()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"shard_key": ""}, "invalid Qdrant shard key"),
        ({"shard_key": " eu"}, "invalid Qdrant shard key"),
        ({"shard_key": -1}, "invalid Qdrant shard key"),
        ({"shard_key": True}, "invalid Qdrant shard key"),
        ({"shard_key": 1.5}, "invalid Qdrant shard key"),
        ({"shard_key": ["a", "a"]}, "repeat"),
        ({"shard_key": []}, "at least one"),
        ({"shard_key": "a", "path": ":memory:"}, "local mode has no shards"),
    ],
)
def test_bad_shard_keys(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QdrantStore("docs", host="h", **kw)


def test_uri_shard_key_errors() -> None:
    with pytest.raises(ValueError, match="invalid Qdrant shard key"):
        QdrantStore.from_uri(f"{UNREACHABLE}?shard_key=a,,b")
    with pytest.raises(ValueError, match="do not apply to local mode"):
        QdrantStore.from_uri("qdrant+local://:memory:/docs?shard_key=a")


def test_new_collection_uses_custom_sharding() -> None:
    meta = make_meta(64)
    kw = QdrantStore.from_uri(f"{UNREACHABLE}?shard_key=eu&shard_number=2").create_kwargs(meta)
    assert kw["sharding_method"] == m.ShardingMethod.CUSTOM and kw["shard_number"] == 2
    plain = QdrantStore.from_uri(UNREACHABLE).create_kwargs(meta)
    assert "sharding_method" not in plain
    # the arguments are those of the real client's create_collection
    params = inspect.signature(QdrantClient.create_collection).parameters
    assert set(kw) <= set(params)


@pytest.mark.parametrize(("keys", "want"), [("eu", "eu"), ("eu,us", ["eu", "us"]), ("", None)])
def test_requests_carry_the_shard_key_selector(keys: str, want: object) -> None:
    s = QdrantStore.from_uri(f"{UNREACHABLE}?shard_key={keys}" if keys else UNREACHABLE)
    vectors = np.where(np.random.default_rng(0).random((3, 64)) > 0.5, 1.0, -1.0)
    reqs = s.query_requests(vectors.astype(np.float32), 10, False, 1.0, {"lang": "en"}, False)
    assert len(reqs) == 3 and all(r.shard_key == want for r in reqs)
    body = reqs[0].model_dump(exclude_none=True)  # the REST JSON body
    assert body.get("shard_key") == want and body["limit"] == 10
    grpc_req = RestToGrpc.convert_query_request(reqs[0], "docs")  # the gRPC message
    assert grpc_req.HasField("shard_key_selector") == (want is not None)
    if want is not None:
        sent = [k.keyword for k in grpc_req.shard_key_selector.shard_keys]
        assert sent == (want if isinstance(want, list) else [want])
    # point requests: the same selector, an argument every one of them takes in qdrant-client
    assert s._sel() == ({} if want is None else {"shard_key_selector": want})
    for name in ("upsert", "retrieve", "delete", "count", "scroll"):
        assert "shard_key_selector" in inspect.signature(getattr(QdrantClient, name)).parameters

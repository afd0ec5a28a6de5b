"""Engine-independent parts of attach: field choice, metrics, keys, the source registry."""

from __future__ import annotations

import numpy as np
import pytest

from hashplug.sources import KNOWN_SOURCES, SourceError, open_source
from hashplug.sources.core import _hash_key, _state_name
from hashplug.sources.source import as_source_ids, better_first, choose_vector_field, metric_scores


def test_choose_vector_field_names_the_problem():
    cands = {"emb": (8, "float32")}
    assert choose_vector_field(cands, None, "t", {"id": "int64"}) == "emb"
    with pytest.raises(SourceError, match="not a float vector field .*int64"):
        choose_vector_field(cands, "id", "t", {"id": "int64"})
    with pytest.raises(SourceError, match="no field 'nope'"):
        choose_vector_field(cands, "nope", "t", {})
    with pytest.raises(SourceError, match="several float vector fields"):
        choose_vector_field({"a": (8, "float32"), "b": (8, "float16")}, None, "t", {})
    with pytest.raises(SourceError, match="no float32/float16 vector field"):
        choose_vector_field({}, None, "t", {"id": "int64", "bits": "binary"})


def test_metric_scores_match_numpy():
    rng = np.random.default_rng(0)
    q, x = (
        rng.standard_normal((1, 16)).astype(np.float32),
        rng.standard_normal((5, 16)).astype(np.float32),
    )
    cos = (x @ q[0]) / np.linalg.norm(x, axis=1) / np.linalg.norm(q[0])
    np.testing.assert_allclose(metric_scores(q, x, "cosine"), cos, rtol=1e-5)
    np.testing.assert_allclose(metric_scores(q, x, "dot"), x @ q[0], rtol=1e-5)
    np.testing.assert_allclose(metric_scores(q, x, "l2"), np.linalg.norm(x - q, axis=1), rtol=1e-5)
    assert better_first("l2") == -1 and better_first("cosine") == 1 == better_first("dot")


def test_string_keys_are_stable_63_bit_and_distinct():
    ids = [f"id-{i}" for i in range(20000)] + ["", "é", "a'b"]
    keys = np.array([_hash_key(s) for s in ids])
    assert keys.min() >= 0 and keys.max() < 2**63 and np.unique(keys).size == keys.size
    assert _hash_key("id-1") == _hash_key("id-1")
    out = as_source_ids([1, "x"], "str")
    assert out.dtype == object and out.tolist() == ["1", "x"]
    assert as_source_ids([3, 4], "int").dtype == np.int64


def test_state_names():
    assert _state_name("lancedb:///data/lake/docs__hashplug", beside=True) == "docs__hashplug"
    a = _state_name("milvus://h:19530/docs__hashplug", beside=False)
    b = _state_name("milvus://other:19530/docs__hashplug", beside=False)
    assert a.startswith("docs__hashplug-") and a != b


def test_open_source_errors():
    assert {"lancedb", "qdrant-edge", "milvus+lite"} <= set(KNOWN_SOURCES)
    with pytest.raises(ValueError, match="cannot attach to foo://"):
        open_source("foo://x")
    with pytest.raises(ValueError, match="names no collection"):
        open_source("lancedb://")
    with pytest.raises(ValueError, match="scheme://location"):
        open_source("just-a-path")


def test_recorded_uri_has_no_secrets():
    from hashplug.sources.core import _public_uri

    assert _public_uri("milvus://root:secret@h:19530/docs?token=abc") == "milvus://h:19530/docs"
    assert _public_uri("lancedb:///data/lake/docs?metric=cosine") == "lancedb:///data/lake/docs"

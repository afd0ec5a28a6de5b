"""The conformance suite on LocalStore (memory:// and file://), and the registry."""

import numpy as np
import pytest

import hashplug
from hashplug.stores import LocalStore, StoreError, open_store
from hashplug.testing import StoreConformance, make_meta, random_codes


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self, request):
        prefix = f"{request.node.name}-{id(request)}"
        return lambda name: open_store(f"memory://{prefix}-{name}")


class TestFileStore(StoreConformance):
    n_bits = 72  # a width that is not a multiple of 64 bits

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda name: open_store(f"file://{tmp_path / name}")


def test_private_memory_store_is_not_shared():
    a, b = LocalStore(), LocalStore()
    a.open(make_meta())
    a.upsert([1], random_codes(1))
    assert a.count() == 1 and b.count() == 0


def test_callable_filter():
    s = open_store("memory://")
    s.open(make_meta())
    s.upsert([1, 2, 3], random_codes(3), [{"n": 1}, {"n": 2}, None])
    ids, _ = s.search(random_codes(1, seed=2), 3, filter=lambda p: p["n"] >= 2)
    assert ids[0].tolist() == [2, -1, -1]
    with pytest.raises(ValueError, match="dict"):
        s.search(random_codes(1), 3, filter="n > 1")


def test_damaged_file_store_is_reported(tmp_path):
    s = open_store(f"file://{tmp_path / 'c'}")
    s.open(make_meta())
    s.upsert([1, 2], random_codes(2))
    (tmp_path / "c" / "codes.safetensors").write_bytes(b"\x00\x01")
    with pytest.raises(StoreError, match="damaged"):
        open_store(f"file://{tmp_path / 'c'}")


def test_unknown_scheme_names_the_plugin():
    if "qdrant" not in hashplug.stores.available_schemes():
        with pytest.raises(ValueError, match="pip install hashplug-qdrant"):
            hashplug.open_store("qdrant://127.0.0.1:6333/docs")
    with pytest.raises(ValueError, match="no known plugin"):
        hashplug.open_store("foo://bar")
    with pytest.raises(ValueError, match="scheme://"):
        hashplug.open_store("just-a-path")


def test_search_before_open_is_clear():
    with pytest.raises(StoreError, match="does not exist yet"):
        LocalStore().search(np.zeros((1, 8), np.uint8), 3)

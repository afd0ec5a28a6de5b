"""The shared store conformance suite on real Milvus engines.

The standalone server, Milvus Lite (with and without the int64 code copy), and Milvus from
docker-compose where Docker is available.

(BIN_IVF_FLAT and the BINARY_VECTOR output path on the server are covered in test_milvus_server.py
by focused tests: each server collection costs ~2.5 s to load, the whole suite ~40 s.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hashplug_milvus import MilvusStore

from hashplug.testing import (
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    PayloadConformance,
    PersistenceConformance,
)
from hashplug.testing.faults import WriterKillConformance


def _factory(
    make: Callable[[str], MilvusStore], cleanup: list[Any]
) -> Iterator[Callable[[str], MilvusStore]]:
    def make_store(name: str) -> MilvusStore:
        s = make(name)
        cleanup.append(s)
        return s

    yield make_store


#: A payload Milvus refuses (its JSON is longer than the VARCHAR of 65,535 bytes).
TOO_BIG = {"t": "x" * 70_000}


class TestServerConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    """Milvus 2.3.5 standalone server, BIN_FLAT, codes returned with the search (int64 words)."""

    late_refusal = TOO_BIG

    @pytest.fixture
    def make_store(self, milvus_server: Any, fresh_name: Any, cleanup: list[Any]):
        yield from _factory(lambda n: MilvusStore(milvus_server.uri, fresh_name(n)), cleanup)


class TestLiteConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    """Milvus Lite 2.5.1 (a local .db file), through the milvus+lite:// URI."""

    late_refusal = TOO_BIG

    @pytest.fixture
    def make_store(self, lite_db: Any, fresh_name: Any, cleanup: list[Any]):
        yield from _factory(
            lambda n: MilvusStore.from_uri(f"milvus+lite://{lite_db}/{fresh_name(n)}"), cleanup
        )


class TestLiteNoWordsConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    """Milvus Lite without the int64 copy: search, then one batched get of the codes."""

    late_refusal = TOO_BIG

    n_bits = 128

    @pytest.fixture
    def make_store(self, lite_db: Any, fresh_name: Any, cleanup: list[Any]):
        yield from _factory(
            lambda n: MilvusStore(str(lite_db), fresh_name(n), code_words=False), cleanup
        )


class TestDockerConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    """Milvus standalone from adapters/milvus/docker/docker-compose.yml (skipped without a Docker engine)."""

    @pytest.fixture
    def make_store(self, milvus_docker_uri: str, fresh_name: Any, cleanup: list[Any]):
        yield from _factory(
            lambda n: MilvusStore.from_uri(f"{milvus_docker_uri}/{fresh_name(n)}"), cleanup
        )


class TestServerWriterFaults(WriterKillConformance):
    """A writer process killed (kill -9) mid-ingest into the Milvus server, then re-run."""

    @pytest.fixture
    def store_uri(self, milvus_server: Any, fresh_name: Any):
        return lambda n: milvus_server.store_uri(fresh_name(n))


class TestLiteWriterFaults(WriterKillConformance):
    """A writer process killed (kill -9) mid-ingest into a Milvus Lite file, then re-run.

    A Lite file is open in one process at a time (a second process reads a stale copy), so the
    checks run in fresh processes too.
    """

    check_in_subprocess = True

    @pytest.fixture
    def store_uri(self, tmp_path: Any, fresh_name: Any):
        return lambda n: f"milvus+lite://{tmp_path / 'faults.db'}/{fresh_name(n)}"

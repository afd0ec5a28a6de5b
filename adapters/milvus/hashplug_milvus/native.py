"""Milvus' own indexes, for ``hashplug compare``.

Milvus Lite (embedded) and, optionally, the real Milvus 2.3.5 standalone server (``milvus`` PyPI
package, slow to start).

Float vectors (COSINE), ids = row numbers. Options: ``milvus:flat``, ``milvus:ivf_flat``,
``milvus:ivf_sq8``, ``milvus:ivf_pq``, ``milvus:hnsw``, ``milvus:bin_flat`` (BIN_FLAT + HAMMING over
the sign bits of the centred embeddings, no rescoring) and ``milvus:ivf_rabitq``. Which of them an
engine has is asked of the engine itself (an index is created on a tiny probe collection); Milvus
Lite 2.5 answers "local mode only support FLAT IVF_FLAT AUTOINDEX", and neither Lite 2.5 nor the
2.3.5 server has RaBitQ (it came in Milvus 2.6).

RAM: the standalone server reports each loaded segment's ``mem_size``; Milvus Lite does not (the
call is unimplemented) and holds a loaded collection wholly in memory, so its RAM is counted as
the collection's data files. Disk: the engine's data directory.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hashplug.bench.native import CompareData, MethodRun, dir_bytes, time_queries

__all__ = [
    "ENGINES",
    "engine_version",
    "native_methods",
    "run_native",
    "close_engines",
    "close_collections",
]

ENGINES = ("milvus-lite", "milvus-server")
_INDEX = {
    "flat": "FLAT",
    "ivf_flat": "IVF_FLAT",
    "ivf_sq8": "IVF_SQ8",
    "ivf_pq": "IVF_PQ",
    "hnsw": "HNSW",
    "bin_flat": "BIN_FLAT",
    "ivf_rabitq": "IVF_RABITQ",
}
_BATCH = 2000
_SERVERS: dict[str, Any] = {}
_AVAILABLE: dict[str, dict[str, str | None]] = {}
_LOADED: dict[tuple[str, int, bool], tuple[Any, str, float, Path]] = {}


def _quiet_lite() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        import milvus_lite  # noqa: F401


def engine_version(engine: str) -> str:
    """Return the engine name and version shown in the comparison report."""
    from importlib.metadata import version

    if engine == "milvus-lite":
        return f"Milvus Lite {version('milvus-lite')}"
    return f"Milvus server {version('milvus')} (embedded standalone)"


def _client(engine: str, workdir: Path) -> Any:
    from pymilvus import MilvusClient

    if engine == "milvus-lite":
        _quiet_lite()
        return MilvusClient(str(Path(workdir) / "milvus.db"))
    srv = _SERVERS.get("server")
    if srv is None:
        from .server import EmbeddedMilvus

        srv = EmbeddedMilvus(tempfile.mkdtemp(prefix="hashplug-compare-milvus-")).start()
        _SERVERS["server"] = srv
    return MilvusClient(srv.uri)


def close_engines() -> None:
    """Stop the standalone server this module started, if any."""
    srv = _SERVERS.pop("server", None)
    if srv is not None:
        srv.stop()


def _params(option: str, n: int, dim: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index params, search params) of an option."""
    nlist = max(1, int(np.sqrt(n)))
    probe = {"nprobe": max(1, nlist // 5)}
    if option in ("ivf_flat", "ivf_sq8", "ivf_rabitq"):
        return {"nlist": nlist}, probe
    if option == "ivf_pq":
        return {"nlist": nlist, "m": max(1, dim // 16), "nbits": 8}, probe
    if option == "hnsw":
        return {"M": 16, "efConstruction": 128}, {"ef": 64}
    return {}, {}


def _create(client: Any, name: str, option: str, dim: int, n: int) -> None:
    from pymilvus import DataType

    binary = option == "bin_flat"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    vtype = DataType.BINARY_VECTOR if binary else DataType.FLOAT_VECTOR
    schema.add_field("v", vtype, dim=dim)
    ip = client.prepare_index_params()
    ip.add_index(
        "v",
        index_type=_INDEX[option],
        metric_type="HAMMING" if binary else "COSINE",
        params=_params(option, n, dim)[0],
    )
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(name, schema=schema, index_params=ip)


def native_methods(engine: str) -> dict[str, str | None]:
    """``milvus:<option>`` -> None when ``engine`` accepts the index, else the engine's reason."""
    if engine in _AVAILABLE:
        return _AVAILABLE[engine]
    work = Path(tempfile.mkdtemp(prefix="hashplug-milvus-probe-"))
    client = _client(engine, work)
    out: dict[str, str | None] = {}
    import logging

    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # the probe's refusals are expected
    try:
        for option in _INDEX:
            try:
                _create(client, f"probe_{option}", option, 16, 1000)
                client.drop_collection(f"probe_{option}")
                out[f"milvus:{option}"] = None
            except Exception as e:  # noqa: BLE001 - the engine's refusal is the answer
                msg = getattr(e, "message", None) or str(e)
                out[f"milvus:{option}"] = (
                    f"not in this version ({engine_version(engine)}: {msg.strip(': ')[:120]})"
                )
    finally:
        client.close()
        shutil.rmtree(work, ignore_errors=True)
    _AVAILABLE[engine] = out
    return out


def _segment_mem(client: Any, name: str) -> float:
    """Bytes of the loaded segments of a collection, as the Milvus server reports them."""
    from pymilvus import utility

    infos = utility.get_query_segment_info(name, using=client._using)
    return float(sum(i.mem_size for i in infos))


def _collection(
    engine: str, data: CompareData, binary: bool, workdir: Path
) -> tuple[Any, str, float, Path, Any]:
    """Return the engine's collection of ``data`` (inserted once, re-indexed per option).

    As (client, name, insert seconds, data directory, query vectors).
    """
    db: Any
    if binary:  # sign bits of the centred embeddings, packed (Milvus' binary layout)
        mean = data.train_x.mean(axis=0)
        db = np.packbits(data.db_x - mean > 0, axis=1)
        qs: Any = np.packbits(data.q_x - mean > 0, axis=1)
    else:
        db, qs = data.db_x, data.q_x
    key = (engine, id(data), binary)
    if key not in _LOADED:
        for old in [k for k in _LOADED if k[0] == engine and k[1] != id(data)]:  # one set at a time
            _drop(*_LOADED.pop(old))
        from pymilvus import DataType

        # The collection outlives this call's workdir: it gets a folder of its own.
        workdir = Path(tempfile.mkdtemp(prefix=f"hashplug-compare-{engine}-"))
        client = _client(engine, workdir)
        name = "native_bin" if binary else "native_float"
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        vtype = DataType.BINARY_VECTOR if binary else DataType.FLOAT_VECTOR
        schema.add_field("v", vtype, dim=db.shape[1] * 8 if binary else data.dim)
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, schema=schema)
        t = time.perf_counter()
        for s in range(0, data.n, _BATCH):
            rows = [
                {"id": s + i, "v": (v.tobytes() if binary else v)}
                for i, v in enumerate(db[s : s + _BATCH])
            ]
            client.insert(name, rows)
        client.flush(name)
        _LOADED[key] = (client, name, time.perf_counter() - t, Path(workdir))
    client, name, insert_s, where = _LOADED[key]
    return client, name, insert_s, where, qs


def _drop(client: Any, name: str, insert_s: float, where: Path) -> None:
    try:
        client.drop_collection(name)
    finally:
        client.close()
        shutil.rmtree(where, ignore_errors=True)


def close_collections() -> None:
    """Close the clients kept between options (and stop a server started here)."""
    for entry in list(_LOADED.values()):
        _drop(*entry)
    _LOADED.clear()
    close_engines()


def run_native(engine: str, method: str, data: CompareData, workdir: Path) -> MethodRun:
    """Index ``data.db_x`` with ``method``'s index on ``engine`` and search it.

    The vectors are inserted once per engine and data set; each option re-indexes them (release,
    drop index, create index, load): build time = insert time + this option's index and load.
    """
    option = method.split(":", 1)[1]
    binary = option == "bin_flat"
    client, name, insert_s, where, qs = _collection(engine, data, binary, workdir)
    dim = qs.shape[1] * 8 if binary else data.dim
    metric = "HAMMING" if binary else "COSINE"
    client.release_collection(name)
    for idx in client.list_indexes(name):
        client.drop_index(name, idx)
    t = time.perf_counter()
    ip = client.prepare_index_params()
    ip.add_index(
        "v", index_type=_INDEX[option], metric_type=metric, params=_params(option, data.n, dim)[0]
    )
    client.create_index(name, ip)
    client.load_collection(name)
    build_s = insert_s + time.perf_counter() - t
    sp = {"metric_type": metric, "params": _params(option, data.n, dim)[1]}

    def search(q: np.ndarray) -> np.ndarray:
        v = q[0].tobytes() if binary else q[0].tolist()
        hits = client.search(name, [v], limit=data.k, search_params=sp)[0]
        return np.array([h["id"] for h in hits], np.int64)

    ids, ms = time_queries(search, qs, data.k)
    if engine == "milvus-lite":
        disk = dir_bytes(where)
        # Lite serves a loaded collection wholly from memory and reports no segment sizes.
        ram, how = (
            float(disk),
            "the collection's data files (Lite holds a loaded collection in memory)",
        )
    else:
        disk = dir_bytes(Path(_SERVERS["server"].base_dir)) if "server" in _SERVERS else 0
        ram, how = _segment_mem(client, name), "loaded segments' mem_size (query nodes)"
    params = {"index": _INDEX[option], **_params(option, data.n, dim)[1]}
    return MethodRun(method, engine, ids, ms, build_s, float(ram), float(disk), how, params)

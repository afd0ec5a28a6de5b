"""Hash and ingest at any scale: a directory of shards -> hasher fit on a sample -> codes in a store.

Runs on Ray Data (``pip install 'hashplug[distributed]'``) or in this process (``engine="local"``)::

    from hashplug import distributed
    h = distributed.fit("s3-or-local/shards/", bits=64, sample=100_000, out="h.safetensors")
    report = distributed.ingest("shards/", h, "milvus://10.0.0.5:19530/docs", workers=16,
                                address="auto")
"""

from .api import (
    PARALLEL_WRITERS,
    DuplicateIdsWarning,
    IngestReport,
    StaleStateWarning,
    fit,
    ingest,
)
from .shards import Chunk, Dataset, Shard, scan_shards
from .state import JobState, default_state_dir

__all__ = [
    "ingest",
    "fit",
    "IngestReport",
    "DuplicateIdsWarning",
    "StaleStateWarning",
    "PARALLEL_WRITERS",
    "scan_shards",
    "Dataset",
    "Shard",
    "Chunk",
    "JobState",
    "default_state_dir",
]

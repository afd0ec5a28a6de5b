"""The Milvus container killed (SIGKILL) mid-ingest, restarted: every id stored exactly once.

Runs against Milvus standalone in Docker (``milvus_docker``, adapters/milvus/docker/pytest_milvus.py);
skipped with the reason where Docker cannot run or the image cannot be built.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hashplug.testing.faults import BATCH, N, WriterKillConformance


def test_container_killed_mid_ingest_then_restarted(
    milvus_docker: Any, fresh_name: Any, tmp_path: Path
) -> None:
    fk = WriterKillConformance()
    uri = f"{milvus_docker.uri}/{fresh_name('ckill')}"
    hasher_file = fk._hasher_file(tmp_path)
    proc = fk._writer(uri, hasher_file)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:  # let a few batches commit, then kill the server under the writer
        if line.startswith("batch"):
            seen = int(line.split()[1])
        if seen >= 1 or line.startswith("done"):
            break
    milvus_docker.kill()
    proc.kill()
    proc.wait(timeout=60)
    milvus_docker.start()
    stored = fk._check_consistent(uri, hasher_file, seen)
    assert stored < N, "the writer finished before the container was killed"
    rerun = fk._writer(uri, hasher_file, stderr=subprocess.PIPE)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-2000:]
    assert fk._check_consistent(uri, hasher_file, N // BATCH) == N

"""The hashplug image end to end.

docker/docker-compose.hashplug.yml runs the conformance suites in a container built from this
checkout, Milvus against the Milvus container beside it.

``HASHPLUG_DOCKER_SUITES`` picks the suites (default ``milvus``: the one that needs the two
containers side by side; the LanceDB and Qdrant Edge suites run natively in the test suite, and
``HASHPLUG_DOCKER_SUITES="milvus lancedb qdrant-edge"`` runs them in the image too). Skipped with
the reason where Docker cannot run or the images cannot be built (no network for the dependencies).
"""

from __future__ import annotations

import os
import re
from typing import Any


def test_hashplug_image_passes_the_conformance_suites(hashplug_suites: Any) -> None:
    suites = os.environ.get("HASHPLUG_DOCKER_SUITES", "milvus")
    code, out = hashplug_suites(suites)
    assert code == 0, out[-4000:]
    lines = re.findall(r"hashplug[_-]1 +\| ((?:\d+ \w+(?:, )?)+) in [\d.]+s", out)
    assert lines, f"no pytest summary in the output: {out[-2000:]}"
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", lines[-1])}
    assert counts.get("passed", 0) > 0, lines[-1]
    assert not counts.get("failed") and not counts.get("error") and not counts.get("errors"), lines[-1]
    if "milvus" in suites.split():
        assert "milvus answers at 127.0.0.1:" in out, out[-2000:]

"""Fault suite: a writer process killed with SIGKILL in the middle of an ingest.

Usage in an adapter's test module::

    from hashplug.testing.faults import WriterKillConformance

    class TestMyStoreFaults(WriterKillConformance):
        @pytest.fixture
        def store_uri(self, tmp_path):
            return lambda name: f"mystore://{tmp_path}/{name}"

Each test runs a writer (``python -m hashplug.testing.faults``) that adds ``N`` items in batches
through ``HashIndex.add`` and reports every committed batch; the test kills it at injected points
(right after a commit) and at random moments, checks after each kill that no id is stored twice
and every stored id has its own code and payload, re-runs the writer to the end, checks that every
id is there once, and that search results after a restart (a new store object, as a new process
would open it) equal those before it and those of the LocalStore reference.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = ["WriterKillConformance", "fault_data", "writer_main"]

N, DIM, BATCH, N_BITS = 4000, 32, 250, 64


def fault_data(seed: int = 5) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Return the items every writer adds: embeddings, ids and payloads.

    They are the same in every process.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = np.arange(N, dtype=np.int64) * 3 + 5
    payloads = [{"n": int(i), "tag": f"t{i % 7}"} for i in ids.tolist()]
    return x, ids, payloads


def writer_main(argv: list[str]) -> None:
    """Run ``python -m hashplug.testing.faults URI HASHER_FILE``: add the fault data.

    Prints ``batch <k>`` after each committed batch.
    """
    from .. import load_hasher
    from ..index import HashIndex

    uri, hasher_file = argv
    x, ids, payloads = fault_data()
    idx = HashIndex(uri, load_hasher(hasher_file))
    print("open", flush=True)
    for k, s in enumerate(range(0, N, BATCH)):
        part = slice(s, s + BATCH)
        idx.add(x[part], ids[part], payloads[part], progress=False)
        print(f"batch {k + 1}", flush=True)
    idx.close()
    print("done", flush=True)


class WriterKillConformance:
    """Kill -9 of a writer mid-ingest, on a real engine. Adapters provide ``store_uri``."""

    #: seconds a writer may take to start (imports, engine start)
    start_timeout: float = 180.0
    #: False where the engine may lose rows it acknowledged when the writing process is killed
    #: (Milvus Lite keeps them in its in-process server's memory); then a kill is checked for
    #: consistency only (no id twice, right codes and payloads), and the re-run must complete.
    durable_commits: bool = True
    #: True where one file may be open in one process only (Milvus Lite: a second process sees
    #: a stale copy): then each check after a kill runs in a fresh process too.
    check_in_subprocess: bool = False

    @pytest.fixture
    def store_uri(self) -> Callable[[str], str]:  # pragma: no cover - adapters override
        raise NotImplementedError("an adapter's fault test class must provide store_uri")

    def _hasher_file(self, tmp_path: Path) -> Path:
        from ..hashers import LSH

        x, _, _ = fault_data()
        path = tmp_path / "fault-hasher"
        return LSH(N_BITS, seed=3).fit(x[:1000]).save(path)

    def _writer(self, uri: str, hasher_file: Path, stderr: Any = None) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return subprocess.Popen(
            [sys.executable, "-m", "hashplug.testing.faults", uri, str(hasher_file)],
            stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def _run_until(self, proc: subprocess.Popen[str], batches: int, delay: float) -> int:
        """Read the writer's reports until ``batches`` committed, wait ``delay``, SIGKILL it.

        Returns the batches it had reported (the kill may land during the next one).
        """
        assert proc.stdout is not None
        seen = 0
        t0 = time.monotonic()
        for line in proc.stdout:
            if line.startswith("batch"):
                seen = int(line.split()[1])
            if seen >= batches or line.startswith("done"):
                break
            if time.monotonic() - t0 > self.start_timeout:
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return seen

    def _check_consistent(self, uri: str, hasher_file: Path, at_least: int) -> int:
        """No id twice; each stored id has its code and payload. Returns how many are stored."""
        if self.check_in_subprocess:
            code = (
                "import sys; from hashplug.testing.faults import WriterKillConformance as W\n"
                "w = W(); w.durable_commits = sys.argv[4] == '1'\n"
                "print('stored', w._check_here(sys.argv[1], sys.argv[2], int(sys.argv[3])))"
            )
            args = [uri, str(hasher_file), str(at_least), "1" if self.durable_commits else "0"]
            r = subprocess.run(
                [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
            )
            assert r.returncode == 0, f"check failed: {r.stderr[-1500:]}"
            return int(r.stdout.split("stored")[-1])
        return self._check_here(uri, str(hasher_file), at_least)

    def _check_here(self, uri: str, hasher_file: str, at_least: int) -> int:
        from .. import load_hasher
        from ..index import HashIndex

        x, ids, payloads = fault_data()
        hasher = load_hasher(hasher_file)
        idx = HashIndex(uri, hasher)
        try:
            store = idx.store
            codes, found = store.lookup_codes(ids)
            n = int(found.sum())
            assert store.count() == n, f"count {store.count()} != {n} distinct ids stored"
            if self.durable_commits:
                assert n >= at_least * BATCH, f"{n} stored, but {at_least} batches were committed"
            want = hasher.encode(x)
            np.testing.assert_array_equal(codes[found], want[found])
            got = store.get_payloads(ids[found][:: max(1, n // 200)])
            assert got == [payloads[i] for i in np.flatnonzero(found)[:: max(1, n // 200)]]
            return n
        finally:
            idx.close()

    def test_writer_killed_mid_ingest_then_rerun(
        self, store_uri: Callable[[str], str], tmp_path: Path
    ) -> None:
        from .. import load_hasher
        from ..index import HashIndex
        from ..stores.local import LocalStore

        uri = store_uri("faults")
        hasher_file = self._hasher_file(tmp_path)
        rng = np.random.default_rng(int(time.time()))
        kills = [
            ("after commit 2 (injected)", 2, 0.0),
            ("random moment after commit 1", 1, float(rng.uniform(0.0, 0.6))),
            ("random moment after commit 5", 5, float(rng.uniform(0.0, 0.6))),
        ]
        log = []
        for kind, after, delay in kills:
            seen = self._run_until(self._writer(uri, hasher_file), after, delay)
            stored = self._check_consistent(uri, hasher_file, seen)
            log.append((kind, seen, stored))
        proc = self._writer(uri, hasher_file, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "done" in out, f"the re-run failed: {err[-1500:]}"
        assert self._check_consistent(uri, hasher_file, N // BATCH) == N

        # Results before and after a restart, and against the reference, are equal.
        x, ids, payloads = fault_data()
        hasher = load_hasher(hasher_file)
        queries = x[::97][:30] + 0.1
        idx = HashIndex(uri, hasher)
        before = idx.search(queries, 10, oversample=5, with_payloads=True)
        idx.close()
        again = HashIndex(uri, hasher)
        restarted = again.search(queries, 10, oversample=5, with_payloads=True)
        again.close()
        ref = HashIndex(LocalStore(), hasher)
        ref.add(x, ids, payloads, progress=False)
        want = ref.search(queries, 10, oversample=5)
        np.testing.assert_array_equal(before.ids, restarted.ids)
        np.testing.assert_array_equal(restarted.ids, want.ids)
        assert before.payloads == restarted.payloads
        print(f"faults on {uri.split(':')[0]}: {log}")  # shown with pytest -s


if __name__ == "__main__":
    writer_main(sys.argv[1:])

"""Where the chunks run: in this process (``local``) or on a Ray cluster through Ray Data (``ray``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import check_positive_int
from .worker import ChunkWorker, Job

__all__ = ["run_chunks", "ray_session", "ENGINES"]

ENGINES = ("local", "ray")


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "engine='ray' needs Ray Data: pip install 'hashplug[distributed]' (ray[data]>=2.9)"
        ) from e
    return ray


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Use the running Ray session, else connect to ``address``, else start a local cluster.

    A local cluster gets ``workers`` CPUs and is stopped again on exit.
    """
    ray = _require_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
    except ConnectionError as e:
        raise ValueError(f"cannot connect to the Ray cluster at {address!r}: {e}") from e
    try:
        yield ray
    finally:
        ray.shutdown()


def run_chunks(
    job: Job,
    *,
    engine: str,
    workers: int = 2,
    address: str | None = None,
    gpus_per_worker: float | None = None,
) -> Iterator[dict[str, NDArray[Any]]]:
    """Run every chunk of ``job``; yield the workers' summary batches as they complete."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    check_positive_int(workers, "workers")
    if not job.chunks:
        return
    if engine == "local":
        w = ChunkWorker(job)
        for i in range(len(job.chunks)):
            yield w.run(i)
        return
    with ray_session(address, workers) as ray:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows one tqdm bar over rows
        if gpus_per_worker is None:  # encoders go on GPUs when the cluster has them
            has_gpu = job.encoder and ray.cluster_resources().get("GPU", 0) >= 1
            gpus_per_worker = 1.0 if has_gpu else 0.0
        job_ref = ray.put(job)  # shipped once; every actor fetches it in its constructor
        items = ray.data.from_items(
            [{"chunk": i} for i in range(len(job.chunks))],
            override_num_blocks=len(job.chunks),
        )
        out = items.map_batches(
            ChunkWorker,
            fn_constructor_args=(job_ref,),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=gpus_per_worker,
            batch_format="numpy",
        )
        try:
            for b in out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                yield {k: np.asarray(v) for k, v in b.items()}
        except Exception as e:
            raise _worker_error(e) from e


def _worker_error(e: BaseException) -> BaseException:
    """Return the worker's own error (bad input, store failure) out of Ray's wrappers.

    Where there is none, ``e`` itself.
    """
    from ..stores.base import StoreError

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        for kind in (StoreError, FileNotFoundError, ValueError):
            if isinstance(cur, kind) and type(cur).__module__.split(".")[0] != "ray":
                return kind(f"on a Ray worker: {cur}")
        nxt = getattr(cur, "cause", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    # Ray Data may pass the worker's error on as text only: take its last "Type: message" line
    found = re.findall(r"^\s*([\w.]*(?:StoreError|Error|Exception)): (.+)$", str(e), re.M)
    for name, msg in found:
        short = name.rsplit(".", 1)[-1]
        if short in ("StoreError", "HasherMismatchError", "HasherFileError", "ValueError"):
            kind = StoreError if short == "StoreError" else ValueError
            return kind(f"on a Ray worker: {msg}")
    return e

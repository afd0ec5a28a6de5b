"""Distributed ingest: vectors/s with 1 and 2 Ray workers next to the single-process ingest.

Data: ``--rows`` (default 5M) 128-d float32 vectors in Parquet shards, derived from the real
``../shared/data/fmnist_effnet.npz`` by a fixed random projection (1280 -> 128) of randomly
chosen embeddings plus Gaussian noise (10% of the per-dimension spread); written once, reused.

Runs, each into a fresh LanceDB table (the same shards, the same hasher, batches of 50k):
  local    ``hashplug ingest --embeddings DIR`` (one process, no Ray)
  ray-1    ``hashplug ingest --engine ray --workers 1``
  ray-2    ``hashplug ingest --engine ray --workers 2``
then a kill test: ``--engine ray --workers 2`` SIGKILLed (driver, workers, local cluster) once
a third of the shards are done, rerun, and every id checked to be stored exactly once.
Writes ``--out`` (JSON) and prints a table. Peak RSS per worker comes from the workers.

    .venv/bin/python benchmarks/bench_distributed.py --rows 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO.parent / "shared" / "data" / "fmnist_effnet.npz"


def make_data(out: Path, rows: int, dim: int, per_shard: int, seed: int = 0) -> Path:
    """Parquet shards of ``rows`` vectors (ids 0..rows-1), written once."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    d = out / f"shards_{rows}x{dim}"
    done = d / "_COMPLETE"
    if done.is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    with np.load(NPZ) as z:
        base = np.concatenate([z["db_x"], z["q_x"]]).astype(np.float32)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((base.shape[1], dim)).astype(np.float32) / np.sqrt(dim)
    base = base @ proj
    noise = 0.1 * base.std(axis=0)
    for s in tqdm(range(0, rows, per_shard), desc="writing shards", unit="shard"):
        n = min(per_shard, rows - s)
        x = base[rng.integers(0, base.shape[0], n)] + rng.standard_normal((n, dim)).astype(
            np.float32
        ) * noise.astype(np.float32)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)
        t = pa.table({"id": pa.array(np.arange(s, s + n, dtype=np.int64)), "vector": vec})
        pq.write_table(t, d / f"part-{s // per_shard:05d}.parquet", row_group_size=50_000)
    done.write_text("ok")
    return d


def cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "hashplug.cli", *args], env=env, start_new_session=True, **kw
    )


def ingest_run(name: str, shards: Path, hasher: Path, uri: str, work: Path, extra: list[str]):
    rep = work / f"report_{name}.json"
    t = time.perf_counter()
    p = cli(["ingest", "--hasher", str(hasher), "--store", uri, "--embeddings", str(shards),
             "--report", str(rep), *extra])  # fmt: skip
    if p.wait() != 0:
        raise SystemExit(f"{name}: hashplug ingest failed ({p.returncode})")
    r = json.loads(rep.read_text())
    r["wall_s"] = time.perf_counter() - t  # includes Ray start-up and Python imports
    print(
        f"{name:<8} {r['written']:>10,} vectors  {r['seconds']:7.1f} s  "
        f"{r['vectors_per_s']:>9,.0f} vec/s  peak RSS/worker MB "
        f"{sorted(round(v) for v in r['peak_rss_mb'].values())}",
        flush=True,
    )
    return r


def exact_once(uri: str, rows: int) -> dict:
    import hashplug

    st = hashplug.open_store(uri)
    seen = np.concatenate(list(st.iter_ids(1_000_000)))
    out = {
        "count": st.count(),
        "ids_listed": int(seen.size),
        "unique": int(np.unique(seen).size),
        "all_present": bool(np.array_equal(np.unique(seen), np.arange(rows))),
    }
    st.close()
    return out


def _kill_session(sid: int) -> None:
    """SIGKILL what is left of the session this benchmark started (by pid, nothing else)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        pid, s = (int(v) for v in line.split())
        if s == sid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_run(shards: Path, hasher: Path, uri: str, n_shards: int, workers: int) -> dict:
    state = Path(uri.split("://", 1)[1] + ".hashplug-ingest")
    p = cli(["ingest", "--engine", "ray", "--workers", str(workers), "--hasher", str(hasher),
             "--store", uri, "--embeddings", str(shards)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    target = max(1, n_shards // 3)
    while p.poll() is None and len(list(state.glob("*/*.done"))) < target:
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)  # the driver, its local Ray cluster and the workers
    p.wait()
    time.sleep(2)
    _kill_session(p.pid)  # Ray processes of that run that left its process group
    return {"shards_done_when_killed": len(list(state.glob("*/*.done")))}


def worker_kill_run(shards: Path, hasher: Path, work: Path, k: int) -> dict:
    """SIGKILL one Ray worker (actor process) mid-run; Ray Data restarts it and retries its chunk."""
    sub = _subset(shards, work, k)
    uri = f"lancedb://{work}/db_wkill/codes"
    subprocess.run(["rm", "-rf", f"{work}/db_wkill"], check=True)
    rep = work / "report_wkill.json"
    p = cli(["ingest", "--engine", "ray", "--workers", "2", "--hasher", str(hasher), "--store",
             uri, "--embeddings", str(sub), "--report", str(rep)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    state = Path(uri.split("://", 1)[1] + ".hashplug-ingest")
    while p.poll() is None and not list(state.glob("*/*.done")):
        time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    victims = [int(ln.split()[0]) for ln in ps.splitlines()
               if "MapWorker" in ln and int(ln.split()[1]) == p.pid]  # fmt: skip
    if victims:
        os.kill(victims[0], signal.SIGKILL)
    rc = p.wait()
    out = {"workers_found": len(victims), "killed": victims[:1], "returncode": rc,
           "shards": k}  # fmt: skip
    if rc == 0:
        out["report"] = json.loads(rep.read_text())
        out["exact_once"] = exact_once(uri, out["report"]["rows"])
    print(f"worker kill: {out.get('exact_once')} rc={rc}", flush=True)
    return out


def _subset(shards: Path, work: Path, k: int) -> Path:
    """Symlink the first ``k`` shards into their own directory."""
    sub = work / f"subset_{k}"
    sub.mkdir(exist_ok=True)
    for p in sorted(shards.glob("*.parquet"))[:k]:
        if not (sub / p.name).exists():
            (sub / p.name).symlink_to(p)
    return sub


def milvus_runs(
    shards: Path, hasher: Path, work: Path, k: int, per_shard: int, extra, names=("local", "ray-2")
) -> dict:
    """Ingest the first ``k`` shards (symlinked) into a fresh Milvus standalone server.

    One collection per run (``names``: local, ray-1, ray-2), each checked for every id exactly
    once.
    """
    from hashplug_milvus.server import EmbeddedMilvus

    sub = _subset(shards, work, k)
    out: dict = {"rows": k * per_shard}
    subprocess.run(["rm", "-rf", str(work / "milvus_data")], check=True)
    with EmbeddedMilvus(str(work / "milvus_data")) as srv:
        for name in names:
            uri = srv.store_uri(f"bench_{name.replace('-', '_')}")
            out[name] = ingest_run(f"milvus-{name}", sub, hasher, uri, work, extra[name])
            out[name]["exact_once"] = exact_once(uri, k * per_shard)
            print(f"milvus {name}: {out[name]['exact_once']}", flush=True)
    return out


def table(res: dict) -> str:
    """Return the README's Markdown table from a results JSON."""
    rows = ["| run | workers | vectors | rows phase s | vec/s (rows) | index build s | total s | "
            "peak RSS per worker MB |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    runs = [(f"LanceDB {k}", v) for k, v in res["runs"].items()]
    if "kill" in res:
        runs.append(("LanceDB rerun after kill", res["kill"]["rerun"]))
    runs += [(f"Milvus {k}", v) for k, v in res.get("milvus", {}).items() if k != "rows"]
    for name, r in runs:
        fin = r.get("finish_s")
        rows_s = r["seconds"] - (fin or 0.0)
        rss = ", ".join(str(round(v)) for v in sorted(r["peak_rss_mb"].values()))
        rows.append(
            f"| {name} | {r['workers']} | {r['written']:,} | {rows_s:.0f} | "
            f"{r['written'] / rows_s:,.0f} | {'-' if fin is None else f'{fin:.0f}'} | "
            f"{r['seconds']:.0f} | {rss} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--per-shard", type=int, default=100_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--work", default="/tmp/hashplug_bench_distributed")
    ap.add_argument("--runs", nargs="+", default=["local", "ray-1", "ray-2"])
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument(
        "--milvus-shards", type=int, default=0,
        help="also ingest the first N shards into the real Milvus 2.3.5 standalone server",
    )  # fmt: skip
    ap.add_argument("--milvus-runs", nargs="+", default=["local", "ray-2"],
                    help="which runs go to the Milvus server (local, ray-1, ray-2)")  # fmt: skip
    ap.add_argument("--out", default="reports/bench_distributed.json")
    ap.add_argument("--kill-worker-shards", type=int, default=0,
                    help="kill one Ray worker mid-run on the first N shards")  # fmt: skip
    ap.add_argument("--table", help="print the Markdown table of a results JSON and exit")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    shards = make_data(work, a.rows, a.dim, a.per_shard)
    n_shards = len(list(shards.glob("*.parquet")))
    size_gb = sum(p.stat().st_size for p in shards.glob("*.parquet")) / 1e9
    print(f"data: {a.rows:,} x {a.dim} float32 in {n_shards} Parquet shards ({size_gb:.2f} GB) "
          f"[{time.perf_counter() - t:.0f} s]", flush=True)  # fmt: skip
    hasher = work / f"h{a.bits}.safetensors"
    t = time.perf_counter()
    if not hasher.is_file():
        p = cli(["fit", "--embeddings", str(shards), "--bits", str(a.bits), "--sample", "100000",
                 "--out", str(hasher)])  # fmt: skip
        assert p.wait() == 0
    fit_s = time.perf_counter() - t
    res: dict = {"rows": a.rows, "dim": a.dim, "shards": n_shards, "parquet_gb": size_gb,
                 "bits": a.bits, "fit_sample_s": fit_s, "cpus": os.cpu_count(), "runs": {}}  # fmt: skip
    extra = {"local": [], "ray-1": ["--engine", "ray", "--workers", "1"],
             "ray-2": ["--engine", "ray", "--workers", "2"]}  # fmt: skip
    for name in [r for r in a.runs if r != "none"]:
        uri = f"lancedb://{work}/db_{name}/codes"
        subprocess.run(["rm", "-rf", f"{work}/db_{name}"], check=True)
        res["runs"][name] = ingest_run(name, shards, hasher, uri, work, extra[name])
        res["runs"][name]["exact_once"] = exact_once(uri, a.rows)
    if not a.no_kill:
        uri = f"lancedb://{work}/db_kill/codes"
        subprocess.run(["rm", "-rf", f"{work}/db_kill"], check=True)
        k = kill_run(shards, hasher, uri, n_shards, 2)
        k["rerun"] = ingest_run("rerun", shards, hasher, uri, work, extra["ray-2"])
        k["exact_once"] = exact_once(uri, a.rows)
        print(f"kill + rerun: {k['shards_done_when_killed']} shards done when killed, rerun "
              f"wrote {k['rerun']['shards_written']} shards; {k['exact_once']}", flush=True)  # fmt: skip
        res["kill"] = k
    if a.kill_worker_shards:
        res["worker_kill"] = worker_kill_run(shards, hasher, work, a.kill_worker_shards)
    if a.milvus_shards:
        res["milvus"] = milvus_runs(
            shards, hasher, work, a.milvus_shards, a.per_shard, extra, a.milvus_runs
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(table(res))
    print("written", a.out)


if __name__ == "__main__":
    main()

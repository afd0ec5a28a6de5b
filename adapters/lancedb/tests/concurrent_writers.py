"""Two writer processes upsert batches with payloads into one new LanceDB table at once.

``python concurrent_writers.py DIR N_BATCHES BATCH [pre]``; prints one JSON line. The writers are
forked after the imports and before any LanceDB connection, start together (a barrier), create
the table together (unless ``pre``: a first process creates it), and every batch brings payload
fields that neither has seen, the same names in both, so both add the same columns at once.
Run by test_lancedb_store.py (not collected: no ``test_`` prefix).
"""

import json
import multiprocessing as mp
import sys
from typing import Any

import numpy as np
from hashplug_lancedb import LanceDBStore

from hashplug.stores.base import CollectionMeta

PATH, N_BATCHES, BS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
META = CollectionMeta(64, "writers-test")


def write(wid: int, start: Any, q: Any) -> None:
    try:
        store = LanceDBStore(PATH, "t")
        start.wait()
        store.open(META)
        rng = np.random.default_rng(wid)
        for b in range(N_BATCHES):
            ids = np.arange(BS) + (wid * N_BATCHES + b) * BS
            codes = rng.integers(0, 256, (BS, 8), dtype=np.uint8)
            store.upsert(ids, codes, [{f"f{b}": int(i), f"g{b}": "x", "w": wid} for i in ids])
        q.put((wid, "ok"))
    except BaseException as e:
        q.put((wid, f"{type(e).__name__}: {str(e)[:300]}"))


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    if sys.argv[4:] == ["pre"]:  # the table exists before the writers start: only the columns race
        pre = ctx.Process(target=lambda: LanceDBStore(PATH, "t").open(META))
        pre.start()
        pre.join(60)
    start, q = ctx.Barrier(2), ctx.Queue()
    ps = [ctx.Process(target=write, args=(w, start, q)) for w in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
    errors = sorted(r for _, r in (q.get(timeout=5) for _ in ps) if r != "ok")
    store = LanceDBStore(PATH, "t")
    tbl = store.table.to_arrow()
    ids = tbl["id"].to_numpy()
    pls = [json.loads(p) for p in tbl["payload"].to_pylist()]
    ok_cols = all(
        tbl[f"f{b}"][i].as_py() == pls[i].get(f"f{b}")
        for i in range(len(ids))
        for b in range(N_BATCHES)
    )
    print(
        json.dumps(
            {
                "errors": errors,
                "rows": int(ids.size),
                "distinct": int(np.unique(ids).size),
                "ids_ok": sorted(ids.tolist()) == list(range(2 * N_BATCHES * BS)),
                "columns_ok": ok_cols,
                "exit": [p.exitcode for p in ps],
            }
        )
    )

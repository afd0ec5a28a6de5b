"""The store contract per engine: dict-filter cases passed and repeated-search determinism.

    .venv/bin/python benchmarks/bench_contract.py [--repeats 200] [--engines file lancedb ...]

Per engine: the 51 cases of ``hashplug.testing.filter_cases`` (passed / total), and the same
search repeated ``--repeats`` times on data full of ties (``hashplug.testing.tie_data``: 40
groups of 12 identical vectors, 40 queries, k = 5, oversample = 3): how many repeats return the
same ids as the first, for ``HashIndex.search`` and for the engine's raw top-C (cut at C with no
margin), and whether HashIndex's ids equal the LocalStore reference. Writes a markdown table and
JSON next to this file (``contract_results.{md,json}``). The fault suite's numbers come from
``pytest -s -k Faults`` (see README).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent


def _uris(tmp: Path) -> dict[str, Any]:
    def milvus_server() -> str:
        from hashplug_milvus.server import EmbeddedMilvus

        srv = EmbeddedMilvus(tmp / "milvus-server")
        srv.start()
        _STOP.append(srv)
        return srv.store_uri

    return {
        "file": lambda n: f"file://{tmp / 'file' / n}",
        "lancedb": lambda n: f"lancedb://{tmp / 'lance'}/{n}",
        "milvus-lite": lambda n: f"milvus+lite://{tmp / 'lite.db'}/{n}",
        "milvus-server": milvus_server,
        "qdrant-edge": lambda n: f"qdrant-edge://{tmp / 'edge' / n}",
        "qdrant-local": lambda n: f"qdrant+local://{tmp / 'qlocal'}/{n}",
    }


_STOP: list[Any] = []


def measure(make_uri: Any, repeats: int) -> dict[str, Any]:
    from hashplug import HashIndex, LocalStore, open_store
    from hashplug.hashers import LSH
    from hashplug.testing import FILTER_CASES, make_meta, run_filter_cases, tie_data

    s = open_store(make_uri("filters"))
    s.open(make_meta(64))
    failed = run_filter_cases(s)
    s.close()

    x, ids, queries = tie_data()
    hasher = LSH(64, seed=1).fit(x)
    idx = HashIndex(make_uri("ties"), hasher)
    idx.add(x, ids, progress=False)
    ref_idx = HashIndex(LocalStore(), hasher)
    ref_idx.add(x, ids, progress=False)
    ref = ref_idx.search(queries, 5, oversample=3).ids
    qcodes = np.packbits(hasher.logits(queries) > 0, axis=1)
    first = idx.search(queries, 5, oversample=3).ids
    raw_first = idx.store.search(qcodes, 15)[0]
    same = raw_same = 0
    for _ in tqdm(range(repeats), desc="repeats", leave=False):
        same += int(np.array_equal(idx.search(queries, 5, oversample=3).ids, first))
        raw_same += int(np.array_equal(idx.store.search(qcodes, 15)[0], raw_first))
    idx.close()
    return {
        "filter_passed": len(FILTER_CASES) - len(failed),
        "filter_total": len(FILTER_CASES),
        "filter_failed": failed,
        "repeats": repeats,
        "index_identical": same,
        "raw_identical": raw_same,
        "equals_reference": bool(np.array_equal(first, ref)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--engines", nargs="*", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        uris = _uris(Path(d))
        try:
            for name in args.engines or list(uris):
                make = uris[name]
                if name == "milvus-server":
                    make = make()
                print(f"-- {name}")
                results[name] = measure(make, args.repeats)
                print(json.dumps({k: v for k, v in results[name].items() if k != "filter_failed"}))
        finally:
            for srv in _STOP:
                srv.stop(timeout=2)
    lines = [
        "| store | filter cases passed | HashIndex.search identical | raw engine top-C identical "
        "| equals LocalStore |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['filter_passed']}/{r['filter_total']} | "
            f"{r['index_identical']}/{r['repeats']} | {r['raw_identical']}/{r['repeats']} | "
            f"{'yes' if r['equals_reference'] else 'no'} |"
        )
    (HERE / "contract_results.md").write_text("\n".join(lines) + "\n")
    (HERE / "contract_results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

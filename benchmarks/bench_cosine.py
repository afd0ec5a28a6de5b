"""Nearest-neighbour scoring (``scoring="cosine"``) against the asymmetric scoring and quantizers.

    .venv/bin/python benchmarks/bench_cosine.py [--sets fmnist text audio] [--repeats 7]

Data: ../shared/data/fmnist_effnet.npz (image, 1280-d), ~/.cache/hashplug/fortunes_minilm.npz
(text, MiniLM 384-d; benchmarks/make_text_set.py), ~/.cache/hashplug/debian_packages_minilm.npz
(text: one-line package descriptions, MiniLM; make_text_set.py --corpus packages) and, on request, ~/.cache/hashplug/espeak_aisfx.npz
(audio, aisfx 512-d; benchmarks/make_audio_set.py). Rows are L2-normalised (cosine); hashers and
quantizers are fitted on the database split; truth = exact float cosine top-10 of each query.
Recall@10 of exhaustive search with the codes alone (no float rescoring), at a budget of bytes
per vector that INCLUDES the per-vector factors:
  asymmetric      HashingBaseline(8B bits), sum |b - sigmoid(u)|
  cosine f16      HashingBaseline(8B - 32 bits) + (c, e) as float16 (4 bytes)
  cosine u8       HashingBaseline(8B - 16 bits) + (c, e) as uint8 (2 bytes; per-set min/max scale)
  cosine ITQ u8   ITQ(8B - 16 bits) + uint8 factors
  uneven u8       MultiBitBaseline(8B - 16 bits), its default allocation "auto" (half the bits
                  as 3-bit cells on the top directions, the rest 1 bit) + uint8 factors
  RaBitQ (faiss)  PCA to D dims + faiss.IndexRaBitQ (1 bit/dim), D chosen so code_size = B
  PQ (faiss)      IndexPQ, B sub-quantizers x 8 bits (B bytes, inner-product ADC, no factors)
  OPQ+PQ (faiss)  the same after an OPQ rotation (10 iterations; sets of at most 512 dims)
Fixed-size references: centred sign 1 bit/dim with a float query (d/8 bytes), faiss IndexRaBitQ on
the full vector, int8 scalar quantisation (d bytes, per-dim min/max).
Also: mAP@1000 (x100, labels db_y/q_y) at 16/32/64 bits, asymmetric vs cosine on the same codes,
and at 16/32/64 bytes per vector (factors included), asymmetric vs uneven u8;
latency of search_codes cosine vs asymmetric (256-bit codes, 1 thread, medians of interleaved runs).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from hashplug import ITQ, HashingBaseline, MultiBitBaseline, search_codes  # noqa: E402
from hashplug.bench.metrics import map_at_k, recall_at_k  # noqa: E402
from hashplug.rerank import probs_from_logits  # noqa: E402

try:
    import faiss
except ImportError:  # pragma: no cover - optional
    faiss = None

SETS = {
    "fmnist": Path(__file__).resolve().parents[1] / "../shared/data/fmnist_effnet.npz",
    "text": Path.home() / ".cache/hashplug/fortunes_minilm.npz",
    "audio": Path.home() / ".cache/hashplug/espeak_aisfx.npz",
    "packages": Path.home() / ".cache/hashplug/debian_packages_minilm.npz",
}
DEFAULT_SETS = ["fmnist", "text", "packages"]  # "audio": benchmarks/make_audio_set.py first
BUDGETS = (8, 16, 32, 64)
K = 10
OPQ_MAX_DIM = 512


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"no embedding set at {path}: build it first (see the docstring)")
    d = np.load(path)
    x, q = d["db_x"].astype(np.float32), d["q_x"].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q, d["db_y"], d["q_y"]


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ x.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def u8(f: np.ndarray) -> np.ndarray:
    """Factors quantised to uint8 per column (min/max over the database), dequantised."""
    lo, hi = f.min(0), f.max(0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    return (np.round((f - lo) / step) * step + lo).astype(np.float32)


def cosine_ids(h, x, q, k, fmt):  # type: ignore[no-untyped-def]
    f = h.correction(x)
    f = f.astype(np.float16).astype(np.float32) if fmt == "f16" else u8(f)
    ids, _ = search_codes(h.cosine_query(q), h.encode(x), k, scoring="cosine", corrections=f)
    return ids


def asym_ids(h, x, q, k):  # type: ignore[no-untyped-def]
    ids, _ = search_codes(h.query(q), h.encode(x), k)
    return ids


def rabitq_ids(x, q, k, budget):  # type: ignore[no-untyped-def]
    """Search with faiss IndexRaBitQ (after PCA when the budget is below d/8 + factors).

    (None, None) where faiss has no IndexRaBitQ or the budget leaves no dimension to code.
    """
    if faiss is None or not hasattr(faiss, "IndexRaBitQ"):
        return None, None
    d = x.shape[1]
    over = faiss.IndexRaBitQ(64, faiss.METRIC_INNER_PRODUCT).code_size - 8
    dim = d if budget is None else 8 * (budget - over)
    if dim <= 0 or dim > d:
        return None, None
    inner = faiss.IndexRaBitQ(dim, faiss.METRIC_INNER_PRODUCT)
    idx = inner if dim == d else faiss.IndexPreTransform(faiss.PCAMatrix(d, dim), inner)
    idx.train(x)
    idx.add(x)
    _, ids = idx.search(q, k)
    return ids, inner.code_size


def pq_ids(x, q, k, budget, opq):  # type: ignore[no-untyped-def]
    """Search with a FAISS IndexPQ of ``budget`` sub-quantizers of 8 bits (``budget`` bytes).

    Inner-product ADC, no factors, after an OPQ rotation when ``opq``; None if faiss is missing
    or ``budget`` does not divide the dimension.
    """
    d = x.shape[1]
    if faiss is None or d % budget:
        return None
    pq = faiss.IndexPQ(d, budget, 8, faiss.METRIC_INNER_PRODUCT)
    if opq:
        rot = faiss.OPQMatrix(d, budget)
        rot.niter = 10
        idx = faiss.IndexPreTransform(rot, pq)
    else:
        idx = pq
    idx.train(x)
    idx.add(x)
    _, ids = idx.search(q, k)
    return ids


def centred_sign_ids(x, q, k):  # type: ignore[no-untyped-def]
    mu = x.mean(0)
    s = np.sign(x - mu)
    return exact_topk(s, q - mu, k)


def int8_ids(x, q, k):  # type: ignore[no-untyped-def]
    lo, hi = x.min(0), x.max(0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    xd = np.round((x - lo) / step) * step + lo
    return exact_topk(xd.astype(np.float32), q, k)


def recall_table(name: str, x, q, gt) -> list[str]:  # type: ignore[no-untyped-def]
    d = x.shape[1]
    rows = []
    for b in BUDGETS:
        cells = []

        def rec(ids):  # type: ignore[no-untyped-def]
            return "n/a" if ids is None else f"{recall_at_k(ids, gt, K):.3f}"

        # n_bits > d: the PCA hashers pad before their rotation (README "Hashers").
        cells.append(rec(asym_ids(HashingBaseline(8 * b).fit(x), x, q, K)))
        for bits, fmt, cls in (
            (8 * b - 32, "f16", HashingBaseline),
            (8 * b - 16, "u8", HashingBaseline),
            (8 * b - 16, "u8", ITQ),
        ):
            cells.append(rec(cosine_ids(cls(bits).fit(x), x, q, K, fmt) if bits > 0 else None))
        h = MultiBitBaseline(8 * b - 16).fit(x)
        cells.append(rec(cosine_ids(h, x, q, K, "u8")))
        ids, _ = rabitq_ids(x, q, K, b)
        cells.append(rec(ids))
        cells.append(rec(pq_ids(x, q, K, b, opq=False)))
        # OPQ's rotation training is O(d^2) per iteration: skipped above 512 dims on 2 cores
        cells.append(rec(pq_ids(x, q, K, b, opq=True)) if d <= OPQ_MAX_DIM else "skipped")
        rows.append(f"| {name} | {b} | " + " | ".join(cells) + " |")
    refs = [
        (f"centred sign 1 bit/dim ({d // 8} B)", centred_sign_ids(x, q, K)),
        (f"int8 ({d} B)", int8_ids(x, q, K)),
    ]
    ids, cs = rabitq_ids(x, q, K, None)
    if ids is not None:
        refs.append((f"faiss IndexRaBitQ full-d ({cs} B)", ids))
    for label, ids in refs:
        rows.append(f"| {name} | {label} | {recall_at_k(ids, gt, K):.3f} | | | | | | | |")
    return rows


def map_rows(name: str, x, q, yx, yq) -> list[str]:  # type: ignore[no-untyped-def]
    rows = []
    for bits in (16, 32, 64):
        h = HashingBaseline(bits).fit(x)
        a = map_at_k(asym_ids(h, x, q, 1000), yx, yq, 1000)
        c = map_at_k(cosine_ids(h, x, q, 1000, "f16"), yx, yq, 1000)
        hm = MultiBitBaseline(bits).fit(x)
        m = map_at_k(cosine_ids(hm, x, q, 1000, "f16"), yx, yq, 1000)
        rows.append(f"| {name} | {bits} | {a:.2f} | {c:.2f} | {m:.2f} |")
    return rows


def map_bytes_rows(name: str, x, q, yx, yq) -> list[str]:  # type: ignore[no-untyped-def]
    """mAP@1000 at equal bytes per vector: asymmetric on 8B bits vs uneven u8 on 8B - 16 bits."""
    rows = []
    for b in (16, 32, 64):
        h = HashingBaseline(8 * b).fit(x)
        a = map_at_k(asym_ids(h, x, q, 1000), yx, yq, 1000)
        hm = MultiBitBaseline(8 * b - 16).fit(x)
        m = map_at_k(cosine_ids(hm, x, q, 1000, "u8"), yx, yq, 1000)
        rows.append(f"| {name} | {b} | {a:.2f} | {m:.2f} |")
    return rows


def latency(x, q, repeats: int) -> str:  # type: ignore[no-untyped-def]
    h = HashingBaseline(256).fit(x)
    codes, f, u, p = h.encode(x), h.correction(x), h.logits(q), h.query(q)
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    runs = {
        "asym": lambda: search_codes(p, codes, K),
        "cos": lambda: search_codes(u, codes, K, scoring="cosine", corrections=f),
    }
    times: dict[str, list[float]] = {n: [] for n in runs}
    for fn in runs.values():
        fn()  # compile / warm
    for _ in range(repeats):
        for n, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t)
    numba.set_num_threads(prev)
    ta, tc = (float(np.median(times[n])) for n in ("asym", "cos"))
    pairs = q.shape[0] * x.shape[0]
    return (
        f"256-bit codes, {x.shape[0]} codes x {q.shape[0]} queries, 1 thread, median of "
        f"{repeats}: asymmetric {ta * 1e3:.1f} ms ({pairs / ta / 1e6:.0f} M pairs/s), cosine "
        f"{tc * 1e3:.1f} ms ({pairs / tc / 1e6:.0f} M pairs/s); ratio cosine/asymmetric "
        f"{tc / ta:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=DEFAULT_SETS, choices=list(SETS))
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    rec_rows, map_rows_, byte_rows, lat = [], [], [], []
    _ = probs_from_logits
    for name in a.sets:
        x, q, yx, yq = load(SETS[name])
        gt = exact_topk(x, q, K)
        rec_rows += recall_table(name, x, q, gt)
        map_rows_ += map_rows(name, x, q, yx, yq)
        byte_rows += map_bytes_rows(name, x, q, yx, yq)
        lat.append(f"- {name}: {latency(x, q, a.repeats)}")
    print("## Recall@10 vs exact float cosine (exhaustive, codes alone); B = bytes per vector\n")
    print(
        "| set | B | asymmetric | cosine f16 | cosine u8 | cosine ITQ u8 | uneven u8 "
        "| faiss RaBitQ (PCA) | faiss PQ | faiss OPQ+PQ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rec_rows))
    print(
        "\n## mAP@1000 (x100) at the same code bits: HashingBaseline with both scorings, "
        "MultiBitBaseline (allocation auto) with cosine (cosine adds 4 B/vector)\n"
    )
    print("| set | bits | HB asymmetric | HB cosine | uneven cosine |")
    print("|---|---|---|---|---|")
    print("\n".join(map_rows_))
    print(
        "\n## mAP@1000 (x100) at the same bytes per vector B: HashingBaseline(8B bits) asymmetric "
        "vs MultiBitBaseline(8B - 16 bits) cosine with uint8 factors\n"
    )
    print("| set | B | asymmetric | uneven u8 |")
    print("|---|---|---|---|")
    print("\n".join(byte_rows))
    print("\n## Latency, exhaustive search_codes\n")
    print("\n".join(lat))


if __name__ == "__main__":
    main()

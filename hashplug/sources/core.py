"""attach(): hashplug codes beside a float collection someone else wrote, and its three-stage search."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from .._validate import check_positive_int
from ..hashers import Hasher, load_hasher
from ..index import HashIndex
from ..stores.base import CollectionMeta, HasherMismatchError, Store
from ..stores.registry import open_store
from .registry import open_source
from .source import Source, SourceError, SourceInfo, better_first, metric_scores

__all__ = ["attach", "AttachedIndex", "AttachedResult", "SyncReport", "CODES_SUFFIX"]

#: Name suffix of the sibling table / collection that holds the codes.
CODES_SUFFIX = "__hashplug"
#: Payload key holding a string id (codes are keyed by a 63-bit hash of it).
SOURCE_ID_KEY = "_source_id"
_MAX_CANDIDATES = 16_384  # Milvus's largest top-k; the others accept more


@dataclass
class SyncReport:
    """What one pass of :meth:`AttachedIndex.sync` did."""

    scanned: int = 0
    coded: int = 0  # rows that had no code yet
    updated: int = 0  # rows whose vector changed enough to change the code
    unchanged: int = 0
    deleted: int = 0  # codes of rows no longer in the source
    skipped: int = 0  # rows without a vector
    invalid: int = 0  # rows whose vector holds NaN/inf (not coded)
    invalid_ids: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    changed_during: bool = False  # the source changed while it was read

    @property
    def rate(self) -> float:
        """Rows scanned per second."""
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        d = asdict(self)
        d["invalid_ids"] = [str(i) for i in self.invalid_ids]
        d["rows_per_s"] = self.rate
        return d


@dataclass
class AttachedResult:
    """Top-k per query from an attached collection: the source's own ``ids`` and ``scores``.

    ``ids``: int64 (Q, k) with -1 padding, or an object array of str with None padding. ``scores``:
    float32 (Q, k) in the source metric when rescored by the originals (cosine / dot: larger is
    better; l2: the Euclidean distance), else the asymmetric distance of the codes; nan for padding.
    """

    ids: NDArray[Any]
    scores: NDArray[np.float32]

    def __iter__(self) -> Any:
        return iter((self.ids, self.scores))


def _hash_key(sid: str) -> int:
    return int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8).digest(), "little") >> 1


def _state_name(codes_uri: str, beside: bool) -> str:
    """File-name stem of the hasher file: the codes' name, plus a hash of the URI in the shared cache."""
    last = re.sub(r"[^A-Za-z0-9_.-]+", "_", codes_uri.rstrip("/").rsplit("/", 1)[-1]) or "codes"
    if beside:
        return last
    return f"{last}-{hashlib.blake2b(codes_uri.encode(), digest_size=4).hexdigest()}"


def _sorted_contains(sorted_keys: NDArray[np.int64], keys: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which ``keys`` are in ``sorted_keys`` (ascending)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return np.asarray(sorted_keys[pos] == keys)


def _unit_rows(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Scale rows to unit length (zero rows stay zero).

    Cosine is blind to length, so codes of a cosine source are made from, and queried with,
    directions only.
    """
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1)).astype(np.float32, copy=False)


def _public_uri(uri: str) -> str:
    """``uri`` without its query string and user info (tokens, passwords): what may be recorded."""
    scheme, _, rest = uri.partition("://")
    rest = rest.split("?", 1)[0]
    head, sep, tail = rest.partition("/")
    return f"{scheme}://{head.rsplit('@', 1)[-1]}{sep}{tail}"


def _default_state_dir() -> Path:
    return Path(os.environ.get("HASHPLUG_CACHE") or Path.home() / ".cache" / "hashplug") / "attach"


class AttachedIndex:
    """hashplug codes kept beside a user's float collection (see :func:`attach`).

    ``search`` runs in three stages: Hamming top-``candidates`` in the engine -> asymmetric rerank
    to ``shortlist`` codes -> exact similarity of the shortlist against the original vectors fetched
    by id from the source, in the source's metric (``rescore="originals"``).
    """

    #: Default coarse candidates and shortlist; see :meth:`search`.
    candidates: int = 16384
    shortlist: int = 8192

    def __init__(self, source: Source, store: Store, hasher: Hasher, hasher_file: Path) -> None:
        self.source = source
        self.store = store
        self.hasher = hasher
        self.hasher_file = hasher_file
        self.index = HashIndex(store, hasher)
        self.last_sync: SyncReport | None = None

    @property
    def info(self) -> SourceInfo:
        """The source's description (fields, metric, id kind, row count)."""
        return self.source.info

    def __len__(self) -> int:
        return self.store.count()

    # -- keys -------------------------------------------------------------------------------------
    def _keys(
        self, ids: NDArray[Any]
    ) -> tuple[NDArray[np.int64], list[dict[str, Any] | None] | None]:
        if self.info.id_kind == "str":
            keys = np.fromiter((_hash_key(s) for s in ids), np.int64, len(ids))
            if np.unique(keys).size != keys.size:
                raise SourceError("two source ids hash to the same 63-bit key; report this")
            return keys, [{SOURCE_ID_KEY: s} for s in ids]
        keys = np.asarray(ids, np.int64)
        if keys.size and keys.min() < 0:
            bad = keys[keys < 0][:5].tolist()
            raise SourceError(f"negative primary keys cannot be attached (e.g. {bad})")
        return keys, None

    def _source_ids(self, keys: NDArray[np.int64]) -> NDArray[Any]:
        """Keys (with -1 padding) -> source ids (-1 / None padding)."""
        if self.info.id_kind == "int":
            return keys
        out = np.full(keys.shape, None, dtype=object)
        valid = keys >= 0
        if valid.any():
            uniq = np.unique(keys[valid])
            pl = self.store.get_payloads(uniq)
            got = {
                int(k): (p or {}).get(SOURCE_ID_KEY) for k, p in zip(uniq.tolist(), pl, strict=True)
            }
            out[valid] = [got.get(int(k)) for k in keys[valid]]
        return out

    def _prep(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return _unit_rows(x) if self.info.metric == "cosine" else x

    # -- sync -------------------------------------------------------------------------------------
    def sync(
        self,
        *,
        batch_size: int = 10_000,
        progress: bool = True,
        on_batch: Callable[[SyncReport], None] | None = None,
    ) -> SyncReport:
        """Bring the codes up to date with the source.

        Code rows that have none, recode rows whose code changed, delete codes of rows gone from the
        source. Idempotent: a killed run is resumed by running it again (upserts by id; each row
        ends with exactly one code). ``on_batch`` is called with the running report after each batch
        is written.
        """
        rep = SyncReport()
        t0 = time.perf_counter()
        before = (self.source.count(), self.source.version())
        seen: list[NDArray[np.int64]] = []
        bar = tqdm(total=before[0], desc="hashplug sync", unit="row", disable=not progress)
        for ids, vecs in self.source.scan(batch_size):
            rep.scanned += len(ids)
            ok = np.isfinite(vecs).all(axis=1)
            if not ok.all():
                rep.invalid += int((~ok).sum())
                rep.invalid_ids.extend(ids[~ok][: max(0, 10 - len(rep.invalid_ids))].tolist())
                ids, vecs = ids[ok], vecs[ok]
            if len(ids):
                keys, payloads = self._keys(ids)
                seen.append(keys)
                codes = self.hasher.encode(self._prep(vecs))
                old, found = self.store.lookup_codes(keys)
                differs = found & (old != codes).any(axis=1)
                write = ~found | differs
                rep.coded += int((~found).sum())
                rep.updated += int(differs.sum())
                rep.unchanged += int((~write).sum())
                if write.any():
                    sel = np.flatnonzero(write)
                    self.store.upsert(
                        keys[sel], codes[sel], [payloads[i] for i in sel] if payloads else None
                    )
            bar.update(len(ids) + (0 if ok.all() else int((~ok).sum())))
            if on_batch is not None:
                on_batch(rep)
        bar.close()
        rep.skipped = self.source.skipped
        rep.deleted = self._drop_stale(np.concatenate(seen) if seen else np.zeros(0, np.int64))
        after = (self.source.count(), self.source.version())
        rep.changed_during = after != before
        rep.seconds = time.perf_counter() - t0
        if rep.changed_during:
            warnings.warn(
                f"{self.info.uri} changed while it was read ({before[0]} rows before, {after[0]} "
                "after); rows written meanwhile may be missing: run sync again",
                stacklevel=2,
            )
        if rep.invalid:
            warnings.warn(
                f"{rep.invalid} rows of {self.info.uri} have NaN/inf vectors and were not coded "
                f"(ids {rep.invalid_ids})",
                stacklevel=2,
            )
        self.last_sync = rep
        return rep

    def _drop_stale(self, seen: NDArray[np.int64]) -> int:
        seen = np.sort(seen)  # sorted once; each page of stored ids is looked up by bisection
        try:
            stale = [part[~_sorted_contains(seen, part)] for part in self.store.iter_ids(50_000)]
        except NotImplementedError:
            return 0
        gone = np.concatenate(stale) if stale else np.zeros(0, np.int64)
        if gone.size:
            self.store.delete(gone)
        return int(gone.size)

    # -- search -----------------------------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        candidates: int | None = None,
        shortlist: int | None = None,
        rescore: str = "originals",
        filter: Any = None,
    ) -> AttachedResult:
        """Three-stage search; returns the source's ids and scores.

        ``candidates`` (default 16384): codes the engine returns by Hamming distance; ``shortlist``
        (default 8192): how many of them, by asymmetric distance, are rescored against the
        originals. Both are capped by the collection size. ``rescore="codes"`` stops after the
        asymmetric rerank (no originals read). ``filter``: the code store's filter (payload dict or
        its engine's native filter).
        """
        k = check_positive_int(k, "k")
        if rescore not in ("originals", "codes"):
            raise ValueError(f"rescore must be 'originals' or 'codes', got {rescore!r}")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.info.dim:
            raise ValueError(
                f"queries must have shape (Q, {self.info.dim}), got {np.shape(queries)}"
            )
        if not np.isfinite(q).all():
            raise ValueError("queries contain NaN or inf")
        n = max(1, self.store.count())
        c = min(int(candidates or self.candidates), _MAX_CANDIDATES, n)
        s = max(int(k), min(int(shortlist or self.shortlist), c))
        if rescore == "codes":
            s = int(k)
        res = self.index.search(
            self._prep(q), k=s, oversample=max(1, math.ceil(c / s)), filter=filter
        )
        if rescore == "codes":
            return AttachedResult(
                self._source_ids(res.ids), np.where(res.ids >= 0, res.distances, np.nan)
            )
        return self._rescore(q, res.ids, int(k))

    def _rescore(self, q: NDArray[np.float32], keys: NDArray[np.int64], k: int) -> AttachedResult:
        sids = self._source_ids(keys)
        valid = keys >= 0
        if self.info.id_kind == "str":
            valid &= np.array([v is not None for v in sids.reshape(-1)], bool).reshape(sids.shape)
        if self.source.scores_in_engine:  # the engine scores the shortlist: no vector leaves it
            return self._rescore_in_engine(q, sids, valid, k)
        uniq, first = np.unique(keys[valid], return_index=True)
        fetch_ids = sids[valid][first]
        vecs = np.zeros((uniq.size, self.info.dim), np.float32)
        found = np.zeros(uniq.size, bool)
        if uniq.size:
            vecs, found = self.source.fetch(fetch_ids)
        sign = better_first(self.info.metric)
        pad = -1 if self.info.id_kind == "int" else None
        out_ids = np.full((q.shape[0], k), pad, dtype=sids.dtype)
        out_sc = np.full((q.shape[0], k), np.nan, np.float32)
        for r in range(q.shape[0]):
            rows = np.unique(np.searchsorted(uniq, keys[r][valid[r]]))
            rows = rows[found[rows]]
            if rows.size == 0:
                continue
            sc = metric_scores(q[r][None, :], vecs[rows], self.info.metric)
            top = np.argsort(-sign * sc, kind="stable")[:k]
            out_ids[r, : top.size] = fetch_ids[rows[top]]
            out_sc[r, : top.size] = sc[top]
        return AttachedResult(out_ids, out_sc)

    def _rescore_in_engine(
        self, q: NDArray[np.float32], sids: NDArray[Any], valid: NDArray[np.bool_], k: int
    ) -> AttachedResult:
        pad = -1 if self.info.id_kind == "int" else None
        out_ids = np.full((q.shape[0], k), pad, dtype=sids.dtype)
        out_sc = np.full((q.shape[0], k), np.nan, np.float32)
        for r in range(q.shape[0]):
            among = sids[r][valid[r]]
            if among.size == 0:
                continue
            got, sc = self.source.search_among(q[r], among, k)
            out_ids[r, : len(got)] = got
            out_sc[r, : len(got)] = sc
        return AttachedResult(out_ids, out_sc)

    # -- verification -----------------------------------------------------------------------------
    def verify(
        self,
        n: int = 100,
        *,
        queries: NDArray[np.float32] | None = None,
        k: int = 10,
        seed: int = 0,
        out: str | os.PathLike[str] | None = None,
        progress: bool = True,
        **search_options: Any,
    ) -> dict[str, Any]:
        """Compare with the engine's own exact float search before switching.

        Recall@k, p50/p99 latency of one query, and RAM bytes per vector, for ``n`` source vectors
        as queries (or ``queries``). Written as JSON to ``out`` when given.
        """
        if queries is None:
            queries = self._sample_queries(n, seed)
        q = np.asarray(queries, np.float32)
        self.source.search(q[:1], k)  # warm both paths (kernel compile, caches) before timing
        self.search(q[:1], k, **search_options)
        eng_ms, ours_ms, hits = [], [], 0
        for i in tqdm(
            range(q.shape[0]), desc="hashplug verify", unit="query", disable=not progress
        ):
            t = time.perf_counter()
            truth, _ = self.source.search(q[i : i + 1], k)
            eng_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            got = self.search(q[i : i + 1], k, **search_options)
            ours_ms.append((time.perf_counter() - t) * 1e3)
            hits += len(set(truth[0].tolist()) & set(got.ids[0].tolist()) - {None, -1})
        itemsize = 2 if self.info.dtype == "float16" else 4
        report: dict[str, Any] = {
            "source": self.info.uri,
            "rows": self.store.count(),
            "queries": int(q.shape[0]),
            "k": k,
            "n_bits": self.hasher.n_bits,
            "candidates": min(
                int(search_options.get("candidates") or self.candidates), _MAX_CANDIDATES
            ),
            "shortlist": int(search_options.get("shortlist") or self.shortlist),
            "recall_at_k": hits / (k * max(1, q.shape[0])),
            "hashplug_ms": {
                "p50": float(np.percentile(ours_ms, 50)),
                "p99": float(np.percentile(ours_ms, 99)),
            },
            "engine_float_ms": {
                "p50": float(np.percentile(eng_ms, 50)),
                "p99": float(np.percentile(eng_ms, 99)),
            },
            "ram_bytes_per_vector": {
                "codes": self.hasher.n_bits // 8,
                "floats": self.info.dim * itemsize,
            },
        }
        report["p50_ratio"] = float(np.percentile(ours_ms, 50)) / max(
            float(np.percentile(eng_ms, 50)), 1e-9
        )
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(report, indent=2))
        return report

    def _sample_queries(self, n: int, seed: int) -> NDArray[np.float32]:
        rng = np.random.default_rng(seed)
        total = max(1, self.source.count())
        keep = min(1.0, 4.0 * n / total)
        picked: list[NDArray[np.float32]] = []
        for _, vecs in self.source.scan(10_000):
            vecs = vecs[np.isfinite(vecs).all(axis=1)]
            picked.append(vecs[rng.random(len(vecs)) < keep])
            if sum(len(p) for p in picked) >= 4 * n:
                break
        allv = np.concatenate(picked) if picked else np.zeros((0, self.info.dim), np.float32)
        if len(allv) == 0:
            raise SourceError(f"{self.info.uri} has no vectors to verify with")
        return allv[rng.permutation(len(allv))[:n]]

    def close(self) -> None:
        """Close the source and the code store."""
        self.source.close()
        self.store.close()

    def __enter__(self) -> AttachedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fit_hasher(
    source: Source, method: str, bits: int, fit_sample: int, seed: int, progress: bool
) -> Hasher:
    from ..bench.experiments import LIBRARY_HASHERS as HASHERS

    if method not in HASHERS or method == "hashcoder-labels":
        names = [m for m in HASHERS if m != "hashcoder-labels"]
        raise ValueError(f"unknown hasher method {method!r}; choose from {', '.join(names)}")
    total = source.count()
    keep = min(1.0, fit_sample / max(1, total))
    rng = np.random.default_rng(seed)
    parts, got = [], 0
    bar = tqdm(
        total=min(fit_sample, total), desc="hashplug fit sample", unit="row", disable=not progress
    )
    for _, vecs in source.scan(10_000):
        vecs = vecs[np.isfinite(vecs).all(axis=1)]
        part = vecs if keep >= 1.0 else vecs[rng.random(len(vecs)) < keep]
        part = part[: fit_sample - got]
        parts.append(part)
        got += len(part)
        bar.update(len(part))
        if got >= fit_sample:
            break
    bar.close()
    if got == 0:
        raise SourceError(f"{source.info.uri} holds no vectors to fit a hasher on")
    x = np.concatenate(parts)
    if source.info.metric == "cosine":
        x = _unit_rows(x)
    if bits > min(x.shape):
        raise ValueError(
            f"{bits} bits need at least {bits} sample vectors and {bits} dimensions; the source "
            f"has {source.info.dim}-d vectors and {x.shape[0]} were sampled"
        )
    return HASHERS[method](bits, seed).fit(x)


def attach(
    uri: str,
    *,
    vector_field: str | None = None,
    id_field: str | None = None,
    hasher: Hasher | str | os.PathLike[str] | None = None,
    bits: int = 64,
    method: str = "hashing-baseline",
    fit_sample: int = 100_000,
    seed: int = 0,
    codes_uri: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    sync: bool = True,
    batch_size: int = 10_000,
    progress: bool = True,
    store_options: dict[str, Any] | None = None,
    **options: Any,
) -> AttachedIndex:
    """Attach hashplug to an existing float collection, code it, and return its index.

    ``uri`` names the user's collection: ``lancedb://DIR/TABLE``, ``qdrant-edge://DIR``,
    ``qdrant+local://DIR/COLL``, ``qdrant://host:port/COLL``, ``milvus+lite://FILE.db/COLL``,
    ``milvus://host:port/COLL``. The collection is only read. Codes go to a sibling table /
    collection in the same engine (``codes_uri``, default the source's name + ``__hashplug``),
    keyed by the source's primary keys; the hasher file is kept in ``state_dir`` (default: beside
    the collection for embedded engines, else ``~/.cache/hashplug/attach``) and recorded with the
    codes. ``hasher``: a fitted hasher or a hasher file; without one, ``method`` (a hashplug hasher
    name) is fitted with ``bits`` bits on ``fit_sample`` vectors streamed from the source.

    Attaching again resumes: a collection already coded by the same hasher is synced (rows missing
    a code are coded, stale codes dropped); another hasher is refused (HasherMismatchError).
    ``sync=False`` opens without reading the source. ``options`` go to the source (e.g.
    ``token=`` for Milvus, ``api_key=`` for Qdrant, ``metric=`` to override the discovered metric),
    ``store_options`` to the code store (default: the source's connection options).
    """
    source = open_source(uri, vector_field=vector_field, id_field=id_field, **options)
    store: Store | None = None
    try:
        curi = codes_uri or source.codes_uri(CODES_SUFFIX)
        store = open_store(
            curi, **(store_options if store_options is not None else source.store_options())
        )
        existing = store.read_meta()
        record = dict((existing.hasher_spec.get("attach") or {}) if existing else {})
        h = _resolve_hasher(hasher, existing, record, source)
        if h is None:
            h = _fit_hasher(source, method, bits, fit_sample, seed, progress)
        if h.dim_ is not None and h.dim_ != source.info.dim:
            raise ValueError(
                f"the hasher expects {h.dim_}-d vectors but {source.info.vector_field!r} of "
                f"{uri} holds {source.info.dim}-d vectors"
            )
        beside = state_dir is not None or source.state_dir() is not None
        sdir = (
            Path(state_dir)
            if state_dir is not None
            else (source.state_dir() or _default_state_dir())
        )
        stem = _state_name(curi, beside)
        hfile = Path(record.get("hasher_file") or sdir / f"{stem}.hasher.safetensors")
        if existing is None:
            hfile.parent.mkdir(parents=True, exist_ok=True)
            h.save(hfile)
            info = source.info
            record = {
                "source": _public_uri(uri),
                "vector_field": info.vector_field,
                "id_field": info.id_field,
                "id_kind": info.id_kind,
                "metric": info.metric,
                "dim": info.dim,
                "hasher_file": str(hfile.resolve()),
            }
        spec = {**h.get_spec(), "attach": record}
        store.open(CollectionMeta(n_bits=h.n_bits, fingerprint=h.fingerprint, hasher_spec=spec))
        _check_record(record, source)
        idx = AttachedIndex(source, store, h, hfile)
    except BaseException:
        source.close()
        if store is not None:
            store.close()
        raise
    if sync:
        try:
            idx.sync(batch_size=batch_size, progress=progress)
        except BaseException:
            idx.close()  # a failed or killed pass leaves nothing open; running attach again resumes
            raise
    return idx


def _resolve_hasher(
    hasher: Hasher | str | os.PathLike[str] | None,
    existing: CollectionMeta | None,
    record: dict[str, Any],
    source: Source,
) -> Hasher | None:
    if hasher is not None:
        h = hasher if isinstance(hasher, Hasher) else load_hasher(hasher)
        if not h.is_fitted:
            raise ValueError("the hasher is not fitted")
        if existing is not None and existing.fingerprint != h.fingerprint:
            raise HasherMismatchError(
                f"{source.info.uri} is already attached with hasher {existing.fingerprint}; "
                f"hasher {h.fingerprint} was given. Use the first one ({record.get('hasher_file')}) "
                "or detach (drop the codes collection) first"
            )
        return h
    if existing is None:
        return None
    path = record.get("hasher_file")
    if not path or not Path(path).exists():
        raise SourceError(
            f"{source.info.uri} is attached with hasher {existing.fingerprint}, whose file "
            f"{path!r} is not on this machine; pass hasher=FILE (CLI: --hasher FILE)"
        )
    h = load_hasher(path)
    if h.fingerprint != existing.fingerprint:
        raise HasherMismatchError(
            f"{path} holds hasher {h.fingerprint}, but the codes were written by {existing.fingerprint}"
        )
    return h


def _check_record(record: dict[str, Any], source: Source) -> None:
    info = source.info
    for key, now in (("vector_field", info.vector_field), ("dim", info.dim)):
        if key in record and record[key] != now:
            raise SourceError(
                f"the codes beside {info.uri} were made from {key} {record[key]!r}, not {now!r}"
            )

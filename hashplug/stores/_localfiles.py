"""Crash-safe, multi-writer, append-only files behind ``file://`` (LocalStore).

Layout of a store directory::

    MANIFEST.json                      written last (atomic rename): meta + the list of segments
    codes-<gen>.safetensors            one segment: ids + codes (+ corrections), or deleted ids
    payloads-<gen>.json                the payloads of that segment's rows
    LOCK                               flock'ed by a writer for the length of one change
    ivf.safetensors                    optional cache: inverted file centroids + row lists

A change appends one segment (its own files, fsync'ed), then replaces the manifest (fsync'ed):
an upsert writes only its rows, a delete only the deleted ids, so a bulk ingest writes each row
about once (plus compactions), not the whole store per batch. Readers apply the segments in
order (a later row of an id replaces an earlier one; a delete drops the earlier rows); a reader
that already holds a prefix of the list applies only the new segments (after a merge it reloads).
Segments are size-tiered: when the newest segments make eight of one size level, the writer
rewrites them as one (``LocalStore._append_segment``), so a row is rewritten about
log8(N / batch) times. When the list grows past ``MAX_SEGMENTS``, or the segments hold more
than twice the live rows, the writer compacts: it writes the whole state as one segment. Files
no manifest names are removed after a commit.

A kill at any point leaves either the old or the new manifest, and each names complete files
whose sizes and CRC-32 it records, so a reader sees one whole state or a clear ``StoreError``.
Writers take ``LOCK`` and catch up with the newest manifest under it before appending, so
several objects or processes writing one directory never lose each other's rows. Format 1
manifests (one generation) and the oldest layout (``meta.json``, ``codes.safetensors``,
``payloads.json``) are read, and rewritten in this format at the next change.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .base import StoreError

__all__ = ["StoreFiles", "MAX_SEGMENTS"]

MANIFEST = "MANIFEST.json"
#: The inverted file's centroids and the lists of the rows it last grouped (LocalStore ``ivf=``).
IVF_FILE = "ivf.safetensors"
FORMAT = 2
#: A commit that would list more segments than this compacts the store into one.
MAX_SEGMENTS = 32

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writer per directory, not enforced
    fcntl = None  # type: ignore[assignment]


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsync'ed
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class StoreFiles:
    """The files of one ``file://`` store directory."""

    def __init__(self, path: Path, lock_timeout: float = 60.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout

    # -- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's writer lock (waits up to ``lock_timeout`` seconds)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise StoreError(
                                f"local store at {self.path} is locked by another writer "
                                f"for more than {self.lock_timeout:.0f} s (file {self.path / 'LOCK'})"
                            ) from None
                        time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- reading ---------------------------------------------------------------------------------
    def token(self) -> tuple[int, int, int] | None:
        """Return a token that changes whenever a writer commits (None: no manifest)."""
        try:
            st = os.stat(self.path / MANIFEST)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def manifest(self) -> dict[str, Any] | None:
        """Return ``{"meta", "gen", "segments"}`` of the current manifest, or None without one.

        A format 1 manifest is read as one segment, with ``"old": True`` (rewrite it).
        """
        mfile = self.path / MANIFEST
        if not mfile.exists():
            return None
        try:
            man = json.loads(mfile.read_text())
            fmt = int(man.get("format", 0))
            if fmt > FORMAT:
                raise StoreError(
                    f"has format {fmt}; this hashplug reads format {FORMAT} (upgrade hashplug)"
                )
            if fmt >= 2:
                return {"meta": man["meta"], "gen": int(man["gen"]), "segments": man["segments"]}
            one = {**man["codes"], "payloads": man["payloads"]}
            return {"meta": man["meta"], "gen": int(man["gen"]), "segments": [one], "old": True}
        except Exception as e:  # noqa: BLE001 - json/OS errors all mean damage
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e

    def read_segment(self, entry: dict[str, Any]) -> dict[str, Any]:
        """One segment's arrays and payloads (sizes and CRC-32 checked against ``entry``)."""
        from safetensors.numpy import load

        try:
            blobs = []
            for e in (entry, entry["payloads"]):
                blob = (self.path / e["file"]).read_bytes()
                if len(blob) != e["bytes"] or zlib.crc32(blob) != e["crc32"]:
                    raise StoreError(f"{e['file']} does not match the manifest")
                blobs.append(blob)
            seg: dict[str, Any] = dict(load(blobs[0]))
            seg["payloads"] = json.loads(blobs[1])
        except FileNotFoundError:
            raise  # a compaction removed it meanwhile: the caller reads the new manifest
        except Exception as e:  # noqa: BLE001 - json/safetensors/OS errors all mean damage
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e
        ids = seg.get("ids", np.zeros(0, np.int64))
        if len(seg["payloads"]) != ids.size or (
            "codes" in seg and seg["codes"].shape[0] != ids.size
        ):
            raise StoreError(f"local store at {self.path} is inconsistent (sizes differ)")
        return seg

    def load_legacy(self) -> dict[str, Any] | None:
        """Return the oldest layout as one segment (with its meta), or None."""
        mfile = self.path / "meta.json"
        if not mfile.exists():
            return None
        from safetensors.numpy import load_file

        try:
            meta = mfile.read_text()
            seg: dict[str, Any] = dict(load_file(str(self.path / "codes.safetensors")))
            seg["payloads"] = json.loads((self.path / "payloads.json").read_text())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e
        if "ids" not in seg or "codes" not in seg or len(seg["payloads"]) != seg["ids"].size:
            raise StoreError(f"local store at {self.path} is inconsistent (sizes differ)")
        return {"meta": meta, "segment": seg}

    # -- the inverted file (a cache beside the segments) -------------------------------------------
    def save_ivf(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace ``ivf.safetensors`` (written whole, then renamed: readers see old or new)."""
        from safetensors.numpy import save

        blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        tmp = self.path / f".{IVF_FILE}.{os.getpid()}.tmp"
        _fsync_write(tmp, blob)
        os.replace(tmp, self.path / IVF_FILE)

    def load_ivf(self) -> dict[str, np.ndarray] | None:
        """Return the arrays of ``ivf.safetensors``; None when absent or unreadable (retrain)."""
        from safetensors.numpy import load

        try:
            return dict(load((self.path / IVF_FILE).read_bytes()))
        except Exception:  # noqa: BLE001 - missing or damaged: it is only a cache
            return None

    # -- writing (under :meth:`locked`) ----------------------------------------------------------
    def write_segment(self, seg: dict[str, Any], gen: int) -> dict[str, Any]:
        """Write one segment's files (fsync'ed); returns its manifest entry."""
        from safetensors.numpy import save

        self.path.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in seg.items() if k != "payloads"}
        codes_blob = save(arrays)
        pl_blob = json.dumps(seg.get("payloads", []), ensure_ascii=False).encode("utf-8")
        entry: dict[str, Any] = {"rows": int(seg.get("ids", np.zeros(0)).size)}
        entry["deleted"] = int(seg.get("deleted", np.zeros(0)).size)
        for key, blob, name in (
            ("codes", codes_blob, f"codes-{gen}.safetensors"),
            ("payloads", pl_blob, f"payloads-{gen}.json"),
        ):
            _fsync_write(self.path / name, blob)
            e = {"file": name, "bytes": len(blob), "crc32": zlib.crc32(blob)}
            if key == "codes":
                entry.update(e)
            else:
                entry["payloads"] = e
        return entry

    def commit(self, meta: str, gen: int, segments: list[dict[str, Any]]) -> None:
        """Replace the manifest (fsync'ed), then remove the files it no longer names."""
        self.path.mkdir(parents=True, exist_ok=True)
        man = {"format": FORMAT, "gen": gen, "meta": meta, "segments": segments}
        tmp = self.path / f".{MANIFEST}.{os.getpid()}.tmp"
        _fsync_write(tmp, json.dumps(man, sort_keys=True).encode())
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)
        keep = {s["file"] for s in segments} | {s["payloads"]["file"] for s in segments}
        self._remove_stale(keep)

    def _remove_stale(self, keep: set[str]) -> None:
        for p in self.path.iterdir():
            stale = p.name.startswith(("codes-", "payloads-")) and p.name not in keep
            legacy = p.name in ("meta.json", "codes.safetensors", "payloads.json", ".tmp")
            tmp = p.name.startswith((f".{MANIFEST}.", f".{IVF_FILE}.")) and p.name.endswith(".tmp")
            if stale or legacy or tmp:
                with contextlib.suppress(OSError):
                    if p.is_dir():
                        import shutil

                        shutil.rmtree(p)
                    else:
                        p.unlink()

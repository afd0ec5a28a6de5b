"""Crash-safe, multi-writer files behind ``file://`` (LocalStore).

Layout of a store directory::

    MANIFEST.json                      written last (atomic rename): names the current files
    codes-<gen>.safetensors            ids + codes of generation <gen>
    payloads-<gen>.json                payloads of generation <gen>
    LOCK                               flock'ed by a writer for the length of one change

A change writes new generation files (fsync'ed), then replaces the manifest (fsync'ed), then
removes the files of older generations. A kill at any point leaves either the old or the new
manifest, and each names complete files whose sizes and CRC-32 it records, so a reader sees
one whole generation or a clear ``StoreError``. Writers take ``LOCK`` and reload the newest
generation under it before applying their change, so several objects or processes writing one
directory never lose each other's rows. Directories in the older layout (``meta.json``,
``codes.safetensors``, ``payloads.json``) are read, and rewritten in this one at the next change.
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

__all__ = ["StoreFiles"]

MANIFEST = "MANIFEST.json"
FORMAT = 1

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
        """Changes whenever a writer commits a generation (None: no manifest)."""
        try:
            st = os.stat(self.path / MANIFEST)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> dict[str, Any] | None:
        """``{"meta", "ids", "codes", "payloads", "gen"}`` of the current generation, or None."""
        mfile = self.path / MANIFEST
        if not mfile.exists():
            return self._load_legacy()
        from safetensors.numpy import load

        try:
            man = json.loads(mfile.read_text())
            if int(man.get("format", 0)) > FORMAT:
                raise StoreError(
                    f"local store at {self.path} has format {man['format']}; this hashplug "
                    f"reads format {FORMAT} (upgrade hashplug)"
                )
            blobs = {}
            for kind in ("codes", "payloads"):
                entry = man[kind]
                blob = (self.path / entry["file"]).read_bytes()
                if len(blob) != entry["bytes"] or zlib.crc32(blob) != entry["crc32"]:
                    raise StoreError(f"{entry['file']} does not match the manifest")
                blobs[kind] = blob
            arrays = load(blobs["codes"])
            payloads = json.loads(blobs["payloads"])
            meta = man["meta"]
            gen = int(man["gen"])
        except StoreError as e:
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e
        except Exception as e:  # noqa: BLE001 - json/safetensors/OS errors all mean damage
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e
        return self._checked(meta, arrays, payloads, gen)

    def _load_legacy(self) -> dict[str, Any] | None:
        mfile = self.path / "meta.json"
        if not mfile.exists():
            return None
        from safetensors.numpy import load_file

        try:
            meta = mfile.read_text()
            arrays = load_file(str(self.path / "codes.safetensors"))
            payloads = json.loads((self.path / "payloads.json").read_text())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e
        return self._checked(meta, arrays, payloads, 0)

    def _checked(
        self, meta: str, arrays: dict[str, np.ndarray], payloads: Any, gen: int
    ) -> dict[str, Any]:
        from .base import CollectionMeta

        n_bytes = CollectionMeta.from_json(meta).n_bytes
        ids, codes = arrays.get("ids"), arrays.get("codes")
        if (
            ids is None
            or codes is None
            or codes.shape != (ids.size, n_bytes)
            or not isinstance(payloads, list)
            or len(payloads) != ids.size
        ):
            raise StoreError(f"local store at {self.path} is inconsistent (sizes differ)")
        st = {"meta": meta, "ids": ids, "codes": codes, "payloads": payloads, "gen": gen}
        corr = arrays.get("corr")  # optional: written by stores holding scoring="cosine" factors
        if corr is not None:
            if corr.shape != (ids.size, 2):
                raise StoreError(f"local store at {self.path} is inconsistent (corrections)")
            st["corr"] = corr
        return st

    # -- writing ---------------------------------------------------------------------------------
    def save(self, state: dict[str, Any], gen: int) -> None:
        """Commit ``state`` as generation ``gen`` (call under :meth:`locked`)."""
        from safetensors.numpy import save

        self.path.mkdir(parents=True, exist_ok=True)
        arrays = {"ids": state["ids"], "codes": state["codes"]}
        corr = state.get("corr")
        if corr is not None and not np.isnan(corr).all():  # absent: no item has corrections
            arrays["corr"] = corr
        codes_blob = save(arrays)
        pl_blob = json.dumps(state["payloads"], ensure_ascii=False).encode("utf-8")
        man: dict[str, Any] = {"format": FORMAT, "gen": gen, "meta": state["meta"]}
        for kind, blob, name in (
            ("codes", codes_blob, f"codes-{gen}.safetensors"),
            ("payloads", pl_blob, f"payloads-{gen}.json"),
        ):
            _fsync_write(self.path / name, blob)
            man[kind] = {"file": name, "bytes": len(blob), "crc32": zlib.crc32(blob)}
        tmp = self.path / f".{MANIFEST}.{os.getpid()}.tmp"
        _fsync_write(tmp, json.dumps(man, sort_keys=True).encode())
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)
        self._remove_stale(keep={man["codes"]["file"], man["payloads"]["file"]})

    def _remove_stale(self, keep: set[str]) -> None:
        for p in self.path.iterdir():
            stale = p.name.startswith(("codes-", "payloads-")) and p.name not in keep
            legacy = p.name in ("meta.json", "codes.safetensors", "payloads.json", ".tmp")
            if stale or legacy or (p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp")):
                with contextlib.suppress(OSError):
                    if p.is_dir():
                        import shutil

                        shutil.rmtree(p)
                    else:
                        p.unlink()

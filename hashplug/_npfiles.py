"""Arrays read from .npy / .npz files without loading them: memory-mapped where the file allows."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np


def open_array(path: str, *keys: str) -> np.ndarray:
    """An .npy array, or the first of ``keys`` (then "x", "embeddings") in an .npz, memory-mapped.

    ``.npy`` and arrays stored uncompressed in an ``.npz`` (``np.savez``) are mapped read-only,
    so ingest reads them batch by batch; compressed members (``np.savez_compressed``) are read
    whole. Raises ValueError naming the keys the file has when none of ``keys`` is there.
    """
    if not path.endswith(".npz"):
        return np.load(path, mmap_mode="r")
    with zipfile.ZipFile(path) as z:
        names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        key = next((k for k in (*keys, "x", "embeddings") if k in names), None)
        if key is None:
            raise ValueError(f"{path} has none of the arrays {list(keys)} (has {names})")
        info = z.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            mapped = _map_member(path, info)
            if mapped is not None:
                return mapped
    with np.load(path) as d:
        return d[key]


def _map_member(path: str, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The stored .npy member ``info`` of the zip at ``path`` as a read-only memmap, or None."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        header: Any = (
            np.lib.format.read_array_header_1_0(f)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f)
        )
        shape, fortran, dtype = header
        if dtype.hasobject:
            return None
        offset = f.tell()
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )

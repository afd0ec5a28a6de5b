"""Arrays read from .npy / .npz files without loading them: memory-mapped where the file allows."""

from __future__ import annotations

import tempfile
import zipfile
import zlib
from typing import IO, Any

import numpy as np


def open_array(path: str, *keys: str) -> np.ndarray:
    """Open an .npy array, or the first of ``keys`` (then "x", "embeddings") in an .npz.

    ``.npy`` and arrays stored uncompressed in an ``.npz`` (``np.savez``) are mapped read-only,
    so ingest reads them batch by batch; compressed members (``np.savez_compressed``) are
    decompressed in chunks into an unnamed temporary file (``TMPDIR``; deleted when the array
    is) and mapped, so memory stays bounded either way. Raises ValueError naming the keys the
    file has when none of ``keys`` is there.
    """
    if not path.endswith(".npz"):
        return np.load(path, mmap_mode="r")
    try:
        return _open_npz(path, keys)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz (truncated or damaged?): {e}") from e


def _open_npz(path: str, keys: tuple[str, ...]) -> np.ndarray:
    with zipfile.ZipFile(path) as z:
        names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        key = next((k for k in (*keys, "x", "embeddings") if k in names), None)
        if key is None:
            raise ValueError(f"{path} has none of the arrays {list(keys)} (has {names})")
        info = z.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            mapped = _map_member(path, info)
        else:
            with z.open(info) as member:
                mapped = _spill_member(member)
        if mapped is not None:
            return mapped
    with np.load(path) as d:
        return d[key]


#: Bytes decompressed per step when a compressed member is spilled to a temporary file.
SPILL_CHUNK = 64 << 20


def read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, Fortran order, dtype) from an open .npy stream, left at the data."""
    version = np.lib.format.read_magic(f)
    header: Any = (
        np.lib.format.read_array_header_1_0(f)
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0(f)
    )
    return header


def _spill_member(member: IO[bytes]) -> np.ndarray | None:
    """Copy a compressed .npy stream chunk by chunk to an unnamed temporary file and map it.

    Mapped read-only (None for object arrays). ValueError if the stream ends early (a truncated
    file).
    """
    shape, fortran, dtype = read_npy_header(member)
    if dtype.hasobject:
        return None
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    tmp = tempfile.TemporaryFile(prefix="hashplug-npz-")
    try:
        left = size
        while left:
            chunk = member.read(min(SPILL_CHUNK, left))
            if not chunk:
                raise ValueError(f"the compressed array ends {left} bytes early (truncated file?)")
            tmp.write(chunk)
            left -= len(chunk)
        tmp.flush()
        if size == 0:
            return np.empty(shape, dtype, order="F" if fortran else "C")
        return np.memmap(tmp, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C")
    finally:
        tmp.close()  # the mapping keeps the data; the file has no name, so it goes with it


def _map_member(path: str, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Map the stored .npy member ``info`` of the zip at ``path`` as a read-only memmap, or None."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran, dtype = read_npy_header(f)
        if dtype.hasobject:
            return None
        offset = f.tell()
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )

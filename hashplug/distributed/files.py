"""Where shards live: a local directory, or a URI that ``pyarrow.fs`` opens.

``s3://bucket/prefix``, ``gs://bucket/prefix``, ``abfs://...``, ``hdfs://host/path`` and
``file:///abs/dir`` are read through :func:`pyarrow.fs.FileSystem.from_uri` (credentials from the
usual environment: ``AWS_*`` variables, ``~/.aws``, ...; object-store options in the URI query,
e.g. ``s3://bucket/dir?endpoint_override=http://127.0.0.1:9000&region=us-east-1``). Local paths
keep the fast paths (``.npy`` memory maps). A shard's ``path`` is then the file's full URI, so a
worker on another machine opens it without the scan's state.
"""

from __future__ import annotations

import functools
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["is_uri", "list_dir", "stat", "open_file", "file_uri"]


def is_uri(path: str) -> bool:
    """Return True for ``scheme://...`` locations, False for local paths.

    URIs are read through pyarrow.fs.
    """
    return "://" in str(path)


@functools.lru_cache(maxsize=16)
def _fs(root: str) -> Any:
    """Return the filesystem of a URI root (``scheme://netloc?query``), cached per process."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(root + "/")[0]
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for unknown schemes
        raise ValueError(f"cannot open {root!r} as a filesystem: {e}") from e


def _split(uri: str) -> tuple[Any, str]:
    """(filesystem, path inside it) of a URI; the query string stays with the filesystem."""
    parts = urlsplit(uri)
    root = f"{parts.scheme}://{parts.netloc}" + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "file":
        return _fs(root), parts.path
    return _fs(root), f"{parts.netloc}{parts.path}"


def file_uri(directory: str, path: str) -> str:
    """Return the URI of ``path`` (as the filesystem lists it) under the URI ``directory``."""
    parts = urlsplit(directory)
    name = path.rsplit("/", 1)[-1]
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{name}{query}"


def list_dir(directory: str) -> list[str]:
    """Return the URIs of the files directly under the URI ``directory``, by name.

    Hidden files are left out. FileNotFoundError when it is not a directory.
    """
    from pyarrow import fs

    f, path = _split(directory)
    info = f.get_file_info(path.rstrip("/") or "/")
    if info.type != fs.FileType.Directory:
        raise FileNotFoundError(f"embeddings directory {directory} does not exist")
    entries = f.get_file_info(fs.FileSelector(path.rstrip("/"), recursive=False))
    names = sorted(
        e.base_name
        for e in entries
        if e.type == fs.FileType.File and not e.base_name.startswith(".")
    )
    return [file_uri(directory, n) for n in names]


def stat(uri: str) -> tuple[int, int]:
    """(size in bytes, mtime in ns; 0 when the store does not record one) of a file URI."""
    f, path = _split(uri)
    info = f.get_file_info(path)
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return int(info.size or 0), int(mtime)


def open_file(uri: str) -> IO[bytes]:
    """Open a random-access binary file object for a file URI (close it after use)."""
    f, path = _split(uri)
    return f.open_input_file(path)

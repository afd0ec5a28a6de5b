"""Labelled raw data for the benchmark: items (images, audio clips) with labels and a split.

Each loader returns a :class:`LabelledSplit` of database and query items; ``embed_split`` runs
them through an encoder into an :class:`~hashplug.bench.datasets.EmbeddingSet`, cached on disk.
Loaders read the usual on-disk layouts from a root you give; a missing file raises
``FileNotFoundError`` saying what to provide.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datasets import EmbeddingSet, load_embeddings

__all__ = [
    "LabelledSplit",
    "SOURCES",
    "load_source",
    "embed_split",
    "encoder_info",
    "fashion_mnist",
    "image_folder",
    "audio_folder",
    "esc50",
    "gtzan",
    "cifar10",
    "deephash_lists",
]

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass
class LabelledSplit:
    """Database and query items (paths, arrays, ...) with labels: 1-D ints or 2-D 0/1."""

    name: str
    modality: str  # "image" | "audio" | "text"
    db_items: Any  # a sequence: list of paths, or an array of images
    db_y: NDArray[np.int64]
    q_items: Any
    q_y: NDArray[np.int64]
    classes: list[str]

    def subsample(self, n_db: int | None, n_query: int | None, seed: int = 0) -> LabelledSplit:
        """Return a seeded random subset (sizes capped at what exists).

        ``None`` keeps everything.
        """
        rng = np.random.default_rng(seed)

        def pick(items: Any, y: NDArray[np.int64], n: int | None) -> tuple[Any, Any]:
            if n is None or n >= len(items):
                return items, y
            idx = np.sort(rng.choice(len(items), n, replace=False))
            sub = items[idx] if isinstance(items, np.ndarray) else [items[i] for i in idx]
            return sub, y[idx]

        db, dy = pick(self.db_items, self.db_y, n_db)
        q, qy = pick(self.q_items, self.q_y, n_query)
        return LabelledSplit(self.name, self.modality, db, dy, q, qy, self.classes)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} is missing")
    return path


# -- Fashion-MNIST (IDX files, e.g. Debian's dataset-fashion-mnist) -----------------------------
def _read_idx(path: Path) -> NDArray[np.uint8]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values")
    return body.reshape(shape)


FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def fashion_mnist(root: str | os.PathLike[str] | None = None) -> LabelledSplit:
    """Fashion-MNIST: the 60k training images are the database, the 10k test images the queries.

    ``root`` holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (default: Debian's
    ``dataset-fashion-mnist`` at /usr/share/datasets/fashion-mnist).
    """
    r = Path(root or os.environ.get("HASHPLUG_FASHION_MNIST", FASHION_MNIST_ROOT))
    hint = (
        "Fashion-MNIST not found; install it (Debian: apt-get install dataset-fashion-mnist) or "
        "pass the folder with the IDX files (train-images-idx3-ubyte.gz, ...)"
    )

    def part(stem: str) -> NDArray[np.uint8]:
        for name in (f"{stem}.gz", stem):
            if (r / name).is_file():
                return _read_idx(r / name)
        raise FileNotFoundError(f"{hint}: no {stem}[.gz] in {r}")

    return LabelledSplit(
        "fashion-mnist",
        "image",
        part("train-images-idx3-ubyte"),
        part("train-labels-idx1-ubyte").astype(np.int64),
        part("t10k-images-idx3-ubyte"),
        part("t10k-labels-idx1-ubyte").astype(np.int64),
        list(FASHION_CLASSES),
    )


# -- folders of files, one sub-folder per class ---------------------------------------------------
def _folder(
    root: str | os.PathLike[str], ext: tuple[str, ...], query_fraction: float, seed: int
) -> tuple[list[str], NDArray[np.int64], list[str], NDArray[np.int64], list[str]]:
    r = _need(Path(root), "labelled folder (one sub-folder per class)")
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((r / name).rglob("*")):
            if f.suffix.lower() in ext:
                files.append(str(f))
                labels.append(c)
    if not files:
        raise FileNotFoundError(
            f"no {'/'.join(ext)} files under {r}: expected one sub-folder per class"
        )
    if not 0 < query_fraction < 1:
        raise ValueError(f"query_fraction must be in (0, 1), got {query_fraction}")
    y = np.asarray(labels, np.int64)
    is_q = np.random.default_rng(seed).random(len(files)) < query_fraction
    db = [f for f, q in zip(files, is_q, strict=True) if not q]
    qs = [f for f, q in zip(files, is_q, strict=True) if q]
    return db, y[~is_q], qs, y[is_q], classes


def image_folder(
    root: str | os.PathLike[str], *, query_fraction: float = 0.1, seed: int = 0
) -> LabelledSplit:
    """Images in ``root/<class>/*``; a seeded ``query_fraction`` of them are the queries."""
    db, dy, q, qy, classes = _folder(root, IMAGE_EXT, query_fraction, seed)
    return LabelledSplit(Path(root).name, "image", db, dy, q, qy, classes)


def audio_folder(
    root: str | os.PathLike[str], *, query_fraction: float = 0.2, seed: int = 0
) -> LabelledSplit:
    """Audio files in ``root/<class>/*``; a seeded ``query_fraction`` of them are the queries."""
    db, dy, q, qy, classes = _folder(root, AUDIO_EXT, query_fraction, seed)
    return LabelledSplit(Path(root).name, "audio", db, dy, q, qy, classes)


# -- the seed paper's audio sets --------------------------------------------------------------
def esc50(root: str | os.PathLike[str]) -> LabelledSplit:
    """Load ESC-50: fold 1 is the database, folds 2-5 the queries.

    From ``root/meta/esc50.csv`` and ``root/audio/*.wav`` (the seed paper's protocol).
    """
    r = Path(root)
    meta = _need(r / "meta" / "esc50.csv", "ESC-50 (github.com/karolpiczak/ESC-50): root/meta")
    db: list[str] = []
    q: list[str] = []
    dy: list[int] = []
    qy: list[int] = []
    names: dict[int, str] = {}
    with open(meta, newline="") as f:
        for row in csv.DictReader(f):
            path, y = str(r / "audio" / row["filename"]), int(row["target"])
            names[y] = row["category"]
            (db if row["fold"] == "1" else q).append(path)
            (dy if row["fold"] == "1" else qy).append(y)
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
    return LabelledSplit("esc50", "audio", db, np.array(dy), q, np.array(qy), classes)


def gtzan(
    root: str | os.PathLike[str], *, query_fraction: float = 0.2, seed: int = 0
) -> LabelledSplit:
    """GTZAN genres (``root/<genre>/*.wav``, also accepted under ``root/genres``)."""
    r = Path(root)
    if (r / "genres").is_dir():
        r = r / "genres"
    elif (r / "genres_original").is_dir():
        r = r / "genres_original"
    split = audio_folder(r, query_fraction=query_fraction, seed=seed)
    split.name = "gtzan"
    return split


# -- the seed paper's image sets --------------------------------------------------------------
def cifar10(root: str | os.PathLike[str], *, download: bool = False) -> LabelledSplit:
    """CIFAR-10 through torchvision: training set = database, test set = queries.

    ``download=True`` fetches it when online; offline, ``root`` must hold cifar-10-batches-py.
    """
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("CIFAR-10 needs torchvision: pip install 'hashplug[image]'") from e
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"CIFAR-10 not found in {root}: pass download=True (--download) when online, or "
            "put cifar-10-batches-py there"
        ) from e
    return LabelledSplit(
        "cifar10", "image", train.data, np.asarray(train.targets, np.int64),
        test.data, np.asarray(test.targets, np.int64), list(train.classes),
    )  # fmt: skip


def deephash_lists(root: str | os.PathLike[str], name: str = "") -> LabelledSplit:
    """Load Flickr25K, COCO or NUS-WIDE in the DeepHash split-list layout.

    ``root/database.txt`` and ``root/test.txt`` (lines ``relative/path.jpg 0 1 0 ...``, multi-hot
    labels); image paths are relative to ``root`` (or absolute).
    """
    r = Path(root)

    def read(fname: str) -> tuple[list[str], NDArray[np.int64]]:
        p = _need(
            r / fname,
            "DeepHash split list (github.com/swuxyj/DeepHash-pytorch data/<set>/): "
            "root/database.txt and root/test.txt",
        )
        paths, labels = [], []
        with open(p) as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 2:
                    raise ValueError(f"{p}:{n}: expected 'path label label ...'")
                paths.append(parts[0] if os.path.isabs(parts[0]) else str(r / parts[0]))
                labels.append([int(v) for v in parts[1:]])
        widths = {len(v) for v in labels}
        if len(widths) != 1:
            raise ValueError(f"{p}: label vectors have different lengths {sorted(widths)}")
        return paths, np.asarray(labels, np.int64)

    db, dy = read("database.txt")
    q, qy = read("test.txt")
    if dy.shape[1] != qy.shape[1]:
        raise ValueError(f"{r}: database and test lists have different label widths")
    classes = [str(i) for i in range(dy.shape[1])]
    return LabelledSplit(name or r.name, "image", db, dy, q, qy, classes)


#: Source name -> loader(root). Names are the CLI's ``--dataset`` values.
SOURCES: dict[str, Callable[..., LabelledSplit]] = {
    "fashion-mnist": fashion_mnist,
    "cifar10": cifar10,
    "flickr25k": lambda root: deephash_lists(root, "flickr25k"),
    "coco": lambda root: deephash_lists(root, "coco"),
    "nuswide": lambda root: deephash_lists(root, "nuswide"),
    "esc50": esc50,
    "gtzan": gtzan,
    "image-folder": image_folder,
    "audio-folder": audio_folder,
}


def load_source(name: str, root: str | os.PathLike[str] | None = None, **kw: Any) -> LabelledSplit:
    """Load a labelled split by name; every source but fashion-mnist needs ``root``."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(SOURCES)}")
    if root is None and name != "fashion-mnist":
        raise ValueError(f"dataset {name!r} needs a root folder (--root DIR)")
    return SOURCES[name](root, **kw) if root is not None else SOURCES[name](**kw)


# -- items -> embeddings, cached ----------------------------------------------------------------
def _cache_key(split: LabelledSplit, encoder_name: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([split.name, split.modality, encoder_name]).encode())
    for items, y in ((split.db_items, split.db_y), (split.q_items, split.q_y)):
        h.update(np.ascontiguousarray(y).tobytes())
        if isinstance(items, np.ndarray):
            h.update(np.ascontiguousarray(items).tobytes())
        else:
            h.update("\n".join(map(str, items)).encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$HASHPLUG_CACHE``, else ``~/.cache/hashplug``."""
    env = os.environ.get("HASHPLUG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hashplug"


def embed_split(
    split: LabelledSplit,
    encoder: Any,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[EmbeddingSet, Path, dict[str, Any]]:
    """Encode database and query items; return the set, its cached ``.npz`` path and timings.

    Timings: ``encode_s``, ``items_per_s`` (``None`` when read from the cache) and ``cached`` (a
    bool).

    The cache file is keyed by the items, the labels and ``encoder.name``, so a second run with
    the same data and encoder reads it instead of encoding again.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = str(getattr(encoder, "name", type(encoder).__name__))
    path = cache / f"{split.name}-{_cache_key(split, name)}.npz"
    if path.is_file():
        return load_embeddings(path), path, {"encode_s": None, "items_per_s": None, "cached": True}
    fn = {
        "image": "encode_images",
        "audio": "encode_audio",
        "text": "encode_texts",
    }[split.modality]
    encode = getattr(encoder, fn, None)
    if encode is None:
        raise ValueError(f"encoder {name} has no {fn}: it cannot embed {split.modality} data")
    import time

    items = list(split.db_items) + list(split.q_items)
    t0 = time.perf_counter()
    x = np.asarray(encode(items, batch_size=batch_size, progress=progress), np.float32)
    dt = time.perf_counter() - t0
    n_db = len(split.db_items)
    info = f"{split.name}: {n_db} database / {len(split.q_items)} query items, encoder {name}"
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, db_x=x[:n_db], db_y=split.db_y, q_x=x[n_db:], q_y=split.q_y, info=np.array(info))
    os.replace(tmp, path)
    timing = {"encode_s": dt, "items_per_s": len(items) / dt, "cached": False}
    return load_embeddings(path), path, timing


def encoder_info(
    encoder: Any, ds: EmbeddingSet, cache: Path, timing: dict[str, Any]
) -> dict[str, Any]:
    """Return the ``encoder`` record of ``results.json``: spec, dimension, items, throughput, cache.

    ``encode_s`` and ``items_per_s`` are ``None`` when the embeddings were read from the cache.
    """
    return {
        "name": str(getattr(encoder, "name", type(encoder).__name__)),
        "dim": int(ds.db_x.shape[1]),
        "n_items": int(ds.db_x.shape[0] + ds.q_x.shape[0]),
        "device": str(getattr(encoder, "device", "cpu")),
        "cache": str(cache),
        "encode_s": timing["encode_s"],
        "items_per_s": timing["items_per_s"],
        "cached": bool(timing["cached"]),
    }

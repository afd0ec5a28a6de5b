"""Labelled raw-data loaders and the cached items -> embeddings step of the benchmark."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from hashplug.bench import sources as S
from hashplug.bench.datasets import load_embeddings


def _write_idx(path: Path, a: np.ndarray, compress: bool = True) -> None:
    head = bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    data = head + a.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def tiny_fmnist(tmp_path, rng):
    imgs = rng.integers(0, 256, (30, 28, 28))
    labels = np.arange(30) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:10], compress=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:10], compress=False)
    return tmp_path, imgs, labels


class PixelEncoder:
    """A real (if weak) image encoder: 7x7 average-pooled grey pixels, 49-d."""

    name = "pixels:7x7"
    dim = 49

    def __init__(self) -> None:
        self.calls = 0

    def encode_images(self, images, batch_size=64, progress=True):
        self.calls += 1
        a = np.stack([np.asarray(i, np.float32) for i in images])
        return a.reshape(len(a), 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(a), 49)


def test_fashion_mnist_reads_gzipped_and_plain_idx(tiny_fmnist):
    root, imgs, labels = tiny_fmnist
    split = S.fashion_mnist(root)
    assert split.modality == "image" and len(split.classes) == 10
    np.testing.assert_array_equal(split.db_items, imgs)
    np.testing.assert_array_equal(split.db_y, labels)
    np.testing.assert_array_equal(split.q_items, imgs[:10])
    sub = split.subsample(12, 4, seed=1)
    assert len(sub.db_items) == 12 and len(sub.q_y) == 4
    again = split.subsample(12, 4, seed=1)
    np.testing.assert_array_equal(sub.db_items, again.db_items)


def test_fashion_mnist_errors_say_what_to_provide(tmp_path, tiny_fmnist):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        S.fashion_mnist(tmp_path / "nowhere")
    root, _, _ = tiny_fmnist
    data = (root / "t10k-images-idx3-ubyte").read_bytes()
    (root / "t10k-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        S.fashion_mnist(root)


def test_folders_esc50_and_deephash_lists(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "img" / c / f"{i}.png").write_bytes(b"")
    (tmp_path / "img" / "dog" / "notes.txt").write_text("ignored")
    split = S.image_folder(tmp_path / "img", query_fraction=0.3, seed=0)
    assert split.classes == ["cat", "dog"]
    assert len(split.db_items) + len(split.q_items) == 20 and len(split.q_items) > 0
    assert all(str(p).endswith(".png") for p in split.db_items)
    assert set(split.db_y) | set(split.q_y) == {0, 1}
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        S.audio_folder(tmp_path / "img")

    esc = tmp_path / "ESC-50"
    (esc / "meta").mkdir(parents=True)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    rows += [f"{f}-{i}.wav,{f},{i % 3},c{i % 3},False,1,A" for f in range(1, 6) for i in range(4)]
    (esc / "meta" / "esc50.csv").write_text("\n".join(rows))
    e = S.esc50(esc)
    assert len(e.db_items) == 4 and len(e.q_items) == 16 and e.classes == ["c0", "c1", "c2"]
    assert all("/audio/1-" in p for p in e.db_items)

    dh = tmp_path / "coco"
    dh.mkdir()
    (dh / "database.txt").write_text("a.jpg 1 0 1\nb.jpg 0 1 0\n")
    (dh / "test.txt").write_text("c.jpg 1 1 0\n")
    c = S.load_source("coco", dh)
    assert c.db_y.shape == (2, 3) and c.q_y.tolist() == [[1, 1, 0]]
    assert c.db_items[0] == str(dh / "a.jpg")
    (dh / "test.txt").write_text("c.jpg 1 1\n")
    with pytest.raises(ValueError, match="label widths"):
        S.load_source("coco", dh)
    with pytest.raises(ValueError, match="needs a root"):
        S.load_source("esc50")
    with pytest.raises(ValueError, match="unknown dataset"):
        S.load_source("mnist-9000")


def test_embed_split_writes_a_loadable_set_and_caches_it(tmp_path, tiny_fmnist):
    root, imgs, labels = tiny_fmnist
    split = S.fashion_mnist(root)
    enc = PixelEncoder()
    ds, path, timing = S.embed_split(split, enc, cache_dir=tmp_path / "cache", progress=False)
    assert enc.calls == 1 and timing["items_per_s"] > 0 and timing["cached"] is False
    assert ds.db_x.shape == (30, 49) and ds.q_x.shape == (10, 49)
    np.testing.assert_array_equal(ds.db_y, labels)
    ref = imgs[:1].astype(np.float32).reshape(1, 7, 4, 7, 4).mean(axis=(2, 4)).ravel()
    np.testing.assert_allclose(ds.db_x[0], ref, rtol=1e-6)
    assert load_embeddings(path).db_x.shape == (30, 49)
    ds2, path2, timing2 = S.embed_split(split, enc, cache_dir=tmp_path / "cache", progress=False)
    assert (
        enc.calls == 1
        and path2 == path
        and timing2 == {"encode_s": None, "items_per_s": None, "cached": True}
    )
    _, path3, _ = S.embed_split(split.subsample(20, 5), enc, cache_dir=tmp_path / "cache")
    assert path3 != path and enc.calls == 2

    class TextOnly:
        name = "text-only"

    with pytest.raises(ValueError, match="cannot embed image"):
        S.embed_split(split, TextOnly(), cache_dir=tmp_path / "c2")

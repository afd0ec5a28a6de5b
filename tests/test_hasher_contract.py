"""The hasher contract: check_hasher over every built-in hasher, what it catches, file compatibility."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hashplug
from hashplug.hashers import (
    ITQ,
    LSH,
    HashCoder,
    Hasher,
    HashingBaseline,
    check_hasher,
    load_hasher,
)
from hashplug.hashers.linear import LinearHasher
from hashplug.hashers.pca import streamed_moments

DATA = Path(__file__).parent / "data"

BUILT_IN = [
    HashingBaseline(16),
    HashingBaseline(8, seed=3, pca=False),
    HashingBaseline(8, rotate=False),
    ITQ(16, n_iter=5, seed=1),
    LSH(16, seed=2),
    LSH(24, center=False),
]


@pytest.mark.parametrize("hasher", BUILT_IN, ids=repr)
def test_check_hasher_passes_on_built_in_hashers(hasher):
    before = hasher.get_params()
    check_hasher(hasher)
    assert hasher.get_params() == before and not hasher.is_fitted  # the given one is untouched


def test_check_hasher_passes_on_hashcoder():
    pytest.importorskip("torch")
    check_hasher(HashCoder(8, hidden=32, epochs=1, batch_size=64, k=3, device="cpu"))


def test_params_come_from_the_signature():
    names = ("n_bits", "seed", "pca", "rotate", "calibration")
    assert HashingBaseline._get_param_names() == names
    assert ITQ._get_param_names() == ("n_bits", "n_iter", "seed", "calibration")
    assert LSH._get_param_names() == ("n_bits", "seed", "center", "calibration")
    assert HashCoder._get_param_names()[:3] == ("n_bits", "hidden", "views")
    # calibration "none" is left out of the spec: the spec (and fingerprint) of earlier versions
    h = HashingBaseline(np.int64(16), seed=np.int32(4), pca=np.bool_(True), calibration="none")
    assert vars(h) == h.get_params()  # __init__ stores its arguments and nothing else
    spec = h.get_spec()  # canonical JSON types, as earlier versions wrote them
    assert spec == {
        "class": "HashingBaseline",
        "n_bits": 16,
        "seed": 4,
        "pca": True,
        "rotate": True,
    }
    assert [type(v) for v in spec.values()] == [str, int, int, bool, bool]
    assert repr(LSH(8, seed=1)) == "LSH(n_bits=8, seed=1, center=True, calibration='per-bit')"
    assert HashingBaseline(16).get_spec()["calibration"] == "per-bit"


def test_settings_are_checked_by_fit_not_init(rng):
    x = rng.standard_normal((50, 20)).astype(np.float32)
    h = HashingBaseline(12, seed=-1)  # stored, not checked
    assert h.n_bits == 12 and h.seed == -1
    with pytest.raises(ValueError, match="multiple of 8"):
        h.fit(x)
    for bad, match in (
        (HashingBaseline(8, seed=-1), "seed must be a non-negative int"),
        (HashingBaseline(8, pca="yes"), "pca must be True or False"),
        (ITQ(8, n_iter=-1), "n_iter must be a non-negative int"),
        (LSH(8, seed=1.5), "seed must be a non-negative int"),
        (HashCoder(8, device=3), "device must be a string"),
        (HashCoder(8, lr="fast"), "lr must be a number"),
    ):
        with pytest.raises(ValueError, match=match):
            bad.fit(x)


def test_encoder_spec_is_not_fitted_state(rng):
    x = rng.standard_normal((50, 20)).astype(np.float32)
    h = HashingBaseline(8).set_encoder("sbert:all-MiniLM-L6-v2")
    assert h.encoder_spec == h.encoder_ == "sbert:all-MiniLM-L6-v2" and not h.is_fitted
    assert "encoder_" not in vars(h)
    with pytest.raises(AttributeError):
        h.encoder_ = "other:model"  # type: ignore[misc]  # read-only alias
    h.fit(x)  # fit leaves it as it is
    assert h.encoder_spec == "sbert:all-MiniLM-L6-v2"


# -- what check_hasher catches -------------------------------------------------------------------
class _Converting(LinearHasher):
    """Converts its argument in __init__ (sklearn forbids it: set_params would bypass it)."""

    def __init__(self, n_bits: int, *, seed: int = 0):
        self.n_bits = n_bits
        self.seed = float(seed)

    def fit(self, x: Any) -> _Converting:
        acc = streamed_moments(x, with_cov=False)  # checks the input (empty, NaN, shape)
        rng = np.random.default_rng(0)
        self._set_linear(acc.mean, rng.standard_normal((acc.dim or 0, int(self.n_bits))))
        return self


class _PublicState(_Converting):
    """Keeps fitted state in a public attribute without the trailing underscore."""

    def __init__(self, n_bits: int, *, seed: int = 0):
        self.n_bits = n_bits
        self.seed = seed

    def fit(self, x: Any) -> _PublicState:
        super().fit(x)
        self.n_seen = len(x)
        return self


class _Unchecked(_PublicState):
    """Never checks its settings: n_bits=12 fits."""

    def fit(self, x: Any) -> _Unchecked:
        return _Converting.fit(self, x)  # type: ignore[return-value]


class _Reversed(_PublicState):
    """Packs its bits LSB first."""

    def fit(self, x: Any) -> _Reversed:
        self._check_params()
        return _Converting.fit(self, x)  # type: ignore[return-value]

    def encode(self, x: Any) -> np.ndarray:
        return np.packbits(self.logits(x) > 0, axis=1, bitorder="little")


@pytest.mark.parametrize(
    "hasher, message",
    [
        (_Converting(8, seed=1), "store 'seed' as given"),
        (_PublicState(8), "only attributes ending in '_'.*n_seen"),
        (_Reversed(8), "MSB-first"),
        (_Unchecked(8), "n_bits=12 must raise ValueError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Hasher) else "",
)
def test_check_hasher_names_the_broken_rule(hasher, message):
    with pytest.raises(AssertionError, match=message):
        check_hasher(hasher)


def test_check_hasher_refuses_non_hashers():
    with pytest.raises(AssertionError, match="not a hashplug.hashers.Hasher"):
        check_hasher(object())  # type: ignore[arg-type]
    assert hashplug.check_hasher is check_hasher


# -- files written by earlier versions -----------------------------------------------------------
def test_files_of_earlier_versions_load_with_their_fingerprints(tmp_path):
    """tests/data/*.hasher were written by commit fadf921 (before hashers became estimators).

    They load, keep their fingerprint and codes, and saving them again gives the same bytes.
    """
    expected = json.loads((DATA / "expected.json").read_text())
    q = np.load(DATA / "queries.npy")
    for name, exp in expected.items():
        h = load_hasher(DATA / f"{name}.hasher")
        assert h.fingerprint == exp["fingerprint"], name
        assert h.get_spec() == exp["spec"], name
        np.testing.assert_array_equal(h.encode(q), np.array(exp["codes"], np.uint8), err_msg=name)
        again = h.save(tmp_path / f"{name}.hasher")
        if (
            name != "hashcoder"
        ):  # (its training history is not loaded, so its last loss is not saved again)
            assert again.read_bytes() == (DATA / f"{name}.hasher").read_bytes(), name
        assert load_hasher(again).fingerprint == exp["fingerprint"], name
    itq = load_hasher(DATA / "itq.hasher")
    assert itq.encoder_spec == itq.encoder_ == "sbert:all-MiniLM-L6-v2"


def test_a_file_whose_spec_fails_the_checks_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    src = DATA / "lsh.hasher"
    with safe_open(str(src), framework="numpy") as f:
        meta = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    header = json.loads(meta["hashplug"])
    header["spec"]["seed"] = -3
    save_file(arrays, str(tmp_path / "bad.hasher"), metadata={"hashplug": json.dumps(header)})
    with pytest.raises(hashplug.HasherFileError, match="does not accept.*seed"):
        load_hasher(tmp_path / "bad.hasher")
    shutil.copy(src, tmp_path / "ok.hasher")
    assert load_hasher(tmp_path / "ok.hasher").get_spec()["seed"] == 5

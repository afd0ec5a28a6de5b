"""Query calibration ("none" / "per-bit") and HashCoder's data-sized training length."""

import json

import numpy as np
import pytest

from hashplug import ITQ, LSH, HashCoder, HasherFileError, HashingBaseline, load_hasher
from hashplug.hashers.hashcoder import MIN_STEPS, auto_epochs


def _saturated(p):
    return float(((p == 0) | (p == 1)).mean())


# LSH on the image set as it is (hyperplanes of norm ~36); Hashing-Baseline on it scaled to the
# norms of a 512-d audio set (~780), where its 16-bit logits saturate too.
@pytest.mark.parametrize(("cls", "scale"), [(LSH, 1.0), (HashingBaseline, 25.0)])
def test_per_bit_calibration_stops_float32_saturation_on_large_norm_rows(cls, scale, fmnist):
    x = fmnist["db_x"][:2000, :256] * scale  # 256 of the 1280 features: a quick PCA
    q = fmnist["q_x"][:, :256] * scale
    big = q[np.argsort(np.linalg.norm(q, axis=1))[-300:]]  # the largest-norm queries
    plain = cls(32, calibration="none").fit(x)
    cal = cls(32, calibration="per-bit").fit(x)
    np.testing.assert_array_equal(plain.encode(big), cal.encode(big))  # codes never change
    assert plain.fingerprint != cal.fingerprint
    before, after = _saturated(plain.query(big)), _saturated(cal.query(big))
    assert after < 0.01 < before, (before, after)


def test_calibrated_hasher_round_trips_and_none_keeps_the_old_spec(rng, tmp_path):
    x = rng.normal(size=(300, 24)).astype(np.float32) * 50
    h = ITQ(16, n_iter=5).fit(x)  # default calibration: per-bit
    g = load_hasher(h.save(tmp_path / "h.hasher"))
    assert g.calibration == "per-bit" and g.fingerprint == h.fingerprint
    np.testing.assert_array_equal(g.query(x[:20]), h.query(x[:20]))
    np.testing.assert_array_equal(g.query_scale_, h.query_scale_)
    plain = ITQ(16, n_iter=5, calibration="none").fit(x)
    assert "calibration" not in plain.get_spec() and plain.query_scale_ is None
    f = load_hasher(plain.save(tmp_path / "p.hasher"))
    assert f.calibration == "none" and f.fingerprint == plain.fingerprint


def test_file_whose_calibration_and_arrays_disagree_is_refused(rng, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    x = rng.normal(size=(200, 16)).astype(np.float32)
    src = LSH(8).fit(x).save(tmp_path / "lsh.hasher")
    with safe_open(str(src), framework="numpy") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    del arrays["query_scale_"]
    save_file(arrays, str(tmp_path / "cut.hasher"), metadata=meta)
    with pytest.raises(HasherFileError, match="calibration"):
        load_hasher(tmp_path / "cut.hasher")
    header = json.loads(meta["hashplug"])
    header["spec"]["calibration"] = "per-feature"
    save_file(arrays, str(tmp_path / "bad.hasher"), metadata={"hashplug": json.dumps(header)})
    with pytest.raises(HasherFileError, match="calibration must be one of"):
        load_hasher(tmp_path / "bad.hasher")


@pytest.mark.parametrize("make", [HashingBaseline, ITQ, LSH, HashCoder])
@pytest.mark.parametrize("bad", ["per_bit", "Per-Bit", None, True])
def test_bad_calibration_is_a_clear_error(make, bad, rng):
    x = rng.normal(size=(50, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="calibration must be one of 'none', 'per-bit'"):
        make(8, calibration=bad).fit(x)


def test_hashcoder_epochs_scale_with_the_data():
    assert auto_epochs(20_000, 256) == 7  # 78 steps an epoch
    assert auto_epochs(1_600, 256) == 84  # 6 steps an epoch: at least MIN_STEPS steps
    assert auto_epochs(10**6, 256) == 5  # never fewer than the paper's 5 epochs
    assert auto_epochs(100, 256) == MIN_STEPS  # one (short) batch per epoch
    for bad in ("many", 0, 2.5):
        with pytest.raises(ValueError, match="epochs"):
            HashCoder(8, epochs=bad).get_spec()

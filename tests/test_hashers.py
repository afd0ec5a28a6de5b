import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from hashplug import ITQ, LSH, HasherFileError, HashingBaseline, NotFittedError, load_hasher
from hashplug.bench.metrics import map_at_k

ALL = [
    lambda nb: HashingBaseline(nb, seed=3),
    lambda nb: HashingBaseline(nb, rotate=False),
    lambda nb: HashingBaseline(nb, pca=False),
    lambda nb: ITQ(nb, n_iter=10),
    lambda nb: LSH(nb),
]


def blobs(rng, n=600, d=48):
    centers = rng.normal(size=(5, d)) * 3
    return (centers[rng.integers(0, 5, n)] + rng.normal(size=(n, d)) + 2.0).astype(np.float32)


def sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


@pytest.mark.parametrize("make", ALL)
def test_interface_shapes_and_identities(make, rng):
    x = blobs(rng)
    h = make(32).fit(x)
    u = h.logits(x[:50])
    assert u.dtype == np.float32 and u.shape == (50, 32)
    c = h.encode(x[:50])
    assert c.dtype == np.uint8 and c.shape == (50, 4)
    np.testing.assert_array_equal(c, np.packbits(u > 0, axis=1))
    p = h.query(x[:50])
    assert p.dtype == np.float32
    s = h.query_scale_.astype(np.float64)  # per-bit calibration (the default): training std
    np.testing.assert_allclose(s, (h.logits(x).astype(np.float64)).std(axis=0), rtol=1e-3)
    np.testing.assert_allclose(p, sigmoid(u.astype(np.float64) / s), rtol=1e-6, atol=1e-7)
    assert h.dim_ == 48 and isinstance(h.fingerprint, str) and len(h.fingerprint) == 16


@pytest.mark.parametrize("make", ALL)
def test_save_load_round_trip(make, rng, tmp_path):
    x = blobs(rng)
    h = make(16).fit(x)
    path = h.save(tmp_path / "h.safetensors")
    g = load_hasher(path)
    assert type(g) is type(h) and g.get_spec() == h.get_spec()
    assert g.fingerprint == h.fingerprint
    np.testing.assert_array_equal(g.logits(x), h.logits(x))
    assert type(h).load(path).fingerprint == h.fingerprint


def test_fit_on_batches_matches_one_array(rng):
    x = blobs(rng, n=1000)
    whole = HashingBaseline(24).fit(x)
    for sizes in ([1000], [1, 999], [333, 333, 334], [100] * 10):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        for batches in (parts, iter(parts), (b for b in parts)):
            h = HashingBaseline(24).fit(batches)
            np.testing.assert_allclose(h.projection_, whole.projection_, atol=1e-5)
            np.testing.assert_allclose(h.logits(x), whole.logits(x), atol=1e-4)
            assert h.n_samples_ == 1000


def test_baseline_is_pca_then_orthogonal_rotation(rng):
    x = blobs(rng, n=2000, d=40).astype(np.float64)
    h = HashingBaseline(16, seed=7).fit(x)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    # Same subspace as the top-16 principal directions, in the same order up to sign.
    overlap = np.abs(h.components_.astype(np.float64) @ vt[:16].T)
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-4)
    np.testing.assert_allclose(h.explained_variance_, s[:16] ** 2 / (len(x) - 1), rtol=1e-4)
    r = h.rotation_.astype(np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-5)
    assert not np.allclose(np.abs(r), np.eye(16), atol=0.1)  # really rotated
    p = h.projection_.astype(np.float64)
    np.testing.assert_allclose(p.T @ p, np.eye(16), atol=1e-4)  # no whitening
    assert HashingBaseline(16, seed=8).fit(x).fingerprint != h.fingerprint
    assert HashingBaseline(16, seed=7).fit(x).fingerprint == h.fingerprint


def test_no_rotation_asymmetric_distance_equals_plain_numpy(fmnist):
    x, q = fmnist["db_x"][:5000], fmnist["q_x"][:200]
    h = HashingBaseline(32, rotate=False, calibration="none").fit(x)  # the paper's queries
    # Independent computation: float64 PCA by SVD, signs aligned to the hasher's components.
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    _, _, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    v = vt[:32] * np.sign(np.sum(vt[:32] * h.components_, axis=1))[:, None]
    b = ((x64 - mean) @ v.T > 0).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-((q.astype(np.float64) - mean) @ v.T)))
    ref = np.abs(b[None, :, :] - p[:, None, :]).sum(axis=2)
    bits = np.unpackbits(h.encode(x), axis=1).astype(np.float64)
    pq = h.query(q).astype(np.float64)
    ours = pq.sum(1, keepdims=True) + (1 - 2 * pq) @ bits.T
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    assert (bits != b).mean() < 1e-4  # only bits with |logit| ~ 0 may differ


def test_itq_reduces_quantization_loss(rng):
    x = blobs(rng, n=1500)
    h = ITQ(16, n_iter=30).fit(x)
    loss = np.array(h.quantization_loss_)
    assert loss[-1] < loss[0]
    assert np.all(np.diff(loss) <= 1e-6 * loss[0])
    r = h.rotation_.astype(np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-5)


def test_lsh_is_data_independent_apart_from_mean(rng):
    a, b = blobs(rng), blobs(rng) * 5
    np.testing.assert_array_equal(
        LSH(32, seed=1).fit(a).projection_, LSH(32, seed=1).fit(b).projection_
    )
    assert not np.array_equal(
        LSH(32, seed=1).fit(a).projection_, LSH(32, seed=2).fit(a).projection_
    )
    np.testing.assert_array_equal(LSH(32, center=False).fit(a).mean_, 0)


def test_input_dtypes_and_layouts_are_converted(rng):
    x = blobs(rng).astype(np.float64)
    h = HashingBaseline(16).fit(x)
    ref = h.logits(x.astype(np.float32))
    np.testing.assert_allclose(h.logits(x), ref, atol=1e-6)
    np.testing.assert_allclose(h.logits(np.asfortranarray(x)), ref, atol=1e-6)
    wide = np.zeros((x.shape[0], 96))
    wide[:, ::2] = x
    np.testing.assert_allclose(h.logits(wide[:, ::2]), ref, atol=1e-6)
    np.testing.assert_allclose(
        h.logits(x.astype(np.float16)), h.logits(x.astype(np.float16).astype(np.float32))
    )
    HashingBaseline(16).fit(x.astype(np.float16))


@pytest.mark.parametrize("cls", [HashingBaseline, ITQ])
def test_n_bits_above_dimension_pads_before_the_rotation(rng, cls, tmp_path):
    x = blobs(rng)  # d = 48
    h = cls(128).fit(x)
    codes = h.encode(x)
    assert codes.shape == (600, 16)
    frac = np.unpackbits(codes, axis=1).mean(axis=0)
    assert ((frac > 0.02) & (frac < 0.98)).all()  # no dead (zero-padded) bit
    # All 48 components kept, spread over 128 bits by orthonormal rows: inner products of the
    # centred rows are preserved, so the cosine estimator sees the whole embedding.
    u = h.logits(x[:50]).astype(np.float64)
    c = x[:50].astype(np.float64) - h.mean_
    np.testing.assert_allclose(u @ u.T, c @ c.T, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(h.projection_ @ h.projection_.T, np.eye(48), atol=1e-5)
    h.save(tmp_path / "h.npz")
    np.testing.assert_array_equal(type(h).load(tmp_path / "h.npz").encode(x), codes)
    with pytest.raises(ValueError, match="48 PCA components.*at least 48 training samples"):
        cls(128).fit(x[:40])


def test_bad_input_errors(rng):
    x = blobs(rng)
    with pytest.raises(ValueError, match="multiple of 8"):
        HashingBaseline(12).fit(x)  # settings are checked by fit (scikit-learn style)
    with pytest.raises(ValueError, match="positive"):
        LSH(0).fit(x)
    with pytest.raises(ValueError, match="embedding dimension 48: rotate=False"):
        HashingBaseline(64, rotate=False).fit(x)
    with pytest.raises(ValueError, match="training samples"):
        ITQ(16).fit(x[:10])
    with pytest.raises(ValueError, match="empty"):
        HashingBaseline(8).fit(x[:0])
    with pytest.raises(ValueError, match="no training data"):
        HashingBaseline(8).fit(iter([]))
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        HashingBaseline(8).fit(bad)
    h = HashingBaseline(8).fit(x)
    with pytest.raises(ValueError, match="NaN.*first: \\[3\\]"):
        h.encode(bad)
    bad[3, 5] = np.inf
    with pytest.raises(ValueError, match="inf"):
        h.query(bad)
    with pytest.raises(ValueError, match="dimension 47.*fitted on 48"):
        h.encode(x[:, :47])
    with pytest.raises(ValueError, match="reshape"):
        h.encode(x[0])
    with pytest.raises(ValueError, match="numeric"):
        h.encode(np.array([["a"] * 48]))
    with pytest.raises(NotFittedError, match="not fitted"):
        HashingBaseline(8).encode(x)
    with pytest.raises(ValueError, match="not fitted"):
        _ = LSH(8).fingerprint


def test_file_errors(rng, tmp_path):
    x = blobs(rng)
    path = HashingBaseline(16).fit(x).save(tmp_path / "h.st")
    data = path.read_bytes()
    with pytest.raises(HasherFileError, match="no hasher file"):
        load_hasher(tmp_path / "nope")
    for cut in (5, 20, len(data) // 2, len(data) - 1):
        (tmp_path / "t.st").write_bytes(data[:cut])
        with pytest.raises(HasherFileError, match="truncated|not a readable"):
            load_hasher(tmp_path / "t.st")
    altered = bytearray(data)
    altered[-3] ^= 0x40
    (tmp_path / "a.st").write_bytes(bytes(altered))
    with pytest.raises(HasherFileError, match="altered"):
        load_hasher(tmp_path / "a.st")
    # A newer format version in the header is refused with a clear message.
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["hashplug"])
    meta["format_version"] = 99
    header["__metadata__"]["hashplug"] = json.dumps(meta)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    (tmp_path / "v.st").write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n :])
    with pytest.raises(HasherFileError, match="newer"):
        load_hasher(tmp_path / "v.st")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(3)}, str(tmp_path / "other.st"))
    with pytest.raises(HasherFileError, match="not a hashplug hasher"):
        load_hasher(tmp_path / "other.st")
    with pytest.raises(HasherFileError, match="not a ITQ"):
        ITQ.load(path)


def test_loads_without_torch(rng, tmp_path):
    path = HashingBaseline(16).fit(blobs(rng)).save(tmp_path / "h.st")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, hashplug\n"
        f"h = hashplug.load_hasher({str(path)!r})\n"
        "print(h.encode(np.ones((2, 48), np.float32)).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2, 2)"


def _maps(h, d):
    bits = np.unpackbits(h.encode(d["db_x"]), axis=1).astype(np.float32)
    p = h.query(d["q_x"])
    qb = (p > 0.5).astype(np.float32)
    out = []
    for w in (p, qb):
        dist = w.sum(1, keepdims=True) + (1 - 2 * w) @ bits.T
        dist = dist + 1e-6 * np.arange(bits.shape[0], dtype=np.float32)  # ties by smaller index
        top = np.argsort(dist, axis=1, kind="stable")[:, :1000]
        out.append(map_at_k(top, d["db_y"], d["q_y"]))
    return out


def test_seed_paper_pattern_on_real_embeddings(fmnist):
    d = {k: v[:500] if k.startswith("q") else v for k, v in fmnist.items()}
    res = {}
    for nb in (16, 32, 64):
        asym, sym = _maps(HashingBaseline(nb).fit(d["db_x"]), d)
        assert asym > sym, (nb, asym, sym)
        res[nb] = asym
    norot, _ = _maps(HashingBaseline(64, rotate=False).fit(d["db_x"]), d)
    assert res[64] > norot + 1.0
    assert res[16] < res[32] < res[64]

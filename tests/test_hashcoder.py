"""HashCoder (CroVCA probe on frozen embeddings) and the BCE query scorers."""

import subprocess
import sys

import numpy as np
import pytest

from hashplug import HashCoder, HashingBaseline, NotFittedError, load_hasher
from hashplug.bench.datasets import EmbeddingSet
from hashplug.bench.experiments import PaperConfig, binary_topk, fit_hasher, run_paper
from hashplug.bench.metrics import map_at_k
from hashplug.rerank import search_codes
from hashplug.scoring import (
    bce_distances,
    ranking_probs,
    score_distances,
    scoring_weights,
    sym_bce_distances,
)

SMALL = dict(hidden=32, epochs=2, batch_size=64, k=5, device="cpu")


def blobs(rng, n=600, d=48, classes=5):
    centers = rng.normal(size=(classes, d)) * 3
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(size=(n, d)) + 2.0).astype(np.float32), y


def fit_small(views, x, y, **kw):
    pytest.importorskip("torch")
    return HashCoder(16, views=views, **{**SMALL, **kw}).fit(x, y, progress=False)


# -- interface -----------------------------------------------------------------------------------
@pytest.mark.parametrize("views", ["neighbors", "noise", "labels"])
def test_interface_shapes_and_identities(views, rng):
    x, y = blobs(rng)
    h = HashCoder(32, views=views, **SMALL)
    assert not h.is_fitted
    with pytest.raises(NotFittedError):
        h.encode(x)
    pytest.importorskip("torch")
    h = HashCoder(32, views=views, **SMALL).fit(x, y, progress=False)
    u = h.logits(x[:50])
    assert u.dtype == np.float32 and u.shape == (50, 32)
    c = h.encode(x[:50])
    assert c.dtype == np.uint8 and c.shape == (50, 4)
    np.testing.assert_array_equal(c, np.packbits(u > 0, axis=1))
    p = h.query(x[:50])
    # per-bit calibration (the default): the scale is the training logits' std
    np.testing.assert_allclose(h.query_scale_, h.logits(x).std(axis=0), rtol=1e-4)
    v = u.astype(np.float64) / h.query_scale_
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-v)), rtol=1e-6, atol=1e-7)
    assert h.dim_ == 48 and len(h.fingerprint) == 16 and h.n_samples_ == 600
    assert h.w1_.shape == (48, 32) and h.w2_.shape == (32, 32)
    assert h.fit_seconds_ > 0 and len(h.history_) == h.epochs_ == 2 and h.device_ == "cpu"
    assert all(np.isfinite(list(e.values())).all() for e in h.history_)
    # BatchNorm statistics from the training set: every bit is used, none is constant.
    frac = np.unpackbits(h.encode(x), axis=1).mean(axis=0)
    assert frac.min() > 0.02 and frac.max() < 0.98


def test_numpy_forward_matches_torch(rng):
    torch = pytest.importorskip("torch")
    from hashplug.hashers._mlp import preprocess

    x, y = blobs(rng)
    h = fit_small("noise", x, y)
    with torch.no_grad():
        ref = h.module_(torch.from_numpy(preprocess(x, h.mean_))).numpy()
    np.testing.assert_allclose(h.logits(x), ref, rtol=1e-4, atol=1e-4)


def test_save_load_round_trip_and_encoding_without_torch(rng, tmp_path):
    x, y = blobs(rng)
    h = fit_small("labels", x, y)
    path = h.save(tmp_path / "hc.safetensors")
    g = load_hasher(path)
    assert type(g) is HashCoder and g.get_spec() == h.get_spec()
    assert g.fingerprint == h.fingerprint and g.n_samples_ == 600 and g.module_ is None
    assert g.fit_seconds_ == pytest.approx(h.fit_seconds_)
    np.testing.assert_array_equal(g.logits(x), h.logits(x))
    np.save(tmp_path / "x.npy", x[:20])
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, hashplug\n"
        f"h = hashplug.load_hasher({str(path)!r})\n"
        f"c = h.encode(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "sys.stdout.buffer.write(c.tobytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert out.stdout == h.encode(x[:20]).tobytes()


def test_deterministic_for_a_seed_and_leaves_torch_state_alone(rng):
    torch = pytest.importorskip("torch")
    x, y = blobs(rng)
    state = torch.random.get_rng_state()
    det = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    a = fit_small("neighbors", x, y, seed=3)
    b = fit_small("neighbors", x, y, seed=3)
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.w1_, b.w1_)
    assert fit_small("neighbors", x, y, seed=4).fingerprint != a.fingerprint
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.get_num_threads() == threads
    c = HashCoder(16, views="neighbors", seed=3, **SMALL).fit(x, progress=False, threads=None)
    assert c.is_fitted and torch.get_num_threads() == threads


def test_multilabel_and_batches(rng):
    x, y = blobs(rng)
    multi = np.eye(5, dtype=np.int64)[y]
    multi[::7, (y[::7] + 1) % 5] = 1  # some rows carry two labels
    multi[::11] = 0  # and some none
    h = fit_small("labels", x, multi)
    assert h.encode(x).shape == (600, 2)
    whole = fit_small("noise", x, None)
    parts = fit_small("noise", [x[:200], x[200:]], None)
    assert parts.fingerprint == whole.fingerprint


# -- real data -----------------------------------------------------------------------------------
def test_each_view_learns_on_real_embeddings(fmnist):
    pytest.importorskip("torch")
    x, y = fmnist["db_x"][:4000], fmnist["db_y"][:4000]
    q, yq = fmnist["q_x"][:300], fmnist["q_y"][:300]

    def m(codes, p):
        ids, _ = search_codes(p, codes, 1000)
        return map_at_k(ids, y, yq)

    rand = np.random.default_rng(0)
    chance = m(np.packbits(rand.random((4000, 16)) > 0.5, axis=1), rand.random((300, 16)))
    hb = HashingBaseline(16).fit(x)
    base = m(hb.encode(x), hb.query(q))
    res = {}
    for views in ("neighbors", "noise", "labels"):
        h = HashCoder(16, views=views, hidden=256, epochs=3).fit(x, y, progress=False)
        res[views] = m(h.encode(x), h.query(q))
    assert chance < 20, chance
    assert min(res.values()) > chance + 30, (chance, res)
    assert res["neighbors"] > base and res["noise"] > base, (base, res)
    assert res["labels"] > max(res["neighbors"], res["noise"]), res


# -- errors --------------------------------------------------------------------------------------
def test_bad_input_errors(rng):
    pytest.importorskip("torch")
    x, y = blobs(rng)
    # settings are checked by fit (scikit-learn style), before any training
    with pytest.raises(ValueError, match="views must be"):
        HashCoder(16, views="crops").fit(x)
    with pytest.raises(ValueError, match="multiple of 8"):
        HashCoder(12).fit(x)
    for kw in ({"hidden": 0}, {"epochs": 1.5}, {"batch_size": 1}, {"k": True}):
        with pytest.raises(ValueError):
            HashCoder(16, **kw).fit(x)
    for kw in ({"lr": 0}, {"lam": -1}, {"dropout": 1.0}, {"noise": -0.1}):
        with pytest.raises(ValueError, match="need lr > 0"):
            HashCoder(16, **kw).fit(x)
    h = HashCoder(16, views="labels", **SMALL)
    with pytest.raises(ValueError, match="needs labels"):
        h.fit(x)
    with pytest.raises(ValueError, match="labels must be"):
        h.fit(x, y[:-1])
    with pytest.raises(ValueError, match="integers"):
        h.fit(x, y.astype(np.float64))
    with pytest.raises(ValueError, match="0/1"):
        h.fit(x, np.full((600, 3), 2))
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN.*first: \\[7\\]"):
        HashCoder(16, **SMALL).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        HashCoder(16, **SMALL).fit(x[0])
    with pytest.raises(ValueError, match="empty"):
        HashCoder(16, **SMALL).fit(x[:0])
    with pytest.raises(ValueError, match="at least 2"):
        HashCoder(16, views="noise").fit(x[:1])
    with pytest.raises(ValueError, match="neighbours need more"):
        HashCoder(16, k=10).fit(x[:10])
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            HashCoder(16, **{**SMALL, "device": "cuda"}).fit(x)
    h = fit_small("noise", x, None)
    with pytest.raises(ValueError, match="dimension 47.*fitted on 48"):
        h.encode(x[:, :47])
    with pytest.raises(ValueError, match="NaN"):
        h.query(bad)


# -- scorers -------------------------------------------------------------------------------------
def _reference(p, bits, kind, eps=1e-6):
    """Straightforward loops over queries, codes and bits."""
    out = np.zeros((len(p), len(bits)))
    for i, pi in enumerate(p):
        pc = np.clip(pi, eps, 1 - eps)
        for j, b in enumerate(bits):
            fwd = -np.sum(b * np.log(pc) + (1 - b) * np.log(1 - pc))
            if kind == "bce":
                out[i, j] = fwd
            else:
                bc = np.clip(b, eps, 1 - eps)
                rev = -np.sum(pi * np.log(bc) + (1 - pi) * np.log(1 - bc))
                out[i, j] = 0.5 * (fwd + rev)
    return out


def test_bce_scorers_match_numpy_reference(rng):
    p = rng.random((7, 24))
    p[0, :3] = [0.0, 1.0, 0.5]  # clipping keeps 0 and 1 finite
    bits = (rng.random((40, 24)) > 0.5).astype(np.float64)
    codes = np.packbits(bits.astype(bool), axis=1)
    np.testing.assert_allclose(bce_distances(p, codes), _reference(p, bits, "bce"), rtol=2e-6)
    np.testing.assert_allclose(sym_bce_distances(p, codes), _reference(p, bits, "sym"), rtol=2e-6)
    asym = np.abs(bits[None] - p[:, None]).sum(axis=2)
    np.testing.assert_allclose(score_distances(p, codes), asym, rtol=1e-6)
    c, w = scoring_weights(p, "bce")
    assert c.shape == (7,) and w.shape == (7, 24)
    np.testing.assert_allclose(w[1:], -np.log(p[1:] / (1 - p[1:])), rtol=1e-9)


@pytest.mark.parametrize("scoring", ["asymmetric", "bce", "sym-bce"])
def test_ranking_probs_rank_like_the_scorer(scoring, rng):
    p = rng.random((5, 32))
    codes = np.packbits(rng.random((500, 32)) > 0.5, axis=1)
    d = score_distances(p, codes, scoring).astype(np.float64)
    ids, _ = search_codes(ranking_probs(p, scoring), codes, 50)
    # Same top 50 up to near-ties: the distances along the kernel's order never decrease.
    got = np.take_along_axis(d, ids, 1)
    assert np.all(np.diff(got, axis=1) >= -1e-4 * np.abs(got).max())
    np.testing.assert_allclose(np.sort(d, axis=1)[:, :50], got, rtol=1e-5)


def test_scorer_errors():
    with pytest.raises(ValueError, match="unknown scoring"):
        score_distances(np.full((1, 8), 0.5), np.zeros((1, 1), np.uint8), "cosine")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bce_distances(np.full((1, 8), 1.5), np.zeros((1, 1), np.uint8))
    with pytest.raises(ValueError, match="packed uint8"):
        bce_distances(np.full((1, 16), 0.5), np.zeros((1, 1), np.uint8))


# -- benchmark wiring ----------------------------------------------------------------------------
def test_benchmark_runs_supervised_hashcoder_with_bce(rng):
    pytest.importorskip("torch")
    x, y = blobs(rng, n=400)
    q, yq = blobs(np.random.default_rng(12345), n=50)[0][:50], y[:50]
    ds = EmbeddingSet(x, y, q, yq, x, "", None)
    with pytest.raises(ValueError, match="train_y"):
        fit_hasher(HashCoder(16, views="labels", **SMALL), ds)
    ds.train_y = y
    h = fit_hasher(HashCoder(16, views="labels", **SMALL), ds, progress=False)
    assert binary_topk(h, ds, 10, symmetric=False, scoring="sym-bce").shape == (50, 10)
    cfg = PaperConfig(
        hashers=["hashcoder-labels"],
        bits=[16],
        k=50,
        seeds=1,
        ablations=False,
        progress=False,
        scoring="bce",
    )
    out = run_paper(ds, cfg)
    assert out["scoring"] == "bce"
    assert out["hashers"]["hashcoder-labels"]["16"]["binary_asymmetric"]["mean"] > 0
    with pytest.raises(ValueError, match="unknown scoring"):
        run_paper(ds, PaperConfig(hashers=["lsh"], scoring="l2", ablations=False))

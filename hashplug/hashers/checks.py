"""``check_hasher``: the hasher contract as one function a hasher author can run.

Like scikit-learn's ``check_estimator``: it builds, fits, saves and loads copies of the given
hasher and raises ``AssertionError`` naming the first rule that is broken::

    from hashplug.hashers import check_hasher
    check_hasher(MyHasher(32, seed=0))
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validate import sigmoid
from ..errors import NotFittedError
from .base import _REGISTRY, Hasher, load_hasher

__all__ = ["check_hasher"]


class _Marker:
    """A value no __init__ could mistake for a setting: it must be stored as is."""


def _fail(hasher: Hasher, rule: str) -> AssertionError:
    return AssertionError(f"{type(hasher).__name__}: {rule}")


def _raises(fn: Callable[[], Any], exc: type[BaseException]) -> bool:
    try:
        fn()
    except exc:
        return True
    return False


def _default_data(n_bits: int, seed: int = 0) -> NDArray[np.float32]:
    """Clustered float32 embeddings (300, n_bits + 16): enough rows and dimensions for PCA."""
    rng = np.random.default_rng(seed)
    d = n_bits + 16
    centres = rng.standard_normal((6, d)) * 3.0
    x = centres[rng.integers(0, 6, 300)] + rng.standard_normal((300, d))
    return x.astype(np.float32)


def check_hasher(hasher: Hasher, x: ArrayLike | None = None) -> None:
    """Check that ``hasher``'s class keeps the :class:`Hasher` contract; raise AssertionError if not.

    ``hasher``: an instance whose settings are valid (it is not modified: the checks work on
    copies made with ``type(hasher)(**hasher.get_params())``). ``x``: training embeddings (n, d)
    the hasher can fit; default: 300 clustered Gaussian rows of dimension ``n_bits + 16``.

    Checked: ``__init__`` only stores its arguments, which are the parameters of its signature;
    every method of an unfitted hasher raises :class:`NotFittedError`; ``fit`` returns ``self``,
    keeps the settings and adds only attributes ending in ``_`` (or private ones); ``logits``,
    ``encode`` and ``query`` have the documented shapes and dtypes; codes are
    ``np.packbits(logits > 0, axis=1)`` and queries ``sigmoid(query_logits)``; rows are encoded
    independently of their batch; two fits with the same settings (and ``seed``) agree; a
    save / load round trip keeps class, spec, fingerprint and codes; ``set_encoder`` changes the
    fingerprint; bad settings and bad inputs raise ``ValueError``.
    """
    if not isinstance(hasher, Hasher):
        raise AssertionError(f"{type(hasher).__name__} is not a hashplug.hashers.Hasher")
    cls = type(hasher)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise _fail(hasher, "its class name is not registered (load_hasher could not find it)")
    params = hasher.get_params()
    hasher.get_spec()  # raises ValueError if the given settings are invalid
    n_bits = int(params["n_bits"])
    data = _default_data(n_bits) if x is None else np.asarray(x)

    def fresh() -> Hasher:
        return cls(**params)

    _check_init(hasher, fresh, params)
    _check_not_fitted(fresh(), data)
    h = _check_fit(fresh(), data, params)
    _check_outputs(h, data, n_bits)
    _check_determinism(h, fresh, data)
    _check_persistence(h, data)
    _check_bad_input(h, fresh, data, params)


def _fit(h: Hasher, data: Any) -> Any:
    return h.fit(data)


def _check_init(hasher: Hasher, fresh: Callable[[], Hasher], params: dict[str, Any]) -> None:
    h = fresh()
    stored = vars(h)
    if set(stored) != set(params):
        raise _fail(
            hasher,
            f"__init__ must store exactly its arguments {sorted(params)} as attributes of the "
            f"same name; it set {sorted(stored)}",
        )
    for name in params:  # any value is stored as given: no conversion, no check in __init__
        marker = _Marker()
        try:
            got = vars(type(h)(**{**params, name: marker})).get(name)
        except Exception as e:
            raise _fail(
                hasher, f"__init__ must store {name!r} as given, not check it: {e!r}"
            ) from e
        if got is not marker:
            raise _fail(hasher, f"__init__ must store {name!r} as given, unconverted")
    spec = h.get_spec()
    if spec.get("class") != type(h).__name__ or set(spec) - {"class"} != set(params):
        raise _fail(hasher, f"get_spec() must hold the class and every setting; got {spec}")


def _check_not_fitted(h: Hasher, data: NDArray[Any]) -> None:
    calls: dict[str, Callable[[], Any]] = {
        "logits": lambda: h.logits(data[:2]),
        "encode": lambda: h.encode(data[:2]),
        "query": lambda: h.query(data[:2]),
        "fingerprint": lambda: h.fingerprint,
        "save": lambda: h.save(Path(tempfile.gettempdir()) / "hashplug-check-unfitted.hasher"),
    }
    if h.is_fitted:
        raise _fail(h, "is_fitted must be False before fit")
    for name, call in calls.items():
        if not _raises(call, NotFittedError):
            raise _fail(h, f"{name} of an unfitted hasher must raise NotFittedError")


def _check_fit(h: Hasher, data: NDArray[Any], params: dict[str, Any]) -> Hasher:
    before = set(vars(h))
    out = _fit(h, data)
    if out is not h:
        raise _fail(h, "fit must return self")
    if any(getattr(h, k) is not v for k, v in params.items()):
        raise _fail(h, "fit must not change the settings given to __init__")
    added = [k for k in set(vars(h)) - before if not k.startswith("_") and not k.endswith("_")]
    if added:
        raise _fail(h, f"fit may add only attributes ending in '_' (or private); it added {added}")
    if not h.is_fitted or h.dim_ != data.shape[1]:
        raise _fail(h, f"after fit, dim_ must be the input dimension {data.shape[1]}")
    return h


def _check_outputs(h: Hasher, data: NDArray[Any], n_bits: int) -> None:
    n = min(len(data), 50)
    u = h.logits(data[:n])
    b = h.encode(data[:n])
    p = h.query(data[:n])
    if u.dtype != np.float32 or u.shape != (n, n_bits):
        raise _fail(h, f"logits must be float32 ({n}, {n_bits}); got {u.dtype} {u.shape}")
    if b.dtype != np.uint8 or b.shape != (n, n_bits // 8):
        raise _fail(h, f"encode must be uint8 ({n}, {n_bits // 8}); got {b.dtype} {b.shape}")
    if not np.array_equal(b, np.packbits(u > 0, axis=1)):
        raise _fail(h, "encode must be np.packbits(logits > 0, axis=1) (MSB-first bit order)")
    if p.dtype != np.float32 or p.shape != (n, n_bits) or p.min() < 0 or p.max() > 1:
        raise _fail(h, "query must be float32 probabilities in [0, 1], shape (n, n_bits)")
    v = h.query_logits(data[:n])
    if not np.array_equal(v > 0, u > 0):
        raise _fail(h, "query_logits must have the signs of logits (a positive scale)")
    if not np.allclose(p, sigmoid(v), atol=1e-6):
        raise _fail(h, "query must be sigmoid(query_logits)")
    if not np.array_equal(h.encode(data[3:5]), b[3:5]):
        raise _fail(h, "a row's code must not depend on the other rows of its batch")
    if len(np.unique(b, axis=0)) < 2:
        raise _fail(h, "every row got the same code: the hasher ignores its input")


def _check_determinism(h: Hasher, fresh: Callable[[], Hasher], data: NDArray[Any]) -> None:
    g = _fit(fresh(), data)
    if g.fingerprint != h.fingerprint or not np.array_equal(g.encode(data), h.encode(data)):
        raise _fail(h, "two fits with the same settings (and seed) must give the same hasher")


def _check_persistence(h: Hasher, data: NDArray[Any]) -> None:
    fp = h.fingerprint
    if not isinstance(fp, str) or len(fp) != 16:
        raise _fail(h, f"fingerprint must be a 16-character string, got {fp!r}")
    with tempfile.TemporaryDirectory() as tmp:
        path = h.save(Path(tmp) / "h.hasher")
        g = load_hasher(path)
        same_class = type(h).load(path)
    if type(g) is not type(h) or type(same_class) is not type(h):
        raise _fail(h, f"load_hasher returned a {type(g).__name__}")
    if g.get_spec() != h.get_spec() or g.fingerprint != fp or g.dim_ != h.dim_:
        raise _fail(h, "a saved and loaded hasher must keep its spec, dim_ and fingerprint")
    if not np.array_equal(g.encode(data), h.encode(data)):
        raise _fail(h, "a saved and loaded hasher must give the same codes")
    if not np.array_equal(g.query(data[:20]), h.query(data[:20])):
        raise _fail(h, "a saved and loaded hasher must give the same query probabilities")
    prev = h.encoder_spec
    h.set_encoder("check:encoder")
    changed = h.fingerprint != fp and h.encoder_spec == "check:encoder"
    h.set_encoder(prev)
    if not changed or h.fingerprint != fp:
        raise _fail(h, "set_encoder must change the fingerprint, and undoing it restore it")


def _check_bad_input(
    h: Hasher, fresh: Callable[[], Hasher], data: NDArray[Any], params: dict[str, Any]
) -> None:
    d = data.shape[1]
    nan = np.array(data[:3], dtype=np.float32)
    nan[1, 0] = np.nan
    bad: dict[str, Callable[[], Any]] = {
        "encode of the wrong dimension": lambda: h.encode(data[:3, : d - 1]),
        "encode of a 1-D vector": lambda: h.encode(data[0]),
        "encode of NaN": lambda: h.encode(nan),
        "query of strings": lambda: h.query(np.full((2, d), "a")),
        "fit on 0 rows": lambda: _fit(fresh(), data[:0]),
        "fit on NaN": lambda: _fit(fresh(), np.concatenate([nan, data])),
        "fit with n_bits=12": lambda: _fit(type(h)(**{**params, "n_bits": 12}), data),
        "fit with n_bits=0": lambda: _fit(type(h)(**{**params, "n_bits": 0}), data),
    }
    for what, call in bad.items():
        if not _raises(call, ValueError):
            raise _fail(h, f"{what} must raise ValueError")

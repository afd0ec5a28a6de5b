"""The hasher interface (scikit-learn style) and the file format shared by every hasher."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from .._validate import as_matrix, check_finite, sigmoid
from ..codes import check_n_bits
from ..errors import HasherFileError, NotFittedError

__all__ = [
    "Hasher",
    "NotFittedError",
    "HasherFileError",
    "load_hasher",
    "FORMAT_VERSION",
    "check_nonneg_int",
    "check_bool",
    "check_calibration",
    "CALIBRATIONS",
    "DEFAULT_CALIBRATION",
]

FORMAT_VERSION = 2  # the newest version this reads; 2 = 1 + the "encoder" header entry
_VERSION_WITHOUT_ENCODER = 1  # files without an encoder keep version 1 (older readers load them)
_META_KEY = "hashplug"
_REGISTRY: dict[str, type[Hasher]] = {}

H = TypeVar("H", bound="Hasher")

#: Query-side calibrations: ``"none"`` is the seed paper's ``sigmoid(u)``; ``"per-bit"`` is
#: ``sigmoid(u_j / s_j)`` with ``s_j`` the standard deviation of bit j's training logits.
CALIBRATIONS = ("none", "per-bit")
DEFAULT_CALIBRATION = "per-bit"


def check_nonneg_int(value: Any, what: str) -> int:
    """Return ``value`` as int, or raise ValueError unless it is an int (or numpy integer) >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    return int(value)


def check_bool(value: Any, what: str) -> bool:
    """Return a flag as bool, or raise ValueError unless it is a bool (or 0 / 1)."""
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, np.integer)) and value in (0, 1)
    ):
        return bool(value)
    raise ValueError(f"{what} must be True or False, got {value!r}")


def check_calibration(value: Any) -> str:
    """Return ``value`` if it is one of :data:`CALIBRATIONS`, else raise ValueError."""
    if not isinstance(value, str) or value not in CALIBRATIONS:
        raise ValueError(
            f"calibration must be one of {', '.join(map(repr, CALIBRATIONS))}, got {value!r}"
        )
    return value


class Hasher(ABC):
    """Maps float embeddings (n, d) to ``n_bits`` logits; codes are ``logits > 0``.

    A scikit-learn style estimator: ``__init__`` only stores its arguments (the settings, read
    back from its signature by :meth:`get_params`); ``fit`` validates them and learns the fitted
    attributes, whose names end in ``_``. After fitting: ``logits``, ``encode`` (packed database
    codes), ``query`` (sigmoid probabilities for asymmetric search), ``save`` and ``fingerprint``.
    :func:`hashplug.hashers.check_hasher` checks a subclass against this contract.

    :attr:`encoder_spec` (None unless :meth:`set_encoder` was called) names the encoder whose
    embedding space the hasher was fitted in, as a spec string for ``hashplug.load_encoder``; it
    is saved with the hasher and is part of the fingerprint when set.

    Hashers with a ``calibration`` setting (every built-in one) fit ``query_scale_`` (n_bits,)
    when it is ``"per-bit"``: the standard deviation of each bit's training logits. ``query``
    then returns ``sigmoid(u / query_scale_)``, which does not saturate to exactly 0 or 1 in
    float32 for embeddings of large norm; ``encode`` is unchanged. ``"none"`` (the seed paper's
    ``sigmoid(u)``) is left out of the spec, so such hashers keep their earlier fingerprint.
    """

    #: Per-bit divisor of the query logits (calibration "per-bit"), else None.
    query_scale_: NDArray[np.float32] | None = None

    #: Input dimension seen by ``fit`` (None before fitting).
    dim_: int | None = None
    #: Names of the fitted array attributes saved to the file.
    _arrays: ClassVar[tuple[str, ...]] = ()
    # Not settings and not fitted state: the encoder spec (set_encoder) and the fingerprint memo.
    _encoder_spec: str | None = None
    _fingerprint: str | None = None

    def __init__(self, n_bits: int) -> None:
        self.n_bits = n_bits

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    # -- settings --------------------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> tuple[str, ...]:
        """Return the constructor's parameter names, in order, read from its signature."""
        names = []
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(
                    f"{cls.__name__}.__init__ must name each setting (no *args or **kwargs): the "
                    "settings are read from its signature"
                )
            names.append(name)
        return tuple(names)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments, as stored.

        ``type(h)(**h.get_params())`` is an unfitted copy.
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def _check_params(self) -> dict[str, Any]:
        """Validate the settings; return those it checked in canonical types (ValueError if bad).

        Subclasses extend it (``{**super()._check_params(), ...}``); ``fit`` calls it first.
        """
        out: dict[str, Any] = {"n_bits": check_n_bits(self.n_bits)}
        if "calibration" in self._get_param_names():
            out["calibration"] = check_calibration(getattr(self, "calibration", None))
        return out

    # -- the interface ---------------------------------------------------------------------------
    @abstractmethod
    def fit(self: H, x: Any) -> H:
        """Validate the settings, learn from training embeddings ``x`` (n, d); return ``self``."""

    @abstractmethod
    def _logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits of validated float32 (n, dim_) input."""

    def logits(self, x: Any) -> NDArray[np.float32]:
        """Real-valued codes (n, n_bits), float32: ``encode`` thresholds them at 0."""
        dim = self._check_fitted()
        a = as_matrix(x, dim=dim)
        u = np.asarray(self._logits(a), dtype=np.float32)
        if not np.isfinite(u).all():
            # The projections are dense, so any NaN/inf input shows up in the output: the cheap
            # check runs on the (n, n_bits) output, the costly one on the input only when needed.
            check_finite(a)
            raise ValueError("logits overflowed float32: the embeddings are too large in magnitude")
        return u

    def encode(self, x: Any) -> NDArray[np.uint8]:
        """Database codes: ``logits > 0`` packed to uint8 (n, n_bits // 8), DESIGN.md bit order."""
        return np.packbits(self.logits(x) > 0, axis=1)

    def query_logits(self, x: Any) -> NDArray[np.float32]:
        """Calibrated query logits: ``logits / query_scale_`` (plain logits without calibration).

        ``query`` is their sigmoid; engines that rescore server-side take these values.
        """
        u = self.logits(x)
        if self.query_scale_ is not None:
            u /= self.query_scale_
        return u

    def query(self, x: Any) -> NDArray[np.float32]:
        """Query probabilities ``sigmoid(query_logits)`` (n, n_bits), float32, kept continuous."""
        return sigmoid(self.query_logits(x))

    def set_encoder(self: H, encoder: Any) -> H:
        """Record the encoder whose embeddings this hasher hashes; returns ``self``.

        ``encoder``: an Encoder (its ``name`` is stored; its ``dim`` must match a fitted
        hasher's), a spec string such as ``"open_clip:ViT-B-16/dfn2b"``, or None to forget it.
        Call it before or after ``fit`` (``fit`` leaves it as it is). It changes the fingerprint.
        """
        if encoder is None:
            name = None
        elif isinstance(encoder, str):
            name = encoder.strip()
            if ":" not in name:
                raise ValueError(f"an encoder spec looks like 'prefix:model', got {encoder!r}")
        else:
            name = getattr(encoder, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(
                    f"set_encoder takes an Encoder, a spec string or None, got {type(encoder).__name__}"
                )
            dim = getattr(encoder, "dim", None)
            if self.dim_ is not None and dim is not None and int(dim) != self.dim_:
                raise ValueError(
                    f"encoder {name!r} gives {dim}-d embeddings, but this hasher was fitted on "
                    f"{self.dim_}-d ones"
                )
        self._encoder_spec = name
        self._fingerprint = None
        return self

    @property
    def encoder_spec(self) -> str | None:
        """Spec of the encoder that produced the training embeddings (see :meth:`set_encoder`)."""
        return self._encoder_spec

    @property
    def encoder_(self) -> str | None:
        """Read-only alias of :attr:`encoder_spec` (the name earlier versions used)."""
        return self._encoder_spec

    # -- identity --------------------------------------------------------------------------------
    def get_spec(self) -> dict[str, Any]:
        """Return the validated settings that recreate this (unfitted) hasher, plus its class name.

        JSON-able: checked settings in canonical types, numpy scalars as Python numbers.
        """
        checked = self._check_params()
        spec: dict[str, Any] = {"class": type(self).__name__}
        for name, v in self.get_params().items():
            v = checked.get(name, v)
            if name == "calibration" and v == "none":
                continue  # absent: uncalibrated hashers keep the spec and fingerprint of before
            spec[name] = v.item() if isinstance(v, np.generic) else v
        return spec

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.dim_ is not None

    @property
    def fingerprint(self) -> str:
        """A short hash of the spec and fitted parameters: equal fingerprints, equal codes."""
        self._check_fitted()
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(
                self.get_spec(), self.dim_, self._saved_arrays(), self._encoder_spec
            )
        return self._fingerprint

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted hasher as one safetensors file whose header holds the JSON spec.

        Arrays go in the safetensors body; the spec, format version and fingerprint in its
        metadata. No pickle: the file loads with numpy and safetensors alone. Missing parent
        folders are created.
        """
        from safetensors.numpy import save_file

        self._check_fitted()
        arrays = self._saved_arrays()
        header = {
            "format": "hashplug.hasher",
            "format_version": FORMAT_VERSION if self._encoder_spec else _VERSION_WITHOUT_ENCODER,
            "class": type(self).__name__,
            "spec": self.get_spec(),
            "dim": self.dim_,
            "fingerprint": self.fingerprint,
            "extra": self._extra_meta(),
        }
        if self._encoder_spec is not None:  # absent otherwise: files without one are unchanged
            header["encoder"] = self._encoder_spec
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        save_file(arrays, str(tmp), metadata={_META_KEY: json.dumps(header, sort_keys=True)})
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls: type[H], path: str | os.PathLike[str]) -> H:
        """Load a hasher saved by :meth:`save`; it must be of this class (or use load_hasher)."""
        h = load_hasher(path)
        if not isinstance(h, cls):
            raise HasherFileError(f"{path} holds a {type(h).__name__}, not a {cls.__name__}")
        return h

    # -- hooks for subclasses --------------------------------------------------------------------
    def _saved_arrays(self) -> dict[str, NDArray[Any]]:
        out = {}
        for name in self._arrays:
            v = getattr(self, name, None)
            if v is not None:
                out[name] = np.ascontiguousarray(v)
        if self.query_scale_ is not None:
            out["query_scale_"] = np.ascontiguousarray(self.query_scale_)
        return out

    def _extra_meta(self) -> dict[str, Any]:
        """Small JSON-able fitted values other than arrays (e.g. training sample count)."""
        return {}

    def _restore(self, arrays: dict[str, NDArray[Any]], dim: int, extra: dict[str, Any]) -> None:
        for name in self._arrays:
            setattr(self, name, arrays.get(name))
        self.query_scale_ = arrays.get("query_scale_")
        self.dim_ = dim
        self._after_fit()

    def _set_query_scale(self, std: Any) -> None:
        """Keep the training logits' per-bit std as ``query_scale_`` if calibration is per-bit."""
        self._fingerprint = None
        if getattr(self, "calibration", "none") != "per-bit":
            self.query_scale_ = None
            return
        s = np.asarray(std, dtype=np.float64).reshape(-1)
        self.query_scale_ = np.where(s > 0, s, 1.0).astype(np.float32)  # a constant bit: 1

    def _after_fit(self) -> None:
        """Derive cached quantities from the fitted arrays (called after fit and load)."""
        self._fingerprint = None

    def _check_fitted(self) -> int:
        if self.dim_ is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(embeddings) first"
            )
        return self.dim_


def _fingerprint(
    spec: dict[str, Any],
    dim: int | None,
    arrays: dict[str, NDArray[Any]],
    encoder: str | None = None,
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec, "dim": dim}, sort_keys=True).encode())
    if encoder is not None:  # only when set, so hashers without an encoder keep their fingerprint
        h.update(f"encoder|{encoder}|".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def load_hasher(path: str | os.PathLike[str]) -> Hasher:
    """Load any hasher saved by ``Hasher.save``; returns an instance of the right class.

    Raises HasherFileError for a missing, truncated, altered or newer-format file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise HasherFileError(f"no hasher file at {p}")
    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except Exception as e:  # safetensors raises its own error type for truncated/garbled files
        raise HasherFileError(
            f"{p} is not a readable hasher file (truncated or not safetensors): {e}"
        ) from e
    if _META_KEY not in meta:
        raise HasherFileError(f"{p} is a safetensors file but not a hashplug hasher (no header)")
    try:
        header = json.loads(meta[_META_KEY])
        version = int(header["format_version"])
        cls_name = str(header["class"])
        spec = dict(header["spec"])
        dim = int(header["dim"])
        stored_fp = str(header["fingerprint"])
        extra = dict(header.get("extra") or {})
        encoder = header.get("encoder")
        if encoder is not None and not isinstance(encoder, str):
            raise TypeError(f"encoder must be a string, got {type(encoder).__name__}")
    except (ValueError, KeyError, TypeError) as e:
        raise HasherFileError(f"{p} has a damaged hashplug header: {e}") from e
    if version > FORMAT_VERSION:
        raise HasherFileError(
            f"{p} uses hasher format version {version}, newer than this hashplug supports "
            f"({FORMAT_VERSION}); upgrade hashplug to load it"
        )
    if cls_name not in _REGISTRY:
        raise HasherFileError(
            f"{p} holds a {cls_name!r}, which this installation does not know "
            f"(known: {', '.join(sorted(_REGISTRY))})"
        )
    cls = _REGISTRY[cls_name]
    args = {k: v for k, v in spec.items() if k != "class"}
    if "calibration" in cls._get_param_names():
        args.setdefault("calibration", "none")  # files without it were written uncalibrated
    try:
        h = cls(**args)
        h._check_params()
    except (TypeError, ValueError) as e:
        raise HasherFileError(f"{p} has a spec that {cls_name} does not accept: {e}") from e
    h._restore(arrays, dim, extra)
    scale = h.query_scale_
    if (scale is not None) != (args.get("calibration", "none") == "per-bit") or (
        scale is not None and scale.shape != (int(args["n_bits"]),)
    ):
        raise HasherFileError(f"{p} has a calibration setting that does not match its arrays")
    h._encoder_spec = encoder
    h._fingerprint = None
    actual = h.fingerprint
    if actual != stored_fp:
        raise HasherFileError(
            f"{p} was altered: its parameters hash to {actual}, but the file says {stored_fp}"
        )
    return h

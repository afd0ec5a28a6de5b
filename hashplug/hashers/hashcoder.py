"""HashCoder: a small MLP trained with CroVCA (cross-view code alignment) on frozen embeddings."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._validate import as_matrix, check_finite, check_positive_int, iter_batches
from ._mlp import mlp_logits, preprocess
from .base import DEFAULT_CALIBRATION, Hasher, check_nonneg_int

__all__ = ["HashCoder", "VIEWS", "MIN_STEPS", "auto_epochs"]

#: ``epochs="auto"`` trains at least this many optimiser steps (and at least 5 epochs).
MIN_STEPS = 500
_PAPER_EPOCHS = 5


def auto_epochs(n: int, batch_size: int) -> int:
    """Epochs of ``epochs="auto"``: ``max(5, ceil(MIN_STEPS / steps per epoch))``.

    A step is one full batch (``n // batch_size`` per epoch): 5 epochs of 20k rows are 390 steps,
    of 1,600 rows only 30, too few for the codes to settle.
    """
    per_epoch = max(1, n // max(1, min(batch_size, n)))
    return max(_PAPER_EPOCHS, math.ceil(MIN_STEPS / per_epoch))


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


#: The ways of making the second view of a training embedding.
VIEWS = ("neighbors", "noise", "labels")


class HashCoder(Hasher):
    """A learned hasher: Linear-ReLU-Linear-BatchNorm on frozen embeddings, trained with CroVCA.

    Training (Moummad et al., arXiv 2510.27584): two views of each embedding go through the MLP;
    each view's probabilities learn the other view's thresholded code (binary cross-entropy,
    symmetrised, teachers without gradient), and ``lam`` times the coding rate of the normalised
    logits is maximised so that the codes do not collapse. AdamW with a cosine learning-rate
    decay, ``epochs`` passes over the data in batches of ``batch_size``.

    ``epochs="auto"`` (default) scales training with the data: at least ``MIN_STEPS`` = 500
    optimiser steps and at least the paper's 5 epochs (:func:`auto_epochs`; 7 epochs for 20k
    rows, 84 for 1,600); the number used is ``epochs_``. ``epochs=5`` is the paper's setting.

    Defaults: the paper's ``lam=0.1``, ``lr=1e-3``, ``batch_size=256``;
    ``hidden=512`` (the paper's small variant uses hidden = d: no better on a held-out split of
    Fashion-MNIST embeddings, and slower), ``k=10``, ``noise=0.5``, ``dropout=0.1``, chosen on
    that split (never on the benchmark's queries).

    Preprocessing (fitted, saved): centre with the training mean ``mean_``, L2-normalise each row
    and scale it by sqrt(d), so cosine geometry is kept and inputs have unit scale.

    Views (``views=``), with their costs on n training rows of dimension d:

    * ``"neighbors"`` (unsupervised, default): the second view is one of the ``k`` nearest
      neighbours (cosine, after centring) of the row in the training set, drawn anew each step.
      The exact kNN is computed once, in blocks: O(n^2 d) time, O(n k) memory (about 6 s for
      20k x 1280 on 2 CPU cores, the whole fit about 15 s; for millions of rows fit on a sample).
    * ``"noise"`` (unsupervised): both views are feature-space augmentations of the row, Gaussian
      noise of relative scale ``noise`` then dropout with rate ``dropout``. No precomputation;
      each step draws 2 x batch x d random numbers.
    * ``"labels"`` (supervised, ``fit(x, y)``): the second view is the class prototype, the
      renormalised mean embedding of the row's class. ``y`` is 1-D integer labels or a 2-D 0/1
      multi-label matrix (the prototype of a row is then the mean of its labels' prototypes; rows
      without labels use themselves). O(n d) precomputation. ``y`` is ignored by other views.

    After training, the BatchNorm statistics are set to the exact mean and variance of the
    pre-BatchNorm activations over the (clean) training set and folded into the last Linear, so
    the saved hasher is ``logits = relu(z @ w1_ + b1_) @ w2_ + b2_``: encoding needs numpy only.
    Fitting needs torch (imported inside ``fit``); ``device="auto"`` trains on CUDA when torch
    sees a GPU. For a given seed a CPU fit is deterministic.

    Fitted attributes: ``mean_`` (d,), ``w1_`` (d, hidden), ``b1_``, ``w2_`` (hidden, n_bits),
    ``b2_``, ``n_samples_``, ``fit_seconds_``, ``history_`` (per-epoch loss, bce, rate),
    ``device_``, ``epochs_``, ``query_scale_`` (``calibration="per-bit"``, the default:
    the std of each bit's training logits; ``"none"`` is the paper's plain sigmoid); after ``fit`` (not after loading) ``module_``, the trained torch module.
    """

    _arrays: ClassVar[tuple[str, ...]] = ("mean_", "w1_", "b1_", "w2_", "b2_")
    mean_: NDArray[np.float32] | None = None
    w1_: NDArray[np.float32] | None = None
    b1_: NDArray[np.float32] | None = None
    w2_: NDArray[np.float32] | None = None
    b2_: NDArray[np.float32] | None = None
    n_samples_: int | None = None
    fit_seconds_: float | None = None
    knn_seconds_: float | None = None
    history_: list[dict[str, float]]
    device_: str | None = None
    epochs_: int | None = None
    module_: Any = None

    def __init__(
        self,
        n_bits: int,
        *,
        hidden: int = 512,
        views: str = "neighbors",
        epochs: int | str = "auto",
        lam: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        k: int = 10,
        noise: float = 0.5,
        dropout: float = 0.1,
        seed: int = 0,
        device: str = "auto",
        calibration: str = DEFAULT_CALIBRATION,
    ) -> None:
        self.n_bits = n_bits
        self.hidden = hidden
        self.views = views
        self.epochs = epochs
        self.lam = lam
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.k = k
        self.noise = noise
        self.dropout = dropout
        self.seed = seed
        self.device = device
        self.calibration = calibration

    def _check_params(self) -> dict[str, Any]:
        if self.views not in VIEWS:
            raise ValueError(f"views must be one of {', '.join(VIEWS)}; got {self.views!r}")
        out: dict[str, Any] = {**super()._check_params(), "views": self.views}
        for name in ("hidden", "batch_size", "k"):
            out[name] = check_positive_int(getattr(self, name), name)
        out["epochs"] = (
            "auto"
            if self.epochs == "auto"
            else check_positive_int(self.epochs, "epochs (or 'auto')")
        )
        if out["batch_size"] < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs a batch)")
        for name in ("lam", "lr", "weight_decay", "noise", "dropout"):
            out[name] = _as_float(getattr(self, name), name)
        lr, lam, wd, noise, dropout = (
            out[n] for n in ("lr", "lam", "weight_decay", "noise", "dropout")
        )
        if not (lr > 0 and lam >= 0 and wd >= 0 and noise >= 0 and 0 <= dropout < 1):
            raise ValueError(
                "need lr > 0, lam >= 0, weight_decay >= 0, noise >= 0 and 0 <= dropout < 1; got "
                f"lr={lr}, lam={lam}, weight_decay={wd}, noise={noise}, dropout={dropout}"
            )
        out["seed"] = check_nonneg_int(self.seed, "seed")
        if not isinstance(self.device, str):
            raise ValueError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda', got {self.device!r}"
            )
        out["device"] = self.device
        return out

    def fit(
        self, x: Any, y: Any = None, *, progress: bool = True, threads: int | None = 1
    ) -> HashCoder:
        """Train on embeddings ``x`` (n, d) (labels ``y`` for ``views="labels"``); returns self.

        ``progress`` shows a tqdm bar with the loss. The wall time is kept in ``fit_seconds_``.
        ``threads``: CPU threads of the training steps (None: torch's setting). The default, 1,
        is within 1.7x of 2 threads on an idle machine and much faster on a busy one (the steps'
        matrices are small); the kNN and the final pass use torch's setting.
        """
        t0 = time.perf_counter()
        prm = self._check_params()
        parts = [as_matrix(b, what="training embeddings") for b in iter_batches(x)]
        if not parts:
            raise ValueError("no training data: fit needs at least one non-empty batch")
        a = (
            parts[0]
            if len(parts) == 1
            else as_matrix(np.concatenate(parts), what="training embeddings")
        )
        check_finite(a, "training embeddings")
        n, d = a.shape
        if n < 2:
            raise ValueError(f"fit needs at least 2 training embeddings, got {n}")
        if prm["views"] == "neighbors" and prm["k"] >= n:
            raise ValueError(
                f"k={prm['k']} neighbours need more than {prm['k']} training embeddings"
            )
        labels = self._check_labels(y, n) if prm["views"] == "labels" else None
        try:
            from . import _crovca
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "HashCoder.fit needs torch (pip install 'hashplug[torch]'); encoding does not"
            ) from e

        mean = a.mean(axis=0, dtype=np.float64).astype(np.float32)
        epochs = prm["epochs"]
        if epochs == "auto":
            epochs = auto_epochs(n, prm["batch_size"])
        train_prm = {k: v for k, v in prm.items() if k not in ("epochs", "calibration")}
        cfg = _crovca.TrainConfig(**train_prm, epochs=epochs, progress=progress, threads=threads)
        z = preprocess(a, mean)
        res = _crovca.train(z, labels, cfg)
        self.mean_, self.w1_, self.b1_, self.w2_, self.b2_ = mean, res.w1, res.b1, res.w2, res.b2
        self.dim_ = d
        self.n_samples_ = n
        self.history_ = res.history
        self.device_ = res.device
        self.module_ = res.module
        self.knn_seconds_ = res.knn_seconds
        self.epochs_ = epochs
        self._after_fit()
        if prm["calibration"] == "per-bit":
            u = mlp_logits(z, res.w1, res.b1, res.w2, res.b2)
            self._set_query_scale(u.std(axis=0, dtype=np.float64))
        else:
            self._set_query_scale(None)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    @staticmethod
    def _check_labels(y: Any, n: int) -> NDArray[Any]:
        if y is None:
            raise ValueError(
                'views="labels" needs labels: call fit(x, y) with y 1-D integer class labels or a '
                "2-D 0/1 multi-label matrix"
            )
        a = np.asarray(y)
        if a.ndim not in (1, 2) or a.shape[0] != n:
            raise ValueError(f"labels must be (n,) or (n, n_classes) with n = {n}; got {a.shape}")
        if a.ndim == 1:
            if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"1-D labels must be integers, got dtype {a.dtype}")
            return np.unique(a, return_inverse=True)[1].reshape(-1).astype(np.int64)
        if a.dtype == object or not np.isin(a, (0, 1)).all():
            raise ValueError("2-D labels must be a 0/1 multi-label matrix")
        return a.astype(np.float32)

    def _logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.mean_ is not None and self.w1_ is not None and self.b1_ is not None
        assert self.w2_ is not None and self.b2_ is not None
        return mlp_logits(preprocess(x, self.mean_), self.w1_, self.b1_, self.w2_, self.b2_)

    def _extra_meta(self) -> dict[str, Any]:
        history = getattr(self, "history_", None)
        last = history[-1] if history else {}
        return {
            "n_samples": self.n_samples_,
            "fit_seconds": self.fit_seconds_,
            "knn_seconds": self.knn_seconds_,
            "device": self.device_,
            "final_loss": last,
            **({"epochs": self.epochs_} if self.epochs_ is not None else {}),
        }

    def _restore(self, arrays: dict[str, NDArray[Any]], dim: int, extra: dict[str, Any]) -> None:
        super()._restore(arrays, dim, extra)
        self.n_samples_ = extra.get("n_samples")
        self.fit_seconds_ = extra.get("fit_seconds")
        self.device_ = extra.get("device")
        self.knn_seconds_ = extra.get("knn_seconds")
        self.epochs_ = extra.get("epochs")
        self.history_ = []  # per-epoch history is not saved (only the final loss)

"""CroVCA training of the HashCoder MLP on frozen embeddings (torch; imported only by ``fit``).

Loss per step, for two views ``v1, v2`` of a batch with logits ``u1 = f(v1)``, ``u2 = f(v2)``::

    bce  = (BCE(sigmoid(u1), [u2 > 0]) + BCE(sigmoid(u2), [u1 > 0])) / 2     (teachers: no gradient)
    rate = (R(u1) + R(u2)) / 2,  R(u) = logdet(I + n_bits / (m eps2) Z^T Z) / (2 n_bits)
    loss = bce - lam * rate

where ``Z`` holds the L2-normalised rows of ``u`` (m rows) and ``eps2 = 0.05``: the coding rate,
per bit, maximised against collapse. ``f`` is Linear-ReLU-Linear-BatchNorm1d.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm

from ._mlp import fold_batchnorm

__all__ = ["TrainConfig", "TrainResult", "train", "resolve_device", "knn_indices"]

_CR_EPS2 = 0.05
_MIN_LR_RATIO = 1e-3


@dataclass
class TrainConfig:
    n_bits: int
    hidden: int
    views: str
    epochs: int
    lam: float
    lr: float
    weight_decay: float
    batch_size: int
    k: int
    noise: float
    dropout: float
    seed: int
    device: str
    progress: bool = True
    threads: int | None = 1  # CPU threads of the step loop (None: torch's setting)


@dataclass
class TrainResult:
    w1: NDArray[np.float32]  # (d, hidden)
    b1: NDArray[np.float32]
    w2: NDArray[np.float32]  # (hidden, n_bits), BatchNorm folded in
    b2: NDArray[np.float32]
    module: nn.Module  # the trained network, eval mode, on the CPU
    device: str
    steps: int
    knn_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for, but torch sees no CUDA device")
    return dev


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded global RNG and deterministic kernels inside; the caller's settings restored after."""
    was, warn = (
        torch.are_deterministic_algorithms_enabled(),
        (torch.is_deterministic_algorithms_warn_only_enabled()),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was, warn_only=warn)


def knn_indices(z: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """(n, k) indices of each row's k nearest other rows by cosine, exact, in row blocks."""
    zn = F.normalize(z, dim=1)
    n = zn.shape[0]
    out = torch.empty((n, k), dtype=torch.long, device=z.device)
    for s in range(0, n, block):
        e = min(n, s + block)
        sim = zn[s:e] @ zn.T
        sim[torch.arange(e - s, device=z.device), torch.arange(s, e, device=z.device)] = -math.inf
        out[s:e] = sim.topk(k, dim=1).indices
    return out


def coding_rate(u: torch.Tensor) -> torch.Tensor:
    """Coding rate per bit of the L2-normalised rows of ``u`` (m, n_bits)."""
    m, p = u.shape
    z = F.normalize(u, dim=1)
    a = torch.eye(p, device=u.device, dtype=u.dtype) + (p / (m * _CR_EPS2)) * (z.T @ z)
    # 0.5 * logdet(a) = sum(log(diag(cholesky(a)))); a = I + PSD is positive definite.
    return torch.linalg.cholesky(a).diagonal().log().sum() / p


class _Views:
    """Draws the two views of a batch of row indices (see HashCoder's docstring)."""

    def __init__(self, z: torch.Tensor, labels: Any, cfg: TrainConfig, gen: torch.Generator):
        self.z, self.cfg, self.gen = z, cfg, gen
        self.nn: torch.Tensor | None = None
        self.protos: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        scale = math.sqrt(z.shape[1])
        if cfg.views == "neighbors":
            self.nn = knn_indices(z, cfg.k)
        elif cfg.views == "labels":
            y = torch.as_tensor(labels, device=z.device)
            onehot = F.one_hot(y).to(z.dtype) if y.ndim == 1 else y.to(z.dtype)
            sums = onehot.T @ z  # (C, d); renormalised to the input scale
            self.protos = F.normalize(sums, dim=1) * scale
            self.y = y if y.ndim == 1 else onehot

    def _augment(self, v: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.noise > 0:
            v = v + c.noise * torch.randn(v.shape, generator=self.gen, device=v.device)
        if c.dropout > 0:
            keep = torch.rand(v.shape, generator=self.gen, device=v.device) >= c.dropout
            v = v * keep / (1.0 - c.dropout)
        return v

    def pair(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.z[idx]
        if self.nn is not None:
            r = torch.randint(self.cfg.k, (idx.shape[0],), generator=self.gen, device=idx.device)
            return x, self.z[self.nn[idx, r]]
        if self.protos is not None and self.y is not None:
            if self.y.ndim == 1:
                return x, self.protos[self.y[idx]]
            yb = self.y[idx]
            mix = F.normalize(yb @ self.protos, dim=1) * math.sqrt(x.shape[1])
            return x, torch.where(yb.sum(1, keepdim=True) > 0, mix, x)  # no label: itself
        return self._augment(x), self._augment(x)


def _build(d: int, cfg: TrainConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.n_bits),
        nn.BatchNorm1d(cfg.n_bits),
    )


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    lo = cfg.lr * _MIN_LR_RATIO
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * step / max(1, total)))


def train(z_np: NDArray[np.float32], labels: Any, cfg: TrainConfig) -> TrainResult:
    """Train on preprocessed embeddings ``z_np`` (n, d); ``labels`` only for ``views="labels"``."""
    dev = resolve_device(cfg.device)
    n, d = z_np.shape
    bs = min(cfg.batch_size, n)
    per_epoch = max(1, n // bs)  # full batches only: BatchNorm sees equal batch sizes
    total = cfg.epochs * per_epoch
    with _deterministic(cfg.seed):
        net = _build(d, cfg).to(dev)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        z = torch.from_numpy(np.ascontiguousarray(z_np)).to(dev)
        t0 = time.perf_counter()
        views = _Views(z, labels, cfg, gen)
        knn_s = time.perf_counter() - t0 if cfg.views == "neighbors" else 0.0
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        history: list[dict[str, float]] = []
        bar = tqdm(
            total=total,
            desc=f"fit: HashCoder {cfg.n_bits} bits ({cfg.views})",
            disable=not cfg.progress,
            leave=False,
        )
        with _step_threads(dev, cfg.threads):
            _loop(net, views, opt, cfg, n, bs, per_epoch, gen, bar, history)
        bar.close()
        net.eval()
        _precise_batchnorm(net, z)
    return _export(net, dev, total, knn_s, history)


@contextlib.contextmanager
def _step_threads(dev: torch.device, threads: int | None) -> Iterator[None]:
    """On the CPU, run the step loop on ``threads`` intra-op threads, restored afterwards.

    Its matrices (batch x d) are small: one thread is within 1.7x of two on an idle 2-core
    machine, and several times faster when other processes compete for the cores (OpenMP
    threads then spin at every barrier).
    """
    prev = torch.get_num_threads()
    if dev.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _loop(
    net: nn.Sequential,
    views: _Views,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    n: int,
    bs: int,
    per_epoch: int,
    gen: torch.Generator,
    bar: Any,
    history: list[dict[str, float]],
) -> None:
    """Run the training epochs; append each epoch's mean loss, bce and rate to ``history``."""
    dev = views.z.device
    total = cfg.epochs * per_epoch
    step = 0
    net.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen, device=dev)
        sums = torch.zeros(3, device=dev)
        for i in range(per_epoch):
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, total)
            v1, v2 = views.pair(perm[i * bs : (i + 1) * bs])
            u1, u2 = net(v1), net(v2)
            bce = 0.5 * (
                F.binary_cross_entropy_with_logits(u1, (u2 > 0).to(u1.dtype))
                + F.binary_cross_entropy_with_logits(u2, (u1 > 0).to(u2.dtype))
            )
            rate = 0.5 * (coding_rate(u1) + coding_rate(u2))
            loss = bce - cfg.lam * rate
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), bce.detach(), rate.detach()])
            step += 1
            bar.update()
            if i % 10 == 0 or i == per_epoch - 1:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
        m = (sums / per_epoch).tolist()
        history.append({"loss": m[0], "bce": m[1], "rate": m[2]})


@torch.no_grad()
def _precise_batchnorm(net: nn.Sequential, z: torch.Tensor, block: int = 8192) -> None:
    """Set the BatchNorm statistics to the exact mean/variance over the clean training set."""
    bn = net[3]
    assert isinstance(bn, nn.BatchNorm1d)
    hs = torch.cat([net[:3](z[s : s + block]).double() for s in range(0, z.shape[0], block)])
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean.copy_(hs.mean(0))
    bn.running_var.copy_(hs.var(0, unbiased=False))


def _export(
    net: nn.Sequential, dev: torch.device, steps: int, knn_s: float, history: list[dict[str, float]]
) -> TrainResult:
    net = net.cpu()
    lin1, lin2, bn = net[0], net[2], net[3]
    assert isinstance(lin1, nn.Linear) and isinstance(lin2, nn.Linear)
    assert isinstance(bn, nn.BatchNorm1d)
    assert bn.running_mean is not None and bn.running_var is not None

    def a(t: torch.Tensor) -> NDArray[np.float64]:
        return t.detach().double().numpy()

    w2, b2 = fold_batchnorm(
        a(lin2.weight).T,
        a(lin2.bias),
        a(bn.running_mean),
        a(bn.running_var),
        a(bn.weight),
        a(bn.bias),
        bn.eps,
    )
    f32 = np.float32
    return TrainResult(
        w1=np.ascontiguousarray(a(lin1.weight).T, dtype=f32),
        b1=a(lin1.bias).astype(f32),
        w2=np.ascontiguousarray(w2, dtype=f32),
        b2=b2.astype(f32),
        module=net,
        device=str(dev),
        steps=steps,
        knn_seconds=knn_s,
        history=history,
    )

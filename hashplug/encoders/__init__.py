"""Encoders: raw images / texts / audio -> float32 embeddings for the hashers.

``load_encoder(spec)`` builds one from a spec string; ``encoder.name`` is that spec, so it can be
stored with a hasher (``hasher.set_encoder(enc)``) and a collection, and rebuilt later:

    open_clip:ViT-B-16/dfn2b                 image + text (default: the seed paper's DFN CLIP)
    open_clip:ViT-B-32/none                  random init (seeded), for tests
    open_clip:ViT-B-32/file=/path/ckpt.pt    a local checkpoint
    clap:HTSAT-tiny/630k-audioset-best.pt?fusion=0&text=roberta    audio + text (LAION-CLAP)
    sbert:all-MiniLM-L6-v2                   text (sentence-transformers; a model id or a path)
    effnet:efficientnet-lite0?size=128       image (ImageNet EfficientNet-Lite0, offline weights)

Importing this package does not import torch; each encoder imports it when built.
"""

from .base import (
    Encoder,
    EncoderSpec,
    ModalityError,
    WeightsNotFoundError,
    available_encoders,
    load_encoder,
    register_encoder,
)
from .crossmodal import fit_joint

__all__ = [
    "Encoder",
    "EncoderSpec",
    "ModalityError",
    "WeightsNotFoundError",
    "available_encoders",
    "load_encoder",
    "register_encoder",
    "fit_joint",
]

"""Cross-modal hashing: one hasher for two towers of a joint space (CLIP image+text, CLAP audio+text).

Fit the hasher on the embeddings of both modalities together, so that its mean and principal
directions describe the shared space (CLIP and CLAP towers sit in different cones of it, the
"modality gap"; the joint mean centres both). Index one modality's codes, query with the other::

    enc = hashplug.load_encoder("open_clip:ViT-B-16/dfn2b")
    img = enc.encode_images(image_paths)
    h = fit_joint(hashplug.HashingBaseline(64), enc, img, captions)   # captions: raw texts
    index = hashplug.HashIndex("memory://", h, encoder=enc)
    index.add(img, ids=np.arange(len(img)))
    index.search(["a dog on a beach"], k=10)                          # text -> images

See examples/cross_modal_search.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ..hashers.base import Hasher
    from .base import Encoder

H = TypeVar("H", bound="Hasher")

__all__ = ["fit_joint"]


def fit_joint(hasher: H, encoder: Encoder, *item_sets: Any, **encode_kwargs: Any) -> H:
    """Fit ``hasher`` on the embeddings of every item set together and record ``encoder`` on it.

    Each item set is raw items (encoded with ``encoder.encode``, ``encode_kwargs`` passed on) or
    an already computed float embedding array (n_i, encoder.dim). Returns the fitted hasher.
    """
    if not item_sets:
        raise ValueError("give at least one item set (e.g. image embeddings and raw captions)")
    parts = []
    for i, items in enumerate(item_sets):
        if isinstance(items, np.ndarray) and items.dtype.kind == "f" and items.ndim == 2:
            emb = items
        else:
            emb = encoder.encode(items, **encode_kwargs)
        if emb.shape[1] != encoder.dim:
            raise ValueError(
                f"item set {i} has dimension {emb.shape[1]}, but encoder {encoder.name!r} "
                f"gives {encoder.dim}"
            )
        parts.append(np.asarray(emb, np.float32))
    hasher.fit(np.concatenate(parts))
    return hasher.set_encoder(encoder)

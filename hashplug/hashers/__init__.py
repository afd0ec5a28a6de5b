"""Fitted, serialisable hashers: embeddings -> logits -> packed binary codes."""

from .base import FORMAT_VERSION, Hasher, HasherFileError, NotFittedError, load_hasher
from .baseline import HashingBaseline
from .checks import check_hasher
from .hashcoder import HashCoder
from .itq import ITQ
from .lsh import LSH
from .multibit import MultiBitBaseline

__all__ = [
    "Hasher",
    "HashingBaseline",
    "HashCoder",
    "ITQ",
    "LSH",
    "MultiBitBaseline",
    "load_hasher",
    "check_hasher",
    "HasherFileError",
    "NotFittedError",
    "FORMAT_VERSION",
]

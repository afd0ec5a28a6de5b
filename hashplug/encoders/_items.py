"""Raw inputs -> lists of items; images to RGB arrays/PIL; audio files/tuples to mono waveforms.

PIL, soundfile, librosa and scipy are imported only when a file or image needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

IMAGE_EXTS = frozenset(".png .jpg .jpeg .bmp .gif .tif .tiff .webp .ppm .pgm".split())
AUDIO_EXTS = frozenset(".wav .flac .ogg .mp3 .m4a .aiff .aif .opus".split())

PathLike = (str, os.PathLike)


# -- lists -------------------------------------------------------------------------------------------
def _as_list(items: Any, what: str) -> list[Any]:
    if isinstance(items, (str, os.PathLike)):
        return [items]
    try:
        return list(items)
    except TypeError:
        raise TypeError(
            f"{what} must be a list (or other iterable), got {type(items).__name__}"
        ) from None


def image_list(images: Any) -> Any:
    """Return a list of image items; an ndarray is a batch (N, H, W) or (N, H, W, C)."""
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(
                f"an image batch array must be (N, H, W) or (N, H, W, 3), got shape {images.shape}; "
                "wrap a single image in a list"
            )
        return images  # rows are images; slicing keeps it an array
    if _is_pil(images):
        return [images]
    out = _as_list(images, "images")
    for i, it in enumerate(out):
        if not (isinstance(it, PathLike) or _is_pil(it) or isinstance(it, np.ndarray)):
            raise TypeError(
                f"image {i} is a {type(it).__name__}; give file paths, PIL images or uint8 arrays"
            )
    return out


def text_list(texts: Any) -> list[str]:
    out = _as_list(texts, "texts")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is a {type(t).__name__}, not a str")
    return out


def audio_list(clips: Any) -> list[Any]:
    """Return a list of audio items.

    Each is checked to be a path or a (waveform, sample_rate) tuple.
    """
    if _is_audio_tuple(clips):
        clips = [clips]
    out = _as_list(clips, "audio clips")
    for i, c in enumerate(out):
        if isinstance(c, PathLike):
            continue
        if not _is_audio_tuple(c):
            raise ValueError(
                f"audio clip {i} is a {type(c).__name__}: give a file path or a "
                "(waveform, sample_rate) tuple, e.g. (np.float32 array of shape (n,), 16000)"
            )
    return out


def split_by_modality(items: Any, supported: frozenset[str]) -> dict[str, tuple[list[int], Any]]:
    """Group ``items`` by modality: {modality: (indices, items)}; one group for array batches."""
    if isinstance(items, np.ndarray) or _is_pil(items):
        return {"image": ([], items)}
    if _is_audio_tuple(items):
        return {"audio": ([0], [items])}
    seq = _as_list(items, "items")
    groups: dict[str, tuple[list[int], list[Any]]] = {}
    for i, it in enumerate(seq):
        mod = modality_of(it, supported)
        idx, grp = groups.setdefault(mod, ([], []))
        idx.append(i)
        grp.append(it)
    if not groups:  # empty input: any supported modality gives (0, dim)
        mod = sorted(supported)[0]
        groups[mod] = ([], [])
    return groups


def modality_of(item: Any, supported: frozenset[str]) -> str:
    """Return the modality of one raw item (strings are texts unless they name a media file)."""
    if isinstance(item, PathLike):
        p = Path(item)
        ext = p.suffix.lower()
        if ext in IMAGE_EXTS and "image" in supported and p.is_file():
            return "image"
        if ext in AUDIO_EXTS and "audio" in supported and p.is_file():
            return "audio"
        if isinstance(item, str) and "text" in supported:
            return "text"
        # no text tower: a path for the media loader (which names a missing file)
        if "audio" in supported and (ext in AUDIO_EXTS or "image" not in supported):
            return "audio"
        return "image" if "image" in supported else "text"
    if _is_audio_tuple(item):
        return "audio"
    if _is_pil(item) or isinstance(item, np.ndarray):
        return "image"
    raise TypeError(f"cannot tell the modality of a {type(item).__name__}")


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _is_audio_tuple(x: Any) -> bool:
    return (
        isinstance(x, tuple)
        and len(x) == 2
        and not isinstance(x[0], (str, os.PathLike))
        and isinstance(x[1], (int, np.integer, float))
        and not isinstance(x[1], bool)
    )


# -- images -------------------------------------------------------------------------------------------
def to_rgb_array(item: Any) -> NDArray[np.uint8]:
    """One image (path, PIL, uint8 (H, W)/(H, W, 1)/(H, W, 3)/(H, W, 4)) -> uint8 (H, W, 3).

    Grey images are replicated to three channels; alpha is dropped.
    """
    if isinstance(item, PathLike):
        from PIL import Image

        p = Path(item)
        if not p.is_file():
            raise FileNotFoundError(f"no image file at {p}")
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    if _is_pil(item):
        return np.asarray(item.convert("RGB"))
    a = np.asarray(item)
    if a.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (0..255), got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return a[:, :, :3]
    raise ValueError(
        f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}"
    )


def to_pil(item: Any) -> Any:
    """One image -> an RGB PIL image."""
    from PIL import Image

    if _is_pil(item):
        return item.convert("RGB")
    return Image.fromarray(to_rgb_array(item), mode="RGB")


# -- audio --------------------------------------------------------------------------------------------
def load_audio(item: Any, sample_rate: int) -> NDArray[np.float32]:
    """Load a path or (waveform, sr) as a mono float32 waveform at ``sample_rate``."""
    if isinstance(item, PathLike):
        wave, sr = _read_audio_file(Path(item))
    else:
        wave, sr = item
        wave = _mono(np.asarray(wave), "waveform")
        if not isinstance(sr, (int, np.integer)) and not float(sr).is_integer():
            raise ValueError(f"sample_rate must be a whole number of Hz, got {sr!r}")
        sr = int(sr)
    if sr <= 0:
        raise ValueError(f"sample_rate must be positive, got {sr}")
    if wave.size == 0:
        raise ValueError("an audio clip is empty (0 samples)")
    if not np.isfinite(wave).all():
        raise ValueError("an audio clip contains NaN or inf samples")
    if sr != sample_rate:
        wave = resample(wave, sr, sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32)


def _mono(a: NDArray[Any], what: str) -> NDArray[np.float32]:
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
    if a.dtype.kind in "iu":  # integer PCM -> [-1, 1]
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:  # (channels, n) or (n, channels): average the short axis
        a = a.mean(axis=0 if a.shape[0] <= a.shape[1] else 1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D (mono) or 2-D (channels), got shape {a.shape}")
    return a


def _read_audio_file(p: Path) -> tuple[NDArray[np.float32], int]:
    if not p.is_file():
        raise FileNotFoundError(f"no audio file at {p}")
    try:
        import soundfile

        data, sr = soundfile.read(str(p), dtype="float32", always_2d=True)
        return data.mean(axis=1), int(sr)
    except Exception:  # formats libsndfile lacks (mp3 on old builds, m4a): librosa/audioread
        import librosa

        wave, sr = librosa.load(str(p), sr=None, mono=True)
        return np.asarray(wave, np.float32), int(sr)


def resample(wave: NDArray[np.float32], sr: int, target: int) -> NDArray[np.float32]:
    """Band-limited resampling: soxr (high quality, what librosa.load uses) or scipy."""
    try:
        import soxr

        return np.asarray(soxr.resample(wave, sr, target, quality="HQ"), np.float32)
    except ImportError:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sr, target)
        return np.asarray(resample_poly(wave, target // g, sr // g), np.float32)

"""Torch-side helpers shared by the encoders: device choice, offline Hugging Face loads, checkpoints."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import WeightsNotFoundError


def resolve_device(device: str | None) -> str:
    """``"auto"``/None -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; others pass through."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(torch.device(device))


def half_on(device: str) -> bool:
    """Whether to run in float16 (on GPUs)."""
    return device.startswith("cuda")


@contextlib.contextmanager
def hf_offline(enabled: bool = True) -> Iterator[None]:
    """Make Hugging Face libraries use their local cache only (no network, no hang) for a block."""
    if not enabled:
        yield
        return
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    hf_constants: Any = None
    with contextlib.suppress(ImportError):  # every HF library depends on huggingface_hub
        import huggingface_hub.constants as hf_constants
    saved = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hf_cache_dir() -> str:
    """Where Hugging Face libraries look for downloaded files."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def hf_cached_file(repo_id: str, filename: str, cache_dir: str | None = None) -> str | None:
    """Return the local path of ``repo_id/filename`` in the HF cache, or None (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    got = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    return got if isinstance(got, str) and os.path.isfile(got) else None


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Load the tensors of a checkpoint: safetensors, or a torch file.

    A torch file is read with ``weights_only`` (no arbitrary pickle); ``{"state_dict": ...}`` /
    ``{"model": ...}`` and a ``module.`` (DataParallel) prefix are unwrapped.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"no checkpoint file at {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(p))
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"{p} is not a readable torch checkpoint of tensors ({type(e).__name__}: {e}); "
                "re-save it with torch.save(model.state_dict(), path)"
            ) from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{p} holds no state dict")
    if all(str(k).startswith("module.") for k in sd):
        sd = {str(k)[7:]: v for k, v in sd.items()}
    return dict(sd)

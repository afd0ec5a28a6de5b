"""The Encoder interface, encoder specs (``prefix:body?k=v``) and the registry behind load_encoder.

Nothing here imports torch: encoders import it when they are built.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import check_positive_int
from ..errors import ModalityError, WeightsNotFoundError
from ..stores.uri import convert_options
from . import _items

__all__ = [
    "Encoder",
    "EncoderSpec",
    "ModalityError",
    "WeightsNotFoundError",
    "load_encoder",
    "register_encoder",
    "available_encoders",
    "MODALITIES",
]

MODALITIES = ("image", "text", "audio")
#: Inputs longer than this get a progress bar unless ``progress`` says otherwise.
PROGRESS_MIN = 256


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed spec string ``prefix:body?key=value&key=value``.

    ``body`` is prefix-specific (``ViT-B-16/dfn2b``, a model id, a path); ``options`` are the
    query-string settings. ``str(spec)`` writes the canonical form (options sorted).
    """

    prefix: str
    body: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> EncoderSpec:
        """Parse ``"prefix:body?key=value&..."``; raise ValueError for an empty or bad spec."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"an encoder spec must be a non-empty string, got {spec!r}")
        prefix, _, rest = spec.strip().partition(":")
        body, _, query = rest.partition("?")
        options: dict[str, str] = {}
        for part in filter(None, query.split("&")):
            key, eq, value = part.partition("=")
            if not eq or not key:
                raise ValueError(f"bad option {part!r} in encoder spec {spec!r} (want key=value)")
            options[key] = value
        return cls(prefix.strip().lower().replace("-", "_"), body, options)

    def check_options(self, known: Iterable[str]) -> None:
        """Raise ValueError naming unknown options."""
        self.typed_options({k: str for k in known})

    def typed_options(self, types: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
        """Return the options converted by ``types``; unknown or invalid ones raise ValueError.

        ``types`` maps name -> converter, as in :func:`hashplug.stores.uri.parse_uri`.
        """
        return convert_options(self.options.items(), types, f"{self.prefix!r} encoder spec")

    def __str__(self) -> str:
        out = f"{self.prefix}:{self.body}"
        if self.options:
            out += "?" + "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return out


class Encoder(ABC):
    """Turns raw items (images, texts, audio clips) into float32 embeddings (n, dim).

    Attributes every encoder sets: ``name`` (a spec string: ``load_encoder(enc.name)`` rebuilds
    it), ``dim``, ``modalities`` (a subset of ``{"image", "text", "audio"}``), ``device``;
    audio encoders also ``sample_rate``. Subclasses implement the ``_embed_*`` hook of each
    modality they support; this class does validation, batching, ``torch.inference_mode`` and
    the progress bar.
    """

    name: str
    dim: int
    modalities: frozenset[str]
    device: str = "cpu"
    sample_rate: int | None = None
    #: Default batch size of ``encode_*`` calls.
    batch_size: int = 32

    # -- public API --------------------------------------------------------------------------------
    def encode_images(
        self, images: Any, *, batch_size: int | None = None, progress: bool | None = None
    ) -> NDArray[np.float32]:
        """Embed images: file paths, PIL images, uint8 arrays (H, W) or (H, W, 3).

        A single ndarray is read as a batch: (N, H, W) grey or (N, H, W, 3) colour.
        """
        self._require("image")
        items = _items.image_list(images)
        return self._run(items, self._embed_images, batch_size, progress, "image")

    def encode_texts(
        self, texts: Any, *, batch_size: int | None = None, progress: bool | None = None
    ) -> NDArray[np.float32]:
        """Embed a list of strings (one string is one item)."""
        self._require("text")
        items = _items.text_list(texts)
        return self._run(items, self._embed_texts, batch_size, progress, "text")

    def encode_audio(
        self, clips: Any, *, batch_size: int | None = None, progress: bool | None = None
    ) -> NDArray[np.float32]:
        """Embed audio: file paths or ``(waveform, sample_rate)`` tuples.

        Resampled to :attr:`sample_rate`; stereo is averaged to mono.
        """
        self._require("audio")
        items = _items.audio_list(clips)
        assert self.sample_rate is not None
        sr = self.sample_rate

        def embed(batch: list[Any]) -> Any:
            return self._embed_audio([_items.load_audio(c, sr) for c in batch])

        return self._run(items, embed, batch_size, progress, "audio")

    def encode(
        self, items: Any, *, batch_size: int | None = None, progress: bool | None = None
    ) -> NDArray[np.float32]:
        """Embed items of any supported modality, one row per item, in order.

        Strings are texts unless they name an existing image/audio file; PIL images and arrays
        are images; ``(waveform, sample_rate)`` tuples are audio. Mixed lists are split by
        modality and put back in order (meaningful only for joint spaces such as CLIP's).
        """
        groups = _items.split_by_modality(items, self.modalities)
        if len(groups) == 1:
            ((mod, (_, group)),) = groups.items()
            return self._encode_modality(mod, group, batch_size, progress)
        n = sum(len(idx) for idx, _ in groups.values())
        out = np.empty((n, self.dim), np.float32)
        for mod, (idx, group) in groups.items():
            out[idx] = self._encode_modality(mod, group, batch_size, progress)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, device={self.device!r})"

    # -- hooks: tensors (n, dim) for one batch --------------------------------------------------
    def _embed_images(self, batch: list[Any]) -> Any:
        raise NotImplementedError

    def _embed_texts(self, batch: list[str]) -> Any:
        raise NotImplementedError

    def _embed_audio(self, batch: list[NDArray[np.float32]]) -> Any:
        """``batch`` holds mono float32 waveforms already at :attr:`sample_rate`."""
        raise NotImplementedError

    # -- machinery ---------------------------------------------------------------------------------
    def _encode_modality(
        self, mod: str, items: Any, batch_size: int | None, progress: bool | None
    ) -> NDArray[np.float32]:
        fn = {"image": self.encode_images, "text": self.encode_texts, "audio": self.encode_audio}
        return fn[mod](items, batch_size=batch_size, progress=progress)

    def _require(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ModalityError(
                f"encoder {self.name!r} has no {modality} tower; it encodes "
                f"{', '.join(m for m in MODALITIES if m in self.modalities)} only"
            )

    def _run(
        self,
        items: Sequence[Any],
        embed: Callable[[list[Any]], Any],
        batch_size: int | None,
        progress: bool | None,
        what: str,
    ) -> NDArray[np.float32]:
        from tqdm.auto import tqdm

        bs = check_positive_int(self.batch_size if batch_size is None else batch_size, "batch_size")
        n = len(items)
        out = np.empty((n, self.dim), np.float32)
        show = n > PROGRESS_MIN if progress is None else bool(progress)
        with (
            _inference_mode(),
            tqdm(total=n, desc=f"encode {what}", unit=what, disable=not show) as bar,
        ):
            for s in range(0, n, bs):
                batch = list(items[s : s + bs])
                emb = _to_numpy(embed(batch))
                if emb.shape != (len(batch), self.dim):
                    raise RuntimeError(
                        f"{type(self).__name__} returned shape {emb.shape} for {len(batch)} "
                        f"items; expected ({len(batch)}, {self.dim})"
                    )
                out[s : s + len(batch)] = emb
                bar.update(len(batch))
        return out


def _inference_mode() -> Any:
    """``torch.inference_mode()``, or a no-op for encoders that do not use torch."""
    import contextlib
    import sys

    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def _to_numpy(emb: Any) -> NDArray[np.float32]:
    if hasattr(emb, "detach"):  # a torch tensor, on any device, in any float dtype
        emb = emb.detach().float().cpu().numpy()
    return np.asarray(emb, dtype=np.float32)


# -- registry ----------------------------------------------------------------------------------------
#: prefix -> "module:function" (imported on first use) or a callable factory.
_REGISTRY: dict[str, str | Callable[..., Encoder]] = {
    "open_clip": "hashplug.encoders.openclip:from_spec",
    "clap": "hashplug.encoders.clap:from_spec",
    "sbert": "hashplug.encoders.sbert:from_spec",
    "effnet": "hashplug.encoders.effnet:from_spec",
}
_ALIASES = {"openclip": "open_clip", "laion_clap": "clap", "sentence_transformers": "sbert"}


def register_encoder(prefix: str, factory: str | Callable[..., Encoder]) -> None:
    """Make ``load_encoder("prefix:...")`` call ``factory(spec: EncoderSpec, **kwargs)``.

    ``factory`` may be a callable or a ``"module:function"`` string imported on first use.
    Packages can also register through the entry-point group ``hashplug.encoders``.
    """
    _REGISTRY[EncoderSpec.parse(prefix + ":").prefix] = factory


def available_encoders() -> list[str]:
    """Return the registered spec prefixes."""
    _load_entry_points()
    return sorted(_REGISTRY)


def load_encoder(spec: str | Encoder, **kwargs: Any) -> Encoder:
    """Build an encoder from its spec string, e.g. ``"open_clip:ViT-B-16/dfn2b"``.

    Keyword arguments go to the factory; the built-in ones take ``device="auto"`` (CUDA when
    present, half precision there) and ``download=False`` (never touch the network: missing
    weights raise :class:`WeightsNotFoundError` saying where to put them). An Encoder passes
    through unchanged.

    Built-in prefixes: ``open_clip:MODEL/TAG|none|file=PATH`` (image+text),
    ``clap:AUDIO_MODEL/CKPT|none|file=PATH?fusion=0|1&text=roberta|transformer`` (audio+text),
    ``sbert:MODEL_OR_PATH`` (text), ``effnet:efficientnet-lite0?size=128`` (image).
    """
    if isinstance(spec, Encoder):
        return spec
    parsed = EncoderSpec.parse(spec)
    prefix = _ALIASES.get(parsed.prefix, parsed.prefix)
    parsed = EncoderSpec(prefix, parsed.body, parsed.options)
    if prefix not in _REGISTRY:
        _load_entry_points()
    if prefix not in _REGISTRY:
        raise ValueError(
            f"unknown encoder prefix {parsed.prefix!r} in {spec!r}; "
            f"known: {', '.join(sorted(_REGISTRY))}"
        )
    factory = _REGISTRY[prefix]
    if isinstance(factory, str):
        mod_name, _, fn_name = factory.partition(":")
        factory = getattr(importlib.import_module(mod_name), fn_name)
    enc = factory(parsed, **kwargs)
    if not isinstance(enc, Encoder):
        raise TypeError(f"the factory of {prefix!r} returned {type(enc).__name__}, not an Encoder")
    return enc


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="hashplug.encoders"):
        _REGISTRY.setdefault(EncoderSpec.parse(ep.name + ":").prefix, ep.value)


# -- helpers for the built-in factories -----------------------------------------------------------------
def file_weights(body_part: str) -> Path | None:
    """``file=PATH`` (or a path to an existing file) -> absolute Path; else None."""
    raw = body_part[5:] if body_part.startswith("file=") else body_part
    looks_like_path = body_part.startswith("file=") or os.sep in raw or raw.startswith("~")
    p = Path(raw).expanduser()
    if p.is_file():
        return p.resolve()
    if looks_like_path:
        raise WeightsNotFoundError(f"no checkpoint file at {p}")
    return None

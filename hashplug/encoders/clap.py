"""LAION-CLAP audio + text encoder (laion_clap's model code, offline-first loading).

Spec: ``clap:AUDIO_MODEL/CKPT?fusion=0|1&text=roberta|transformer``, e.g.
``clap:HTSAT-tiny/630k-audioset-best.pt?fusion=0&text=roberta`` (the default). ``CKPT`` is
``none`` (random init, seeded), ``file=PATH``, or a checkpoint file name looked up in
:func:`checkpoint_dirs` (``$HASHPLUG_CLAP_DIR``, ``~/.cache/hashplug/clap``, laion_clap's package
folder, and the Hugging Face cache of ``lukewys/laion_clap``). ``fusion`` defaults to whether the
name contains "fusion"; ``text`` to ``roberta`` (the released checkpoints' text tower).

Offline notes: the roberta text tower is built from its fixed config (no hub access) and filled by
the checkpoint, so audio embeddings need only the ``.pt`` file; text needs roberta-base's tokenizer
files in the Hugging Face cache, else WeightsNotFoundError says so when text is first encoded.
Clips are resampled to 48 kHz, quantised to int16 like laion_clap, repeat-padded to 10 s; longer
clips are cut deterministically (centre crop; with fusion, three evenly spaced chunks).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..stores.uri import to_bool
from ._runtime import hf_cache_dir, hf_cached_file, hf_offline, load_state_dict, resolve_device
from .base import Encoder, EncoderSpec, WeightsNotFoundError, file_weights

__all__ = [
    "ClapEncoder",
    "from_spec",
    "checkpoint_dirs",
    "DEFAULT_AUDIO_MODEL",
    "DEFAULT_CHECKPOINT",
]

DEFAULT_AUDIO_MODEL = "HTSAT-tiny"
DEFAULT_CHECKPOINT = "630k-audioset-best.pt"
HF_REPO = "lukewys/laion_clap"  # where laion_clap downloads its released checkpoints from
TEXT_MODELS = ("roberta", "transformer")
_SEED = 0
# roberta-base's config.json: the released CLAP text tower, built without the hub.
_ROBERTA_BASE: dict[str, Any] = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=514, type_vocab_size=1,
    initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)  # fmt: skip


def checkpoint_dirs() -> list[Path]:
    """Folders searched for a checkpoint given by name (first match wins)."""
    dirs = [os.environ.get("HASHPLUG_CLAP_DIR", ""), os.path.expanduser("~/.cache/hashplug/clap")]
    try:
        import importlib.util

        spec = importlib.util.find_spec("laion_clap")
        if spec and spec.origin:
            dirs.append(str(Path(spec.origin).parent))  # CLAP_Module.load_ckpt downloads here
    except ImportError:  # pragma: no cover
        pass
    return [Path(d) for d in dirs if d]


def from_spec(spec: EncoderSpec, **kwargs: Any) -> ClapEncoder:
    """Build the encoder a parsed spec names (the registry's factory for this prefix)."""
    opts = spec.typed_options({"fusion": to_bool, "text": str})
    body = spec.body or f"{DEFAULT_AUDIO_MODEL}/{DEFAULT_CHECKPOINT}"
    amodel, _, ckpt = body.partition("/")
    ckpt = ckpt or DEFAULT_CHECKPOINT
    fusion = opts.get("fusion", "fusion" in ckpt.lower())
    text = opts.get("text", "roberta")
    return ClapEncoder(amodel, ckpt, fusion=fusion, text=text, **kwargs)


class ClapEncoder(Encoder):
    """CLAP audio and text towers; embeddings (512-d) are L2-normalised.

    ``checkpoint``: a released checkpoint name, a path, or ``"none"``/None (random init, seed 0).
    ``device="auto"`` picks CUDA when present (float16 autocast there); ``download=True`` fetches
    a named checkpoint from the Hugging Face hub; ``tokenizer`` is a folder with roberta-base's
    tokenizer files (default: the Hugging Face cache).
    """

    modalities = frozenset({"audio", "text"})

    def __init__(
        self,
        audio_model: str = DEFAULT_AUDIO_MODEL,
        checkpoint: str | os.PathLike[str] | None = DEFAULT_CHECKPOINT,
        *,
        fusion: bool = False,
        text: str = "roberta",
        device: str = "auto",
        download: bool = False,
        tokenizer: str | None = None,
        batch_size: int = 16,
    ) -> None:
        if text not in TEXT_MODELS:
            raise ValueError(f"CLAP text tower must be one of {TEXT_MODELS}, got {text!r}")
        label, path = _resolve_checkpoint(checkpoint, download)
        import torch

        with hf_offline(), _laion_quiet():  # laion_clap builds three hub tokenizers at import
            from laion_clap.clap_module import factory

        if (
            audio_model not in factory._MODEL_CONFIGS
            or "audio_cfg" not in factory._MODEL_CONFIGS[audio_model]
        ):
            raise ValueError(
                f"laion_clap has no audio model {audio_model!r}; known: {', '.join(factory.list_models())}"
            )
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.fusion, self.text_model = bool(fusion), text
        with hf_offline(), _offline_roberta(), _laion_quiet(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            net, cfg = factory.create_model(
                audio_model, text, pretrained="", precision="fp32", device="cpu",
                enable_fusion=self.fusion, fusion_type="aff_2d" if self.fusion else "None",
            )  # fmt: skip
        if path is not None:
            _load_weights(net, path, audio_model, self.fusion, text)
        self.model = net.to(self.device).eval()
        self.audio_cfg = dict(cfg["audio_cfg"])
        self.sample_rate = int(self.audio_cfg["sample_rate"])
        self.dim = int(net.joint_embed_shape)
        self._tokenizer_dir = tokenizer
        self._tokenizer: Any = None
        self._download = download
        self._fb: Any = None
        self.name = f"clap:{audio_model}/{label}?fusion={int(self.fusion)}&text={text}"

    # -- hooks ---------------------------------------------------------------------------------------
    def _embed_audio(self, batch: list[NDArray[np.float32]]) -> Any:
        import torch
        import torch.nn.functional as F

        inputs = [self._audio_input(w) for w in batch]
        x = {k: torch.stack([d[k] for d in inputs]).to(self.device) for k in inputs[0]}
        with self._autocast():
            emb = self.model.encode_audio(x, device=self.device)["embedding"]
            emb = self.model.audio_projection(emb)
        return F.normalize(emb.float(), dim=-1)

    def _embed_texts(self, batch: list[str]) -> Any:
        import torch.nn.functional as F

        if self.text_model == "transformer":
            from laion_clap.clap_module import tokenize
            from laion_clap.clap_module.tokenizer import _tokenizer

            tokens: Any = tokenize(batch)
            cut = tokens[:, -1] != 0  # truncated to 77 tokens: end with <end_of_text> like CLIP
            tokens[cut, -1] = _tokenizer.encoder["<end_of_text>"]
            tokens = tokens.to(self.device)
        else:
            enc = self.tokenizer(
                batch, padding="max_length", truncation=True, max_length=77, return_tensors="pt"
            )
            tokens = {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}
        with self._autocast():
            emb = self.model.encode_text(tokens, device=self.device)
        return F.normalize(emb.float(), dim=-1)

    @property
    def tokenizer(self) -> Any:
        """roberta-base's tokenizer (only for ``text=roberta``), loaded on first use."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            sources = (
                [self._tokenizer_dir]
                if self._tokenizer_dir
                else ["roberta-base", "FacebookAI/roberta-base"]
            )
            with hf_offline(not self._download):
                for src in sources:
                    try:
                        tok = AutoTokenizer.from_pretrained(src)
                    except (OSError, ValueError):
                        continue
                    if len(tok) > 1000:  # offline, transformers may hand back an empty tokenizer
                        self._tokenizer = tok
                        break
            if self._tokenizer is None:
                raise WeightsNotFoundError(
                    f"CLAP's roberta text tower needs roberta-base's tokenizer (vocab.json, merges.txt), "
                    f"which is not in the Hugging Face cache ({hf_cache_dir()}); run `huggingface-cli "
                    "download roberta-base vocab.json merges.txt tokenizer_config.json config.json` on a "
                    "machine with network and copy the cache, or pass tokenizer=DIR. Audio embeddings "
                    "do not need it."
                )
        return self._tokenizer

    # -- audio preprocessing (laion_clap's get_audio_features, made deterministic) ------------------
    def _audio_input(self, wave: NDArray[np.float32]) -> dict[str, Any]:
        import torch

        max_len = int(self.audio_cfg["clip_samples"])
        w = (np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
        longer = w.size > max_len
        out: dict[str, Any] = {}
        if longer and self.fusion:
            out["mel_fusion"] = self._fusion_mel(torch.from_numpy(w), max_len)
        if longer:
            start = (w.size - max_len) // 2
            w = w[start : start + max_len]
        elif w.size < max_len:  # repeat, then zero-pad
            w = np.pad(np.tile(w, max_len // w.size), (0, max_len % w.size))
        wt = torch.from_numpy(np.ascontiguousarray(w))
        if self.fusion and not longer:
            out["mel_fusion"] = self._log_mel(wt).unsqueeze(0).repeat(4, 1, 1)
        out["waveform"] = wt
        out["longer"] = torch.tensor(longer)
        return out

    def _fusion_mel(self, w: Any, max_len: int) -> Any:
        import torch
        import torch.nn.functional as F

        mel = self._log_mel(w)  # (T, mel_bins)
        chunk = max_len // int(self.audio_cfg["hop_size"]) + 1
        total = mel.shape[0]
        if total <= chunk:
            return mel[:chunk].unsqueeze(0).repeat(4, 1, 1)
        ranges = np.array_split(np.arange(total - chunk + 1), 3)
        starts = [int(r[len(r) // 2]) if len(r) else 0 for r in ranges]
        shrink = F.interpolate(mel[None, None], size=(chunk, mel.shape[1]), mode="bilinear",
                               align_corners=False, antialias=True)[0, 0]  # fmt: skip
        return torch.stack([shrink] + [mel[s : s + chunk] for s in starts])

    def _log_mel(self, w: Any) -> Any:
        """Power mel spectrogram in dB (T, mel_bins): torchaudio's MelSpectrogram(htk) + AmplitudeToDB."""
        import torch

        c = self.audio_cfg
        n_fft = int(c["window_size"])
        if self._fb is None:
            import librosa

            fb = librosa.filters.mel(sr=c["sample_rate"], n_fft=n_fft, n_mels=c["mel_bins"],
                                     fmin=c["fmin"], fmax=c["fmax"], htk=True, norm=None)  # fmt: skip
            self._fb = torch.from_numpy(fb.astype(np.float32))
        spec = torch.stft(w, n_fft, hop_length=int(c["hop_size"]), win_length=n_fft,
                          window=torch.hann_window(n_fft), center=True, pad_mode="reflect",
                          return_complex=True).abs() ** 2  # fmt: skip
        mel = self._fb @ spec
        return (10.0 * torch.log10(torch.clamp(mel, min=1e-10))).T.contiguous()

    def _autocast(self) -> Any:
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def _resolve_checkpoint(checkpoint: Any, download: bool) -> tuple[str, Path | None]:
    """(name in the spec, file) for a checkpoint argument."""
    if checkpoint is None or str(checkpoint).lower() in ("none", "random", ""):
        return "none", None
    path = file_weights(os.fspath(checkpoint))
    if path is not None:
        return f"file={path}", path
    name = str(checkpoint)
    for d in checkpoint_dirs():
        if (d / name).is_file():
            return name, (d / name).resolve()
    got = hf_cached_file(HF_REPO, name)
    if got:
        return name, Path(got)
    if download:
        from huggingface_hub import hf_hub_download

        return name, Path(hf_hub_download(HF_REPO, name))
    dirs = ", ".join(str(d) for d in checkpoint_dirs())
    raise WeightsNotFoundError(
        f"CLAP checkpoint {name!r} is not on this machine and downloading is off. Put it in one of "
        f"{dirs} (or the Hugging Face cache {hf_cache_dir()} as {HF_REPO}/{name}; it is "
        f"https://huggingface.co/{HF_REPO}/resolve/main/{name}), give a path as file=PATH, "
        "or allow the download: load_encoder(spec, download=True)"
    )


def _load_weights(net: Any, path: Path, amodel: str, fusion: bool, text: str) -> None:
    sd = load_state_dict(path)
    own = net.state_dict()
    # transformers >= 4.31 no longer stores roberta's position_ids buffer
    sd = {k: v for k, v in sd.items() if k in own or not k.endswith("position_ids")}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        msg = str(e).splitlines()
        raise ValueError(
            f"{path} does not fit CLAP {amodel} with fusion={int(fusion)}, text={text} "
            f"(check the audio model and the fusion/text options): {' '.join(msg[:3])[:500]}"
        ) from e


@contextlib.contextmanager
def _offline_roberta() -> Iterator[None]:
    """Let laion_clap build its roberta text tower from the fixed config instead of the hub."""
    import transformers
    from laion_clap.clap_module import model as clap_model

    class _Roberta(transformers.RobertaModel):
        @classmethod
        def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
            return transformers.RobertaModel(transformers.RobertaConfig(**_ROBERTA_BASE))

    saved = clap_model.RobertaModel
    clap_model.RobertaModel = _Roberta
    try:
        yield
    finally:
        clap_model.RobertaModel = saved


@contextlib.contextmanager
def _laion_quiet() -> Iterator[None]:
    """laion_clap's import warns about deprecated timm/torch paths; keep the user's log clean."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield

"""open_clip and LAION-CLAP encoders with the real architectures, without pretrained weights.

Randomly initialised (seeded) or from a checkpoint the test writes; no pretrained weights can be
downloaded here.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import hashplug
from hashplug.encoders import ModalityError, WeightsNotFoundError, fit_joint, load_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytestmark = pytest.mark.slow


def _images(rng, n=5):
    grey = [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(n // 2)]
    rgb = [
        rng.integers(0, 256, size=(40 + 7 * i, 32, 3), dtype=np.uint8) for i in range(n - n // 2)
    ]
    return grey + rgb


TEXTS = ["a photo of a dog", "a red car on a road", "rain on a window", "an orchestra playing", "x"]


# -- open_clip -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip():
    pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    return load_encoder("open_clip:ViT-B-32/none", device="cpu")


def test_open_clip_image_and_text_towers(clip, rng, tmp_path):
    from PIL import Image

    assert clip.name == "open_clip:ViT-B-32/none" and clip.dim == 512
    assert clip.modalities == {"image", "text"}
    imgs = _images(rng)
    x = clip.encode_images(imgs)
    t = clip.encode_texts(TEXTS)
    assert x.shape == (5, 512) and t.shape == (5, 512) and x.dtype == t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(np.vstack([x, t]), axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(clip.encode_images(imgs), x)  # deterministic
    np.testing.assert_allclose(clip.encode_images(imgs, batch_size=1), x, atol=2e-5)
    np.testing.assert_allclose(clip.encode_texts(TEXTS, batch_size=1), t, atol=2e-5)
    # file path, PIL and array inputs agree; a mixed list is split by modality and put back in order
    png = tmp_path / "im.png"
    Image.fromarray(imgs[3]).save(png)
    mixed = clip.encode([str(png), TEXTS[1], Image.fromarray(imgs[3])])
    np.testing.assert_allclose(mixed, np.vstack([x[3], t[1], x[3]]), atol=2e-5)
    # the spec rebuilds the same (seeded) model
    again = load_encoder(clip.name, device="cpu")
    np.testing.assert_allclose(again.encode_images(imgs[:2]), x[:2], atol=1e-6)
    with pytest.raises(ModalityError, match="image, text only"):
        clip.encode_audio([(np.zeros(10, np.float32), 16000)])


def test_open_clip_checkpoint_file_matches_open_clip(rng, tmp_path):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(123)
    ref, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    ref.eval()
    ckpt = tmp_path / "clip.pt"
    torch.save(ref.state_dict(), ckpt)
    enc = load_encoder(f"open_clip:ViT-B-32/file={ckpt}", device="cpu")
    assert enc.name == f"open_clip:ViT-B-32/file={ckpt.resolve()}"
    imgs = _images(rng, 3)
    with torch.inference_mode():
        want_x = ref.encode_image(
            torch.stack([preprocess(hashplug.encoders._items.to_pil(i)) for i in imgs]),
            normalize=True,
        ).numpy()
        want_t = ref.encode_text(open_clip.get_tokenizer("ViT-B-32")(TEXTS), normalize=True).numpy()
    np.testing.assert_allclose(enc.encode_images(imgs), want_x, atol=1e-5)
    np.testing.assert_allclose(enc.encode_texts(TEXTS), want_t, atol=1e-5)
    np.testing.assert_allclose(load_encoder(enc.name).encode_texts(TEXTS), want_t, atol=1e-5)


def test_open_clip_missing_weights_fail_fast_and_say_how(tmp_path):
    pytest.importorskip("open_clip")
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        load_encoder("open_clip:ViT-B-16/dfn2b", cache_dir=str(tmp_path))  # an empty cache
    assert time.perf_counter() - t0 < 60  # no network wait (it is < 1 s once open_clip is imported)
    msg = str(err.value)
    assert "apple/DFN2B-CLIP-ViT-B-16" in msg and "file=" in msg and "download=True" in msg
    with pytest.raises(ValueError, match="tags:.*laion2b_s34b_b79k"):
        load_encoder("open_clip:ViT-B-32/no-such-tag")
    with pytest.raises(ValueError, match="no model"):
        load_encoder("open_clip:ViT-Q-99/none")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_encoder(f"open_clip:ViT-B-32/file={tmp_path / 'missing.pt'}")


def test_cross_modal_fit_index_images_query_text(clip, rng):
    """Smoke test of the cross-modal flow (random weights: the ranking itself is meaningless)."""
    imgs = _images(rng, 6)
    x = clip.encode_images(imgs)
    h = fit_joint(hashplug.HashingBaseline(16), clip, x, TEXTS * 4)
    assert h.encoder_ == clip.name and h.dim_ == 512
    index = hashplug.HashIndex("memory://", h, encoder=clip)
    index.add(x, ids=np.arange(6))
    res = index.search(["a photo of a dog", "rain"], k=3)
    assert res.ids.shape == (2, 3) and set(res.ids.ravel()) <= set(range(6))


# -- LAION-CLAP --------------------------------------------------------------------------------------------
def _tone(freq, seconds, sr):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def clap():
    pytest.importorskip("torch")
    pytest.importorskip("laion_clap")
    return load_encoder("clap:HTSAT-tiny/none?text=transformer", device="cpu")


def test_clap_audio_and_text_towers(clap, rng, tmp_path):
    import soundfile

    assert clap.name == "clap:HTSAT-tiny/none?fusion=0&text=transformer"
    assert clap.dim == 512 and clap.sample_rate == 48000 and clap.modalities == {"audio", "text"}
    noise = (rng.standard_normal(16000 * 2) * 0.1).astype(np.float32)
    clips = [(noise, 16000), (_tone(440, 12, 48000), 48000), (_tone(1000, 1.5, 22050), 22050)]
    a = clap.encode_audio(clips)
    t = clap.encode_texts(TEXTS[:3])
    assert a.shape == (3, 512) and t.shape == (3, 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(np.vstack([a, t]), axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(clap.encode_audio(clips), a)  # deterministic (centre crop)
    np.testing.assert_allclose(clap.encode_audio(clips, batch_size=1), a, atol=1e-5)
    np.testing.assert_allclose(clap.encode_texts(TEXTS[:3], batch_size=1), t, atol=1e-5)
    # a wav file, a stereo array and an int16 array give the mono float clip's embedding
    wav = tmp_path / "noise.wav"
    soundfile.write(wav, noise, 16000)
    stereo = (np.stack([noise, noise]), 16000)
    pcm = ((noise * 32767).astype(np.int16), 16000)
    np.testing.assert_allclose(
        clap.encode([str(wav), stereo, pcm]), np.repeat(a[:1], 3, 0), atol=2e-3
    )
    np.testing.assert_allclose(clap.encode(TEXTS[:1]), t[:1], atol=1e-6)  # strings are texts
    long = clap.encode_texts(["a very long description " * 40])  # truncated to 77 tokens
    assert long.shape == (1, 512) and np.isfinite(long).all()


def test_clap_matches_laion_preprocessing(clap, rng):
    """Repeat-padding, int16 quantisation and the towers equal laion_clap's own pipeline."""
    import torch
    from laion_clap.clap_module import tokenize
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    w = (rng.standard_normal(48000 * 3) * 0.1).astype(np.float32)
    q = torch.from_numpy(int16_to_float32(float32_to_int16(w)))
    feats = get_audio_features({}, q, 480000, "rand_trunc", "repeatpad", clap.audio_cfg)
    with torch.inference_mode():
        want_a = clap.model.get_audio_embedding([feats]).numpy()
        want_t = torch.nn.functional.normalize(
            clap.model.encode_text(tokenize(TEXTS), "cpu"), dim=-1
        )
    np.testing.assert_allclose(clap.encode_audio([(w, 48000)]), want_a, atol=1e-6)
    np.testing.assert_allclose(clap.encode_texts(TEXTS), want_t.numpy(), atol=1e-6)


def test_clap_log_mel_matches_librosa(clap, rng):
    """The fusion branch's mel (torchaudio's, which is not installed) equals librosa's htk mel."""
    import librosa
    import torch

    w = (rng.standard_normal(48000) * 0.1).astype(np.float32)
    c = clap.audio_cfg
    ref = librosa.feature.melspectrogram(
        y=w, sr=c["sample_rate"], n_fft=c["window_size"], hop_length=c["hop_size"],
        center=True, pad_mode="reflect", power=2.0, n_mels=c["mel_bins"], fmin=c["fmin"],
        fmax=c["fmax"], htk=True, norm=None,
    )  # fmt: skip
    ref_db = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None).T
    np.testing.assert_allclose(clap._log_mel(torch.from_numpy(w)).numpy(), ref_db, atol=1e-2)


def test_clap_checkpoint_round_trip_and_spec(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("laion_clap")
    from laion_clap.clap_module import create_model, tokenize

    torch.manual_seed(7)
    ref, _ = create_model("HTSAT-tiny", "transformer", pretrained="", device="cpu")
    ref.eval()
    ckpt = tmp_path / "clap.pt"  # as training saves it: {"state_dict": ...}, DataParallel names
    torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, ckpt)
    w = _tone(300, 10, 48000)  # exactly 10 s: no padding, no crop
    q = torch.from_numpy((w * 32767).astype(np.int16).astype(np.float32) / 32767)
    with torch.inference_mode():
        want_a = ref.get_audio_embedding([{"waveform": q, "longer": torch.tensor([False])}])
        want_t = torch.nn.functional.normalize(ref.encode_text(tokenize(TEXTS[:2]), "cpu"), dim=-1)
    del ref
    name = f"clap:HTSAT-tiny/file={ckpt.resolve()}?fusion=0&text=transformer"
    enc = load_encoder(name, device="cpu")
    assert enc.name == name  # the canonical spec round-trips
    np.testing.assert_allclose(enc.encode_audio([(w, 48000)]), want_a.numpy(), atol=1e-5)
    np.testing.assert_allclose(enc.encode_texts(TEXTS[:2]), want_t.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="does not fit CLAP HTSAT-tiny with fusion=1"):
        load_encoder(f"clap:HTSAT-tiny/file={ckpt}?text=transformer&fusion=1", device="cpu")


def test_clap_fusion_and_roberta_offline(tmp_path):
    """The released checkpoints' architecture (fusion, roberta text) builds offline.

    Long clips take the deterministic three-chunk fusion path; text needs roberta-base's tokenizer.
    """
    pytest.importorskip("laion_clap")
    enc = load_encoder("clap:HTSAT-tiny/none?fusion=1", device="cpu", tokenizer=str(tmp_path))
    assert enc.name == "clap:HTSAT-tiny/none?fusion=1&text=roberta"
    clips = [(_tone(500, 14, 48000), 48000), (_tone(700, 3, 48000), 48000)]
    a = enc.encode_audio(clips)
    assert a.shape == (2, 512)
    np.testing.assert_allclose(enc.encode_audio(clips[::-1])[::-1], a, atol=1e-5)
    with pytest.raises(WeightsNotFoundError, match="roberta-base"):
        enc.encode_texts(["a dog barking"])


def test_clap_clear_errors(clap, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHPLUG_CLAP_DIR", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="630k-audioset-best.pt.*download=True"):
        load_encoder("clap")  # the default released checkpoint, not on this machine
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ValueError, match="text tower must be one of"):
        load_encoder("clap:HTSAT-tiny/none?text=gpt")
    with pytest.raises(ValueError, match="unknown option"):
        load_encoder("clap:HTSAT-tiny/none?fuson=1")
    with pytest.raises(ModalityError, match="text, audio only"):
        clap.encode_images([np.zeros((8, 8), np.uint8)])
    w = np.zeros(4800, np.float32)
    with pytest.raises(ValueError, match=r"\(waveform, sample_rate\)"):
        clap.encode_audio([w])  # a bare array: its rate is unknown
    with pytest.raises(ValueError, match="NaN"):
        clap.encode_audio([(np.full(4800, np.nan, np.float32), 48000)])
    with pytest.raises(ValueError, match="empty"):
        clap.encode_audio([(np.zeros(0, np.float32), 48000)])
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        clap.encode_audio([(w, 0)])
    with pytest.raises(ValueError, match="1-D"):
        clap.encode_audio([(np.zeros((2, 2, 10), np.float32), 48000)])
    with pytest.raises(FileNotFoundError, match="no audio file"):
        clap.encode_audio([str(tmp_path / "missing.wav")])

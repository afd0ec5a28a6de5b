r"""Cross-modal retrieval with one hasher.

Index images and query them with text (CLIP), index sounds and query them with text (CLAP).

    .venv/bin/python examples/cross_modal_search.py                      # offline smoke demo
    .venv/bin/python examples/cross_modal_search.py --download \
        --clip open_clip:ViT-B-16/dfn2b --clap clap:HTSAT-tiny/630k-audioset-best.pt

The default specs build the real architectures with RANDOM weights (nothing can be downloaded
offline), so the demo runs end to end but its rankings are meaningless. Meaningful results need
pretrained weights: a cached or downloaded tag (``--download``) or a local checkpoint
(``open_clip:ViT-B-16/file=/path/ckpt.bin``; the released CLAP text tower also needs roberta-base's
tokenizer in the Hugging Face cache).

The recipe: encode both modalities with one encoder, fit one hasher on both sets of embeddings
(``hashplug.encoders.fit_joint``: the mean and principal directions of the joint space), index one
modality's codes, and search with the other's raw items through ``HashIndex(..., encoder=enc)``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

import hashplug
from hashplug.encoders import fit_joint

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 220, 40),
}
SHAPES = ("circle", "square", "triangle")


def make_images() -> tuple[list, list[str]]:
    """12 synthetic pictures (a coloured shape on white) and their captions."""
    from PIL import Image, ImageDraw

    images, captions = [], []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            im = Image.new("RGB", (224, 224), "white")
            d = ImageDraw.Draw(im)
            box = (50, 50, 174, 174)
            if shape == "circle":
                d.ellipse(box, fill=rgb)
            elif shape == "square":
                d.rectangle(box, fill=rgb)
            else:
                d.polygon([(112, 40), (190, 180), (34, 180)], fill=rgb)
            images.append(im)
            captions.append(f"a {colour} {shape}")
    return images, captions


def make_sounds(sr: int = 48000) -> tuple[list, list[str]]:
    """8 synthetic 3 s clips ((waveform, sample_rate) tuples) and their descriptions."""
    t = np.arange(3 * sr) / sr
    rng = np.random.default_rng(0)
    clips = {
        "a high-pitched beep": np.sin(2 * np.pi * 2000 * t),
        "a low hum": np.sin(2 * np.pi * 60 * t),
        "white noise": rng.standard_normal(t.size),
        "a rising siren": np.sin(2 * np.pi * (400 + 300 * np.sin(2 * np.pi * 0.5 * t)) * t),
        "a ticking clock": (np.sin(2 * np.pi * 3000 * t) * ((t % 1.0) < 0.02)),
        "a chord played on an organ": sum(np.sin(2 * np.pi * f * t) for f in (262, 330, 392)),
        "rain falling": rng.standard_normal(t.size) * (rng.random(t.size) < 0.05),
        "a telephone ringing": np.sin(2 * np.pi * 440 * t) * ((t % 0.5) < 0.25),
    }
    waves = [(0.3 * w / np.abs(w).max()).astype(np.float32) for w in clips.values()]
    return [(w, sr) for w in waves], list(clips)


def demo(
    spec: str, items: list, texts: list[str], queries: list[str], kind: str, download: bool
) -> None:
    enc = hashplug.load_encoder(spec, download=download)
    print(f"\n== {kind}: {enc.name} ({enc.dim}-d, {enc.device})")
    x = enc.encode(items)  # images or audio
    hasher = fit_joint(hashplug.HashingBaseline(16), enc, x, texts)  # one hasher, both towers
    # the encoder spec travels with the saved hasher ...
    path = Path(tempfile.mkdtemp()) / "hasher.safetensors"
    hasher = hashplug.load_hasher(hasher.save(path))
    print(f"hasher {hasher.fingerprint} records encoder {hasher.encoder_!r}")
    # ... and with the collection: reopening it with another encoder is an error
    index = hashplug.HashIndex("memory://", hasher, encoder=enc)
    index.add(x, ids=np.arange(len(texts)), payloads=[{"label": t} for t in texts])
    res = index.search(queries, k=3, with_payloads=True)  # raw text -> the text tower
    for q, row, dist in zip(queries, res.payloads or [], res.distances, strict=True):
        hits = ", ".join(f"{p['label']} ({d:.1f})" for p, d in zip(row, dist, strict=True) if p)
        print(f"  {q!r:32} -> {hits}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clip", default="open_clip:ViT-B-32/none", help="an open_clip encoder spec")
    ap.add_argument("--clap", default="clap:HTSAT-tiny/none?text=transformer", help="a CLAP spec")
    ap.add_argument("--download", action="store_true", help="let the encoders download weights")
    ap.add_argument("--skip-audio", action="store_true")
    a = ap.parse_args()
    if not a.download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.clip.endswith("/none") or "/none?" in a.clap:
        print("NOTE: random-init weights: a smoke demo of the pipeline; rankings are meaningless.")
    images, captions = make_images()
    demo(
        a.clip,
        images,
        captions,
        ["a red circle", "a blue square", "a yellow triangle"],
        "images <- text",
        a.download,
    )
    if not a.skip_audio:
        sounds, labels = make_sounds()
        demo(
            a.clap,
            sounds,
            labels,
            ["a beep", "noise", "a phone ringing"],
            "audio <- text",
            a.download,
        )


if __name__ == "__main__":
    main()

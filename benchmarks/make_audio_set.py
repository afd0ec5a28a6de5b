"""Build a labelled audio embedding set from synthetic speech, offline.

Audio: spoken words synthesised by Debian ``espeak-ng`` (8 English accents x ~100 voice
variants), each clip varied at random by espeak (speed, pitch) and ``sox`` (tempo, pitch shift,
reverb, gain) plus white noise at a random SNR; the label is the word (20 classes: the ten
digits and the speech-commands words yes/no/up/down/left/right/on/off/stop/go). Queries use
voice variants that no database clip uses, so a query is never a near-copy of a database row.
Encoder: the pretrained ``aisfx`` sound-effects CNN (X-Sequential-CE, 512-d; weights inside the
PyPI wheel), fed its own preprocessing: 44.1 kHz, peak-normalised, 96-band HTK mel power
spectrogram (2048/1024), log10(1e4 x + 1), min-max scaled by the paper's constants, one
100-frame (2.3 s) zero-padded block per clip. Output: an ``.npz`` in the embedding-set format of
``hashplug.bench.datasets`` (db_x, db_y, q_x, q_y, info, classes).

Requirements (none of them is needed by hashplug or its CI):
    apt-get install -y espeak-ng sox
    pip install --no-deps --target /work/aisfx_pkg aisfx     # then PYTHONPATH=/work/aisfx_pkg
    torch and librosa (in the project's venv)

    PYTHONPATH=/work/aisfx_pkg .venv/bin/python benchmarks/make_audio_set.py
        [--out ~/.cache/hashplug/espeak_aisfx.npz] [--n-db 5000] [--n-query 600]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path.home() / ".cache" / "hashplug" / "espeak_aisfx.npz"
WORDS = (
    "zero one two three four five six seven eight nine yes no up down left right on off stop go"
).split()
ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
    "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
SR = 44100
INSTALL = {
    "espeak-ng": "apt-get install -y espeak-ng",
    "sox": "apt-get install -y sox",
    "aisfx": "pip install --no-deps --target /work/aisfx_pkg aisfx, then PYTHONPATH=/work/aisfx_pkg",
    "librosa": "pip install librosa",
    "torch": "pip install torch",
}


def check_requirements() -> None:
    """Raise RuntimeError naming every missing tool or package and how to install it."""
    missing = [b for b in ("espeak-ng", "sox") if shutil.which(b) is None]
    missing += [m for m in ("aisfx", "librosa", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            "make_audio_set.py needs: " + "; ".join(f"{m} ({INSTALL[m]})" for m in missing)
        )


def variants() -> list[str]:
    """espeak-ng's voice variant names (``espeak-ng --voices=variant``), sorted."""
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    names = {ln.split()[4].split("/")[-1] for ln in out.splitlines()[1:] if ln.strip()}
    return sorted(names)


def synth(word: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    """One randomly varied rendering of ``word`` by ``voice``: float32 mono at 44.1 kHz."""
    speed, pitch = int(rng.integers(120, 220)), int(rng.integers(20, 80))
    fx = [
        "tempo", f"{rng.uniform(0.85, 1.15):.3f}",
        "pitch", f"{rng.integers(-300, 301)}",
    ]  # fmt: skip
    if rng.random() < 0.5:
        fx += ["reverb", f"{rng.integers(10, 70)}"]
    cmd = (
        f"espeak-ng -v {voice} -s {speed} -p {pitch} --stdout {word} | sox -t wav - -t raw "
        f"-r {SR} -e floating-point -b 32 -c 1 - " + " ".join(fx)
    )
    raw = subprocess.run(cmd, shell=True, capture_output=True, check=True).stdout
    y = np.frombuffer(raw, np.float32).copy()
    if y.size == 0:
        raise RuntimeError(f"espeak-ng/sox produced no audio for {word!r} ({voice})")
    snr_db = rng.uniform(10, 40)
    y += rng.standard_normal(y.size).astype(np.float32) * np.sqrt(
        np.mean(y**2) / 10 ** (snr_db / 10)
    )
    return y


class AisfxEncoder:
    """aisfx's pretrained X-Sequential-CE embedding net with the package's preprocessing."""

    def __init__(self) -> None:
        import torch
        from aisfx import inference  # type: ignore[import-not-found]

        self.torch, self.inf = torch, inference
        # the checkpoint pickles (state_dict, ds_dict): weights_only=True refuses it
        weights, ds = torch.load(
            inference.get_path_modelWeights(), map_location="cpu", weights_only=False
        )
        self.model = inference.load_bestModel(weights, ds, "cpu")

    def spectrogram(self, y: np.ndarray) -> np.ndarray:
        """(100, 96) normalised log-mel block of one clip (aisfx's librosa path, time first)."""
        import librosa
        from aisfx import preprocessing as pre  # type: ignore[import-not-found]

        inf = self.inf
        y = y / max(float(np.abs(y).max()), 1e-9)
        s = librosa.feature.melspectrogram(
            y=y, sr=SR, n_mels=inf.MEL_BINS, norm=1.0, fmin=inf.F_MIN, fmax=inf.F_MAX, htk=True,
            power=2.0, hop_length=inf.SPEC_HOP_LENGTH, win_length=inf.SPEC_BLOCK_LENGTH,
            n_fft=inf.SPEC_BLOCK_LENGTH,
        )  # fmt: skip
        s = pre.spectrogram_normalize(np.log10(s * 1e4 + 1).T, spec_norm="original")
        block = np.zeros((inf.EMB_BLOCK_LENGTH, inf.MEL_BINS), np.float32)
        n = min(len(s), inf.EMB_BLOCK_LENGTH)
        block[:n] = s[:n]
        return block

    def encode(self, blocks: np.ndarray) -> np.ndarray:
        """(n, 512) float32 embeddings of (n, 100, 96) spectrogram blocks."""
        with self.torch.no_grad():
            out = self.model.get_embedding(self.torch.from_numpy(blocks))
        return out.numpy().astype(np.float32)


def plan(n: int, voices: list[str], rng: np.random.Generator) -> list[tuple[int, str]]:
    """``n`` distinct (word index, voice) pairs, balanced over words."""
    pairs = [(w, v) for v in voices for w in range(len(WORDS))]
    if n > len(pairs):
        raise ValueError(f"asked for {n} clips but only {len(pairs)} (word, voice) pairs exist")
    idx = rng.choice(len(pairs), n, replace=False)
    return [pairs[i] for i in np.sort(idx)]


def encode_clips(
    enc: AisfxEncoder, pairs: list[tuple[int, str]], rng: np.random.Generator, desc: str,
    batch: int = 64,
) -> np.ndarray:  # fmt: skip
    """Synthesise and encode every (word, voice) pair, with a tqdm progress bar."""
    from tqdm import tqdm

    out, blocks = [], []
    for w, v in tqdm(pairs, desc=desc, unit="clip"):
        blocks.append(enc.spectrogram(synth(WORDS[w], v, rng)))
        if len(blocks) == batch:
            out.append(enc.encode(np.stack(blocks)))
            blocks = []
    if blocks:
        out.append(enc.encode(np.stack(blocks)))
    return np.concatenate(out)


def build(
    out: Path, n_db: int = 5000, n_query: int = 600, held_out: int = 12, seed: int = 0
) -> Path:
    """Synthesise, encode and write the set; ``held_out`` voice variants serve only queries."""
    check_requirements()
    rng = np.random.default_rng(seed)
    var = list(rng.permutation(variants()))
    if not 0 < held_out < len(var):
        raise ValueError(f"held_out must be in 1..{len(var) - 1}, got {held_out}")
    q_var, db_var = var[:held_out], var[held_out:]
    voices = lambda vs: [f"{a}+{v}" for a in ACCENTS for v in vs]  # noqa: E731
    db_pairs, q_pairs = plan(n_db, voices(db_var), rng), plan(n_query, voices(q_var), rng)
    enc = AisfxEncoder()
    t = time.perf_counter()
    db_x = encode_clips(enc, db_pairs, rng, "database")
    q_x = encode_clips(enc, q_pairs, rng, "queries")
    dt = time.perf_counter() - t
    info = (
        f"{n_db + n_query} espeak-ng clips of {len(WORDS)} words (labels), {len(ACCENTS)} accents "
        f"x {len(var)} variants, varied by espeak/sox + noise; queries from {held_out} held-out "
        f"variants; aisfx X-Sequential-CE ({db_x.shape[1]}-d), synthesised+encoded in {dt:.0f} s"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = lambda ps: np.array([w for w, _ in ps], np.int64)  # noqa: E731
    np.savez(
        out, db_x=db_x, db_y=labels(db_pairs), q_x=q_x, q_y=labels(q_pairs),
        info=np.array(info), classes=np.array(WORDS),
    )  # fmt: skip
    print(f"{info}\nwrote {out} ({n_db} database, {n_query} queries)")
    return out


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-db", type=int, default=5000)
    ap.add_argument("--n-query", type=int, default=600)
    ap.add_argument("--held-out", type=int, default=12, help="voice variants kept for queries")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    build(a.out.expanduser(), a.n_db, a.n_query, a.held_out, a.seed)


if __name__ == "__main__":
    main()

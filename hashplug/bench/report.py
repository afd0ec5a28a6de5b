"""The report: a Markdown table shaped like the paper's Table 1, a JSON file, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .experiments import summarise

__all__ = ["markdown", "write_report"]

_NAMES = {
    "hashing-baseline": "Hashing-Baseline",
    "itq": "ITQ",
    "lsh": "LSH",
    "hashcoder-neighbors": "HashCoder (neighbors)",
    "hashcoder-noise": "HashCoder (noise)",
    "hashcoder-labels": "HashCoder (labels, supervised)",
}


def _table(paper: dict[str, Any], bits: list[str]) -> list[str]:
    head = "| method | " + " | ".join(f"{b} bits" for b in bits) + " |"
    lines = [head, "|---|" + "---|" * len(bits)]
    fc = paper["float_cosine"]
    lines.append(
        "| original embedding, cosine (float32) | " + " | ".join(f"{fc:.2f}" for _ in bits) + " |"
    )
    pf = paper.get("pca_float", {})
    if pf:
        lines.append(
            "| PCA float, cosine | "
            + " | ".join(summarise(pf.get(b, float("nan"))) for b in bits)
            + " |"
        )
    for h, per in paper["hashers"].items():
        scored = paper.get("scoring", "asymmetric")  # the query-side scorer of that column
        for kind, label in (("binary_symmetric", "symmetric"), ("binary_asymmetric", scored)):
            cells = " | ".join(summarise(per[b][kind]) if b in per else "" for b in bits)
            lines.append(f"| {_NAMES.get(h, h)}, binary {label} | {cells} |")
    for name, per in paper.get("ablations", {}).items():
        cells = " | ".join(summarise(per[b]) if b in per else "" for b in bits)
        lines.append(f"| ablation: Hashing-Baseline {name}, asymmetric | {cells} |")
    return lines


def _backend_table(backends: dict[str, Any]) -> list[str]:
    if not backends:
        return []
    first = next(iter(backends.values()))
    ovs = list(first.get("oversample", {}))
    lines = [
        "| backend | ingest vec/s | build s | bytes/vec codes | bytes/vec disk | p50 ms | p95 ms | p99 ms"
        " | QPS (1 client) | QPS (batched) | "
        + " | ".join(f"R@{10} os={o}" for o in ovs)
        + " | mAP two-stage / exhaustive / float | RAM $/M/month |",
        "|---|" + "---|" * (11 + len(ovs)),
    ]
    for name, r in backends.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} |")
            continue
        lat = r["latency_ms"]
        disk = r.get("bytes_on_disk_per_vector")
        mp = r["map"]
        if "oversample" not in r:  # the float32 reference row
            cells = [r.get("backend", name), "", "", f"{r['bytes_codes_per_vector']:.0f}", "in RAM"]
            cells += [f"{lat[p]:.2f}" for p in ("p50", "p95", "p99")]
            cells += [f"{r['qps_single_client']:,.0f}", f"{r['qps_batched']:,.0f}"]
            cells += ["1 (exact)"] * len(ovs)
            cells += [f"float {mp['float_cosine']:.2f}", f"{r['ram_usd_per_million_month']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        rec = " | ".join(f"{r['oversample'][o]['recall_vs_asym']:.3f}" for o in ovs)
        cells = [
            name,
            f"{r['ingest_vps']:,.0f}",
            f"{r['build_s']:.2f}",
            f"{r['bytes_codes_per_vector']:.0f}",
            f"{disk:.1f}" if disk else "in RAM",
            f"{lat['p50']:.2f}",
            f"{lat['p95']:.2f}",
            f"{lat['p99']:.2f}",
            f"{r['qps_single_client']:,.0f}",
            f"{r['qps_batched']:,.0f}",
            rec,
            f"{mp['two_stage']:.2f} / {mp['exhaustive_asymmetric']:.2f} / {mp['float_cosine']:.2f}",
            f"{r['ram_usd_per_million_month']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _encoder_lines(enc: dict[str, Any] | None) -> list[str]:
    if not enc:
        return []
    if enc.get("cached"):
        speed = f"embeddings read from the cache `{enc.get('cache', '')}`"
    else:
        speed = (
            f"{enc['n_items']} items encoded in {enc['encode_s']:.1f} s "
            f"({enc['items_per_s']:.1f} items/s on {enc.get('device', 'cpu')})"
        )
    return [f"Encoder: `{enc['name']}` ({enc.get('dim', '?')}-d); {speed}.", ""]


def markdown(results: dict[str, Any]) -> str:
    """Return the whole report as Markdown."""
    ds = results["dataset"]
    paper = results["paper"]
    bits = [str(b) for b in results["config"]["bits"]]
    out = [
        "# hashplug benchmark report",
        "",
        f"Data: `{ds['path']}` — {ds['n_db']} database / {ds['n_query']} query embeddings, "
        f"d = {ds['dim']}{', multi-label' if ds['multilabel'] else ''}. {ds.get('info', '')}",
        "",
        *_encoder_lines(results.get("encoder")),
        f"## mAP@{paper['k']} (x100), mean ± std over {paper['seeds']} seeds",
        "",
        *_table(paper, bits),
        "",
    ]
    if results.get("backends"):
        b = results["config"]
        out += [
            f"## Backends ({b['backend_bits']} bits, Hashing-Baseline seed 0; R@10 = recall@10 "
            "of the two-stage search against exhaustive asymmetric search at each oversample; "
            "latency of one query, k = 10, oversample 10; mAP on the first "
            f"{next(iter(results['backends'].values())).get('map', {}).get('queries', '?')} "
            "queries; RAM $ per million vectors per month for the codes, the float32 row for "
            "the embeddings they replace)",
            "",
            *_backend_table(
                {**results["backends"], "float32": results.get("float_baseline")}
                if results.get("float_baseline")
                else results["backends"]
            ),
            "",
            f"RAM price: ${b['ram_price']}/GiB-month (override with --ram-price).",
            "",
        ]
    out.append(f"Total time: {results.get('elapsed_s', 0):.0f} s.")
    return "\n".join(out) + "\n"


_RECALL_VS_ASYM = "recall@10 vs exhaustive asymmetric"


def _save(plt: Any, fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, **legend: Any) -> None:
    """Label, legend and grid one figure, write it to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(**legend)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    paper = results["paper"]
    bits = [int(b) for b in results["config"]["bits"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(paper["float_cosine"], color="k", ls="--", label="float cosine")
    for n, (h, per) in enumerate(paper["hashers"].items()):
        for kind, ls in (("binary_asymmetric", "-"), ("binary_symmetric", ":")):
            m = [per[str(b)][kind]["mean"] for b in bits]
            s = [per[str(b)][kind]["std"] for b in bits]
            label = f"{_NAMES.get(h, h)} {kind[7:]}"
            ax.errorbar(bits, m, yerr=s, ls=ls, marker="o", color=f"C{n}", label=label)
    ax.set_xticks(bits)
    _save(plt, fig, ax, out / "map_vs_bits.png", "bits", f"mAP@{paper['k']}", fontsize=7)
    made.append("map_vs_bits.png")
    be = results.get("backends") or {}
    ok = {n: r for n, r in be.items() if "error" not in r}
    if ok:
        fig, ax = plt.subplots(figsize=(6, 4))
        for n, r in ok.items():
            ovs = [int(o) for o in r["oversample"]]
            ax.plot(
                ovs, [r["oversample"][str(o)]["recall_vs_asym"] for o in ovs], marker="o", label=n
            )
        ax.set_xscale("log")
        xlabel = "oversample (candidates = oversample x k)"
        _save(plt, fig, ax, out / "recall_vs_oversample.png", xlabel, _RECALL_VS_ASYM)
        fig, ax = plt.subplots(figsize=(6, 4))
        for n, r in ok.items():
            keys = [str(o) for o in sorted(int(o) for o in r["oversample"])]
            lat = [r["oversample"][o]["p50_ms"] for o in keys]
            rec = [r["oversample"][o]["recall_vs_asym"] for o in keys]
            ax.plot(lat, rec, marker="o", label=n)
            for o, x, y in zip(keys, lat, rec, strict=True):
                ax.annotate(o, (x, y), fontsize=6, textcoords="offset points", xytext=(3, -8))
        ax.set_xscale("log")
        xlabel = "p50 latency of one query (ms), points labelled by oversample"
        _save(plt, fig, ax, out / "latency_vs_recall.png", xlabel, _RECALL_VS_ASYM)
        made += ["recall_vs_oversample.png", "latency_vs_recall.png"]
    return made


def write_report(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, results.json and the PNG plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "json": out / "results.json"}
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=True))
    paths["markdown"].write_text(markdown(results))
    for p in _plots(results, out):
        paths[p] = out / p
    return paths

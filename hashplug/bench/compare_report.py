"""The decision report of ``hashplug compare``: results.json, report.md, two frontier PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare_markdown", "compact_markdown", "write_compare_report", "frontier_plot"]


def _fmt_bytes(b: float) -> str:
    return f"{b:,.0f}" if b >= 10 else f"{b:.1f}"


def compare_markdown(res: dict[str, Any], title: str = "hashplug compare") -> str:
    """Return the frontier table, what is absent, and the recommendation.

    The table is sorted by RAM bytes per vector.
    """
    ds, cfg = res["dataset"], res["config"]
    rows = sorted(res["frontier"], key=lambda r: (r["bytes_per_vector"], -r["recall_at_10"]))
    k = cfg["k"]
    map_key = f"map_at_{k}"
    has_map = any(map_key in r for r in rows)
    head = ["#", "method", "engine", "RAM B/vec", "disk B/vec", "recall@10"]
    head += [f"mAP@{k}"] if has_map else []
    head += ["p50 ms", "p99 ms", "QPS", "build s", "$/M/month RAM+disk", "front"]
    out = [
        f"# {title}",
        "",
        f"Data: `{ds['path']}` — {ds['n_db']} database vectors, {ds['n_query']} queries, "
        f"d = {ds['dim']}. {ds.get('info', '')}".rstrip(),
        "",
        "Engines: " + "; ".join(f"{e}: {v}" for e, v in res["versions"].items()) + ".",
        "",
        "## Recommendation",
        "",
        res["recommendation"]["text"],
        "",
        "## Frontier",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for i, r in enumerate(rows, 1):
        front = "/".join(
            n for n, key in (("RAM", "on_ram_front"), ("latency", "on_latency_front")) if r.get(key)
        )
        cells = [
            str(i),
            f"`{r['method']}`",
            r["engine"],
            _fmt_bytes(r["bytes_per_vector"]),
            _fmt_bytes(r["disk_bytes_per_vector"]),
            f"{r['recall_at_10']:.3f}",
        ]
        if has_map:
            cells.append(f"{r[map_key]:.2f}" if map_key in r else "")
        cells += [
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['qps']:,.0f}",
            f"{r['build_s']:.1f}",
            f"{r['ram_usd_month_per_million']:.3f} + {r['disk_usd_month_per_million']:.3f}",
            front,
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        f"recall@10 against exact float cosine search on the same L2-normalised vectors; "
        f"{f'mAP@{k} x100 by label; ' if has_map else ''}latency of one query per call "
        f"(k = {k}); QPS = 1000 / mean latency (one client). Prices: RAM ${cfg['ram_price']}/GiB-month, "
        f"disk ${cfg['disk_price']}/GiB-month (--ram-price, --disk-price). `front`: on the Pareto "
        "front of recall@10 against RAM bytes / against p50 latency. hashplug rows: Hamming top-"
        f"{cfg['oversample'] * k} -> asymmetric rerank; `+originals`: Hamming top-{cfg['candidates']}"
        f" -> asymmetric rerank to {cfg['shortlist']} -> exact float rescoring with the originals "
        "(in RAM beside the memory store, counted in RAM; in a float32 file on disk beside LanceDB, "
        "counted on disk).",
        "",
        "How RAM was counted per engine: "
        + "; ".join(sorted({f"{r['engine']}: {r['ram_counted_as']}" for r in rows}))
        + ".",
        "",
    ]
    if res.get("unavailable"):
        out += ["## Not available here", ""]
        out += [f"- `{u['method']}` [{u['engine']}]: {u['reason']}" for u in res["unavailable"]]
        out.append("")
    if res.get("failed"):
        out += ["## Failed", ""]
        out += [f"- `{f['method']}` [{f['engine']}]: {f['error']}" for f in res["failed"]]
        out.append("")
    out.append(f"Total time: {res.get('elapsed_s', 0):.0f} s.")
    return "\n".join(out) + "\n"


def compact_markdown(res: dict[str, Any], rel: Path) -> str:
    """Return a short frontier table for ``hashplug run``'s report.

    Columns: method, RAM, recall, p50, cost.
    """
    rows = sorted(res["frontier"], key=lambda r: (r["bytes_per_vector"], -r["recall_at_10"]))
    out = [
        "## Where hashplug stands: LanceDB's own indexes vs hashplug (64 bits)",
        "",
        res["recommendation"]["text"],
        "",
        "| method | engine | RAM B/vec | disk B/vec | recall@10 | p50 ms | $/M/month |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| `{r['method']}` | {r['engine']} | {_fmt_bytes(r['bytes_per_vector'])} | "
            f"{_fmt_bytes(r['disk_bytes_per_vector'])} | {r['recall_at_10']:.3f} | "
            f"{r['p50_ms']:.2f} | {r['usd_month_per_million']:.3f} |"
        )
    out += [
        "",
        f"Full table and frontier plots: `{rel}/report.md`, `{rel}/frontier_ram.png`, "
        f"`{rel}/frontier_latency.png` (`hashplug compare` runs every engine and option).",
        "",
    ]
    return "\n".join(out)


def frontier_plot(res: dict[str, Any], key: str, path: Path, xlabel: str, logx: bool) -> None:
    """Plot recall@10 against ``key``, with the Pareto front.

    Every method is one numbered point (numbers = the table's), with a numbered legend beside the
    axes; the Pareto front is drawn as a step line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator

    from .compare import pareto_front

    rows = sorted(res["frontier"], key=lambda r: (r["bytes_per_vector"], -r["recall_at_10"]))
    families = sorted({_family(r) for r in rows})
    colour = {f: f"C{i % 10}" for i, f in enumerate(families)}
    n = len(rows)
    fig_h = max(5.0, 0.17 * n + 1.0)
    fig, ax = plt.subplots(figsize=(13, fig_h))
    xs = [max(r[key], 1e-3) for r in rows]
    ys = [r["recall_at_10"] for r in rows]
    for x, y, r in zip(xs, ys, rows, strict=True):
        ax.scatter(x, y, s=28, color=colour[_family(r)], zorder=3)
    front = pareto_front(rows, key)
    fx = [xs[i] for i in front]
    fy = [ys[i] for i in front]
    ax.step(fx, fy, where="post", color="k", lw=1, ls="--", label="Pareto front", zorder=2)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recall@10 vs exact float search")
    ax.set_ylim(min(ys) - 0.03, 1.02)
    ax.grid(alpha=0.3, which="both")
    fig.subplots_adjust(left=0.07, right=0.68, top=0.97, bottom=0.08)
    _label_points(fig, ax, xs, ys)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=colour[f], label=f) for f in families
    ] + [plt.Line2D([], [], color="k", ls="--", label="Pareto front")]
    # Outside the axes, under the numbered list: it never hides a point.
    fig.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.70, 0.08),
        fontsize=7,
        title="family",
        frameon=False,
    )
    legend = "\n".join(f"{i:>2}  {r['method']} [{r['engine']}]" for i, r in enumerate(rows, 1))
    fig.text(0.70, 0.98, legend, va="top", ha="left", family="monospace", fontsize=6.5)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_points(fig: Any, ax: Any, xs: list[float], ys: list[float]) -> None:
    """Label the points 1..n, each where its box overlaps no other label or point.

    Each label goes at the first nearby offset whose box overlaps no label placed before it and no
    other point (a thin leader line when it had to move far).
    """
    pts = ax.transData.transform(np.column_stack([xs, ys])) * 72.0 / fig.dpi  # in points
    offsets = [(dx * r, dy * r) for r in (1.0, 1.8, 2.6, 3.4) for dx, dy in _RING]
    placed: list[tuple[float, float, float, float]] = []
    for i, (px, py) in enumerate(pts, 1):
        w, h = 4.2 * len(str(i)) + 1, 7.0
        best = None
        for dx, dy in offsets:
            bx, by = px + dx, py + dy
            box = (bx, by, bx + w, by + h)
            clash = any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ) or any(
                box[0] - 2 < qx < box[2] + 2 and box[1] - 2 < qy < box[3] + 2
                for j, (qx, qy) in enumerate(pts, 1)
                if j != i
            )
            if not clash:
                best = (dx, dy, box)
                break
        if best is None:
            best = (4.0, 3.0, (px + 4, py + 3, px + 4 + w, py + 10))
        dx, dy, box = best
        placed.append(box)
        far = abs(dx) > 14 or abs(dy) > 14
        ax.annotate(
            str(i),
            (xs[i - 1], ys[i - 1]),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=7,
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if far else None,
        )


#: Label offsets (points) tried around a point, nearest first; scaled by 1..4 rings.
_RING = ((4, 2), (4, -9), (-11, 2), (-11, -9), (-3, 6), (-3, -14), (10, -3), (-18, -3))


def _family(r: dict[str, Any]) -> str:
    m = r["method"]
    if m.startswith("hashplug:"):
        return (
            "hashplug" + (" +originals" if m.endswith("+originals") else "") + f" [{r['engine']}]"
        )
    return m.split(":")[0] + ("" if ":" in m else "")


def write_compare_report(res: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, report.md, frontier_ram.png and frontier_latency.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "report.md",
        "ram_plot": out / "frontier_ram.png",
        "latency_plot": out / "frontier_latency.png",
    }
    paths["json"].write_text(json.dumps(res, indent=2, default=float))
    paths["markdown"].write_text(compare_markdown(res))
    frontier_plot(res, "bytes_per_vector", paths["ram_plot"], "RAM bytes per vector (log)", True)
    frontier_plot(res, "p50_ms", paths["latency_plot"], "p50 latency of one query, ms (log)", True)
    return paths

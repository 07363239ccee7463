"""Stacked phase bars per backend (median seconds), drawn with matplotlib or, for SVG, by hand."""

from __future__ import annotations

from html import escape
from pathlib import Path

from pytest_lmbackend.bench.phases import phase_sort_key
from pytest_lmbackend.bench.report import BenchReport

# Colour-blind-safe cycle (Okabe-Ito, then a few greys), one colour per phase.
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
    "#000000", "#999999", "#666666", "#BBBBBB", "#333333", "#DDDDDD", "#888888",
)  # fmt: skip


def bars(report: BenchReport) -> tuple[list[str], list[str], dict[str, list[float]]]:
    """(backends, phases, phase -> median seconds per backend): top-level phases of ok rounds only."""
    summaries = {n: s for n, s in report.summaries().items() if s.wall is not None}
    backends = list(summaries)
    phases = sorted({k for s in summaries.values() for k in s.phases if "/" not in k}, key=phase_sort_key)
    values = {p: [summaries[b].phases[p].median if p in summaries[b].phases else 0.0 for b in backends]
              for p in phases}  # fmt: skip
    return backends, phases, values


def plot(report: BenchReport, path: str | Path) -> Path:
    """Write the picture and return where it went.

    Without matplotlib the SVG is written by hand, and a PNG request gets that SVG beside it
    (``FILE.svg``): a machine without matplotlib still gets a picture.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"{out}: the plot must be a .png or .svg file")
    try:
        import matplotlib
    except ImportError:
        out = out.with_suffix(".svg")
        out.write_text(svg(report), encoding="utf-8")
        return out
    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    backends, phases, values = bars(report)
    height = max(1.2 + 0.7 * max(1, len(backends)), 1.0 + 0.22 * len(phases))  # room for the legend
    fig, ax = plt.subplots(figsize=(9, height))
    left = [0.0] * len(backends)
    for i, phase in enumerate(phases):
        ax.barh(backends, values[phase], left=left, color=PALETTE[i % len(PALETTE)], label=phase)
        left = [a + b for a, b in zip(left, values[phase], strict=True)]
    ax.set_xlabel("seconds (median per phase)")
    ax.set_title(_title(report))
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    if not backends:
        ax.text(0.5, 0.5, "no backend finished a round", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out, format=suffix[1:], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def svg(report: BenchReport) -> str:
    """The same stacked bars as plain SVG text."""
    backends, phases, values = bars(report)
    width, label_w, legend_w, bar_h, gap, top = 900, 110, 190, 26, 14, 40
    plot_w = width - label_w - legend_w - 20
    totals = [sum(values[p][i] for p in phases) for i in range(len(backends))]
    scale = plot_w / max(totals, default=1.0) if any(totals) else 1.0
    height = max(top + len(backends) * (bar_h + gap) + 40, top + 18 * len(phases) + 20)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<text x="10" y="22" font-size="14">{escape(_title(report))}</text>',
    ]
    for i, backend in enumerate(backends):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="10" y="{y + bar_h * 0.7:.1f}">{escape(backend)}</text>')
        x = float(label_w)
        for j, phase in enumerate(phases):
            w = values[phase][i] * scale
            colour = PALETTE[j % len(PALETTE)]
            if w > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                    f"<title>{escape(phase)}: {values[phase][i]:.3f} s</title></rect>"
                )
            x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{totals[i]:.2f} s</text>')
    lx = width - legend_w
    for j, phase in enumerate(phases):
        y = top + j * 18
        parts.append(f'<rect x="{lx}" y="{y}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>')
        parts.append(f'<text x="{lx + 18}" y="{y + 10}">{escape(phase)}</text>')
    if not backends:
        parts.append(f'<text x="{label_w}" y="{top + 20}">no backend finished a round</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _title(report: BenchReport) -> str:
    # the rounds that give the medians: the ok ones, not the ones asked for
    oks = sorted({s.counts.get("ok", 0) for s in report.summaries().values()}) or [0]
    rounds = str(oks[0]) if len(oks) == 1 else f"{oks[0]}-{oks[-1]}"
    plural = "" if rounds == "1" else "s"
    return f"{report.options.mode} start-up by phase (median of {rounds} ok round{plural})"

"""A month's run report: one self-contained HTML page (inline SVG charts drawn with matplotlib, inline styles, no
script and nothing fetched), each chart followed by the numbers behind it and the table they came from.

Pure: `steps/report.py` reads the lake into small pandas frames and hands them here as `Section`s.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import jinja2
import matplotlib

matplotlib.use("Agg")   # no display: the charts are drawn to SVG text

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MAX_ROWS = 40   # rows of a section's table shown on the page (the table's total is said when cut)
PALETTE = ["#2f6f9f", "#e0803a", "#4c9f70", "#c4504f", "#8a6bb0", "#8c6d4f", "#d67fb9", "#7f7f7f"]


@dataclass(frozen=True)
class Section:
    """One part of the report: a chart (SVG text, or empty), the numbers behind it, and where they came from."""

    title: str
    source: str                     # the table(s) read, e.g. "gold/flow_stages"
    numbers: pd.DataFrame
    chart: str = ""
    note: str = ""


@dataclass(frozen=True)
class Report:
    month: str
    lake: str
    sections: list[Section]
    facts: list[tuple[str, str]] = field(default_factory=list)   # headline figures, (label, value)
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flowops report {{ r.month }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta, .source, .note { color: #666; font-size: 0.85em; }
.facts { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.fact { background: #f4f6f8; border-radius: 6px; padding: 0.5em 0.9em; }
.fact b { display: block; font-size: 1.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; } th { background: #f4f6f8; }
td:first-child, th:first-child { text-align: left; }
.chart svg { max-width: 100%; height: auto; }
nav a { margin-right: 1em; font-size: 0.9em; }
</style></head>
<body>
<h1>flowops &middot; month {{ r.month }}</h1>
<div class="meta">lake {{ r.lake }} &middot; written {{ r.created.strftime("%Y-%m-%d %H:%M UTC") }} by
<code>flowops report --month {{ r.month }}</code></div>
<div class="facts">{% for label, value in r.facts %}<div class="fact">{{ label }}<b>{{ value }}</b></div>{% endfor %}
</div>
<nav>{% for s in r.sections %}<a href="#s{{ loop.index }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in r.sections %}
<h2 id="s{{ loop.index }}">{{ s.title }}</h2>
{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{% if s.chart %}<div class="chart">{{ s.chart | safe }}</div>{% endif %}
{{ table(s.numbers) | safe }}
<div class="source">from {{ s.source }}</div>
{% endfor %}
</body></html>
""")


def render(report: Report) -> str:
    """The page's HTML."""
    return _PAGE.render(r=report, table=numbers_table)


def numbers_table(frame: pd.DataFrame) -> str:
    """A frame as an HTML table (numbers formatted, at most MAX_ROWS rows, the total said when cut)."""
    if frame.empty:
        return '<p class="note">no rows</p>'
    shown = frame.head(MAX_ROWS)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    cut = f'<p class="note">first {MAX_ROWS} of {len(frame):,} rows</p>' if len(frame) > MAX_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{cut}"


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return str(value)


def _svg(fig: plt.Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]   # drop the XML prolog and doctype: the SVG goes inline


def bar_chart(labels: Sequence[str], values: Sequence[float], *, xlabel: str, horizontal: bool = True) -> str:
    """Bars, one per label (the first on top when horizontal); no chart for no bars."""
    if not len(labels):
        return ""
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.32 * len(labels) + 0.8)) if horizontal else (8, 3.5))
    if horizontal:
        ax.barh(list(labels)[::-1], list(values)[::-1], color=PALETTE[0])
        ax.set_xlabel(xlabel)
    else:
        ax.bar(list(labels), list(values), color=PALETTE[0])
        ax.set_ylabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def stacked_bars(labels: Sequence[str], parts: dict[str, Sequence[float]], *, xlabel: str) -> str:
    """Horizontal bars, one per label (the first on top), each split into `parts`."""
    if not len(labels):
        return ""
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.32 * len(labels) + 0.8)))
    left = np.zeros(len(labels))
    for i, (name, values) in enumerate(parts.items()):
        ax.barh(list(labels)[::-1], list(values)[::-1], left=left[::-1], label=name, color=PALETTE[i % len(PALETTE)])
        left = left + np.asarray(values, float)
    ax.set_xlabel(xlabel)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def line_chart(x: Sequence[str], series: dict[str, Sequence[float]], *, ylabel: str) -> str:
    """One line per series over x (dates or months)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for i, (name, values) in enumerate(series.items()):
        ax.plot(list(x), list(values), marker="o", markersize=3, color=PALETTE[i % len(PALETTE)], label=name)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=8)
    step = max(1, len(x) // 10)
    ax.set_xticks(range(0, len(x), step), [x[i] for i in range(0, len(x), step)], rotation=30, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def heatmap(matrix: pd.DataFrame, *, xlabel: str, ylabel: str) -> str:
    """A matrix of counts with each cell's number written in it."""
    fig, ax = plt.subplots(figsize=(1.1 * len(matrix.columns) + 2.5, 0.55 * len(matrix.index) + 1.5))
    values = matrix.to_numpy(float)
    ax.imshow(values, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=30, fontsize=8)
    ax.set_yticks(range(len(matrix.index)), [str(i) for i in matrix.index], fontsize=8)
    top = values.max() if values.size else 0
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{int(v):,}", ha="center", va="center", fontsize=8,
                color="white" if top and v > 0.6 * top else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _svg(fig)


def interval_chart(labels: Sequence[str], estimate: Sequence[float], low: Sequence[float], high: Sequence[float], *,
                   xlabel: str) -> str:
    """Point estimates with their intervals, one row per label, and the zero line."""
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.35 * len(labels) + 0.8)))
    y = np.arange(len(labels))[::-1]
    est, lo, hi = (np.asarray(v, float) for v in (estimate, low, high))
    ax.errorbar(est, y, xerr=[np.nan_to_num(est - lo), np.nan_to_num(hi - est)], fmt="o", color=PALETTE[0],
                ecolor=PALETTE[1], capsize=3)
    ax.axvline(0, color="#999", linewidth=1)
    ax.set_yticks(y, list(labels), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def funnel_chart(frame: pd.DataFrame, stages: Sequence[str], by: str) -> str:
    """Grouped bars: each stage of the funnel for each value of `by` (a channel)."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / max(1, len(frame))
    x = np.arange(len(stages))
    for i, row in enumerate(frame.itertuples(index=False)):
        ax.bar(x + i * width, [getattr(row, s) for s in stages], width, label=str(getattr(row, by)),
               color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(x + width * (len(frame) - 1) / 2, list(stages))
    ax.set_yscale("symlog")
    ax.set_ylabel("subscribers")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)

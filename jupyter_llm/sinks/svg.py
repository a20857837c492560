"""A dependency-free SVG line chart: the live chart (inside an ipywidgets.HTML) and the report's curves.

Inline `<svg>` renders in JupyterLab, Notebook, VS Code, Colab and nbconvert HTML without JavaScript, a CDN or
matplotlib, and it is text, so it survives saving the notebook. The cost is bounded by the points passed in:
callers pass the bounded `series.Series` points, never a raw step trace.

>>> svg = line_chart_svg({"loss": [(0, 2.0), (10, 1.0)]}, title="demo")
>>> svg.startswith("<svg") and "<polyline" in svg
True
"""

from __future__ import annotations

import base64
import math
from html import escape
from typing import Mapping, Sequence

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'
LEFT, RIGHT, BOTTOM, GAP = 52, 14, 34, 22
MARKERS_UP_TO = 40  # draw a dot per point for short series (per-epoch values)


def fmt_number(v: float) -> str:
    """Short tick labels: 1200 -> '1.2k', 0.00012 -> '0.00012', 3e-06 -> '3e-06'."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


class _Axis:
    """Maps data to pixels along one axis, optionally through log10."""

    def __init__(self, lo, hi, p0, p1, log=False):
        self.log = log
        self.lo, self.hi = (self._t(lo), self._t(hi))
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0
        self.p0, self.p1 = p0, p1

    def _t(self, v):
        return math.log10(v) if self.log else v

    def __call__(self, v):
        return self.p0 + (self._t(v) - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def _y_range(values: list[float], log: bool, unit_interval: bool):
    if unit_interval and values and min(values) >= 0 and max(values) <= 1:
        return [0.0, 0.25, 0.5, 0.75, 1.0]
    if log:
        lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        hi = max(hi, lo + 1)
        step = max(1, (hi - lo) // 5)
        return [10.0 ** e for e in range(lo, hi + 1, step)]
    return nice_ticks(min(values), max(values))


def _panel(out, series, colors, x: _Axis, top, bottom, log_y, unit_interval, y_range=None):
    """Draw one panel (gridlines, y ticks, lines) into `out`; series is {name: points}. `y_range` (lo, hi) fixes
    the y axis: what lies outside is clipped at the panel's edge (a divergence spike does not set the scale)."""
    log_y = log_y and all(y > 0 for pts in series.values() for _, y in pts) and y_range is None
    values = [y for pts in series.values() for _, y in pts]
    if y_range is not None:
        ticks = [t for t in nice_ticks(*y_range, n=7) if y_range[0] - 1e-12 <= t <= y_range[1] + 1e-12] or list(y_range)
        y = _Axis(y_range[0], y_range[1], bottom, top)
    else:
        ticks = _y_range(values, log_y, unit_interval) if values else [0.0, 1.0]
        y = _Axis(ticks[0], ticks[-1], bottom, top, log_y)
    x0, x1 = x.p0, x.p1
    for t in ticks:
        py = y(t)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x0 - 5}" y="{py + 3.5:.1f}" text-anchor="end" fill="#555">{fmt_number(t)}</text>')
    out.append(f'<rect x="{x0}" y="{top}" width="{x1 - x0}" height="{bottom - top}" fill="none" stroke="#999"/>')
    clip = ""
    if y_range is not None:  # the id names the rectangle: two charts sharing it in one page clip alike
        clip_id = f"jl-clip-{x0:.0f}-{top:.0f}-{x1:.0f}-{bottom:.0f}"
        out.append(f'<clipPath id="{clip_id}"><rect x="{x0}" y="{top}" width="{x1 - x0}" '
                   f'height="{bottom - top}"/></clipPath>')
        clip = f' clip-path="url(#{clip_id})"'
    for name, pts in series.items():
        xy = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in pts)
        out.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="1.6" stroke-linejoin="round" '
                   f'points="{xy}"{clip}><title>{escape(name)}</title></polyline>')
        if len(pts) <= MARKERS_UP_TO:
            out.extend(f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="2.2" fill="{colors[name]}"{clip}/>'
                       for px, py in pts)


def _clean(points) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in points if math.isfinite(a) and math.isfinite(b)]


def line_chart_svg(series: Mapping[str, Sequence[tuple[float, float]]], width: int = 560, height: int = 300,
                   title: str = "", xlabel: str = "step", log_y: bool = False, secondary: Sequence[str] = (),
                   colors: Mapping[str, str] | None = None, x_range: tuple[float, float] | None = None,
                   y_range: tuple[float, float] | None = None, log_x: bool = False,
                   marks: Sequence[tuple[float, str]] = ()) -> str:
    """An SVG line chart of `series` ({name: [(x, y), ...]}) sharing one x axis.

    Names listed in `secondary` (e.g. "val accuracy") go to a smaller panel below with their own y axis (fixed to
    0..1 when their values lie in it), so a metric and a loss never fight for one scale. `log_y` puts the main
    panel on a log scale when all its values are positive. `x_range` fixes the x axis (the live chart spans the
    whole fit so it does not rescale as it grows); `y_range` fixes the main panel's y axis, clipping what lies
    outside. `log_x`: x values are positive and spread over decades (learning rates); the axis is logarithmic,
    ticked at powers of ten. `marks` are (x, label) pairs drawn as labelled vertical lines (a suggested rate).
    """
    names = list(series)
    colors = {**{n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}, **(colors or {})}
    data = {n: _clean(series[n]) for n in names}
    if log_x:
        data = {n: [(math.log10(px), py) for px, py in pts if px > 0] for n, pts in data.items()}
        marks = [(math.log10(mx), label) for mx, label in marks if mx > 0]
        x_range = (math.log10(x_range[0]), math.log10(x_range[1])) if x_range else None
    main = {n: p for n, p in data.items() if p and n not in secondary}
    lower = {n: p for n, p in data.items() if p and n in secondary}
    xs = [px for pts in data.values() for px, _ in pts]
    lo, hi = x_range or (min(xs or [0.0]), max(xs or [1.0]))
    lo, hi = min([lo, *xs]), max([hi, *xs])
    if hi <= lo:
        hi = lo + 1.0
    x_ticks = [t for t in nice_ticks(lo, hi) if lo - 1e-9 <= t <= hi + 1e-9]  # the axis ends where the fit does
    if log_x:  # decades only: 1e-06, 1e-05, ...
        x_ticks = [t for t in x_ticks if float(t).is_integer()] or [t for t in range(math.ceil(lo), math.floor(hi) + 1)]
    x = _Axis(lo, hi, LEFT, width - RIGHT)
    top = 40 if title else 24  # title row (optional), then the legend row
    plot_bottom = height - BOTTOM
    split = top + (plot_bottom - top) * (0.66 if lower else 1.0)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" font-size="11" {FONT}>',
           f'<title>{escape(title or "chart")}</title>',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{LEFT}" y="14" font-size="13" font-weight="600" fill="#222">{escape(title)}</text>')
    lx = LEFT
    for n in names:  # legend: one row under the title
        ly = top - 13
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 16}" y2="{ly}" stroke="{colors[n]}" stroke-width="3"/>'
                   f'<text x="{lx + 20}" y="{ly + 4}" fill="#333">{escape(n)}</text>')
        lx += 30 + 6 * len(n)
    _panel(out, main, colors, x, top, split - (GAP / 2 if lower else 0), log_y, unit_interval=False,
           y_range=y_range)
    for mx, label in marks:
        px = x(mx)
        out.append(f'<line class="jl-mark" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{plot_bottom}" '
                   f'stroke="#d62728" stroke-width="1.2" stroke-dasharray="4 3"/>')
        anchor = "end" if px > (LEFT + width - RIGHT) / 2 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<text class="jl-mark-label" x="{px + dx:.1f}" y="{top + 12}" text-anchor="{anchor}" '
                   f'fill="#d62728">{escape(label)}</text>')
    if lower:
        _panel(out, lower, colors, x, split + GAP / 2, plot_bottom, False, unit_interval=True)
    for t in x_ticks:
        out.append(f'<text x="{x(t):.1f}" y="{plot_bottom + 14}" text-anchor="middle" fill="#555">'
                   f'{f"1e{int(t)}" if log_x else fmt_number(t)}</text>')
    out.append(f'<text x="{(LEFT + width - RIGHT) / 2}" y="{height - 4}" text-anchor="middle" fill="#333">'
               f'{escape(xlabel)}</text>')
    if not xs:
        out.append(f'<text x="{(LEFT + width - RIGHT) / 2}" y="{(top + plot_bottom) / 2}" text-anchor="middle" '
                   f'fill="#888">waiting for the first steps…</text>')
    out.append("</svg>")
    return "".join(out)


def svg_img(svg: str, alt: str = "chart") -> str:
    """The chart as `<img src="data:image/svg+xml;base64,...">`, for HTML that outlives the session.

    JupyterLab sanitizes the HTML outputs of an untrusted notebook (one saved elsewhere and opened here): it
    drops `<svg>` elements and keeps their text, so an inline chart turns into a line of stray labels. An `<img>`
    with a data URI passes the sanitizer and renders the same in nbconvert, nbviewer, VS Code and Colab.
    """
    data = base64.b64encode(svg.encode()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/svg+xml;base64,{data}"/>'

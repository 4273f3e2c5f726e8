"""A dependency-free line chart as inline SVG (the report must open offline, with no scripts)."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")


def line_chart_svg(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 320,
) -> str:
    """Polylines (with point markers) for each named series on shared, labelled axes."""
    points = [p for values in series.values() for p in values if _finite(p)]
    if not points:
        return f'<svg class="chart" role="img" width="{width}" height="60"><title>{escape(title)}</title><text x="10" y="35">No data for {escape(title)}.</text></svg>'
    left, right, top, bottom = 64, 16, 36, 48
    x_min, x_max = _span([p[0] for p in points])
    y_min, y_max = _span([p[1] for p in points])

    def sx(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y_min) / (y_max - y_min)) * (height - top - bottom)

    parts = [
        f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for tick in _ticks(x_min, x_max):
        parts.append(
            f'<text x="{sx(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{_label(tick)}</text>'
        )
    for tick in _ticks(y_min, y_max):
        y = sy(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_label(tick)}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{escape(x_label)}</text>')
    parts.append(
        f'<text x="14" y="{height / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {height / 2})">{escape(y_label)}</text>'
    )
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        finite = sorted(p for p in values if _finite(p))
        if not finite:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in finite)
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>'
        )
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in finite]
        legend_y = top + 4 + 16 * index
        parts.append(f'<rect x="{width - right - 150}" y="{legend_y}" width="12" height="3" fill="{color}"/>')
        parts.append(f'<text x="{width - right - 132}" y="{legend_y + 5}" font-size="12">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _finite(point: tuple[float, float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in point)


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    return low, high


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.2e}"

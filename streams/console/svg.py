"""Small server-side SVG charts for the Trends page (no JavaScript, no library). PURE."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

LEVEL_COLOURS = ("#b91c1c", "#ca8a04", "#0891b2", "#16a34a", "#166534")


def stacked_bars(
    columns: list[list[int]],
    *,
    colours: tuple[str, ...],
    names: tuple[str, ...],
    labels: list[str],
    title: str,
    width: int = 960,
    height: int = 180,
) -> Markup:
    """One bar per column, its values stacked bottom-up; a label every few columns."""
    top = max((sum(c) for c in columns), default=0) or 1
    left, bottom, right = 40, 20, 10
    plot_w, plot_h = width - left - right, height - bottom - 10
    step = plot_w / max(len(columns), 1)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="100%" role="img" aria-label="{escape(title)}">'
        ),
        f"<title>{escape(title)}</title>",
        f'<text x="{left - 4}" y="14" text-anchor="end" class="axis">{top}</text>',
        f'<text x="{left - 4}" y="{10 + plot_h}" text-anchor="end" class="axis">0</text>',
        (
            f'<line x1="{left}" y1="{10 + plot_h}" x2="{width - right}" y2="{10 + plot_h}" '
            'stroke="#999" stroke-width="1"/>'
        ),
    ]
    every = max(1, len(columns) // 8)
    for i, column in enumerate(columns):
        x = left + i * step
        y = 10.0 + plot_h
        for value, colour, name in zip(column, colours, names, strict=False):
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(labels[i])} '
                f"{escape(name)}: {value}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 4}" class="axis">{escape(labels[i])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def legend(colours: tuple[str, ...], names: tuple[str, ...]) -> Markup:
    html = "".join(
        f'<span class="key"><svg width="10" height="10"><rect width="10" height="10" '
        f'fill="{c}"/></svg> {escape(n)}</span>'
        for c, n in zip(colours, names, strict=False)
    )
    return Markup(html)  # noqa: S704 - the names went through escape()


def reliability_diagram(
    bins: list[tuple[float, float, int, float | None, float | None]],
    *,
    title: str,
    size: int = 220,
) -> Markup:
    """A reliability diagram: per confidence bin ``(lower, upper, count, accuracy,
    calibrated)``, how often proposals were right (bars) against the diagonal of a
    perfectly calibrated system, and the calibrated (isotonic) accuracy (dots)."""
    pad = 28
    plot = size - 2 * pad

    def x(value: float) -> float:
        return pad + plot * value

    def y(value: float) -> float:
        return pad + plot * (1.0 - value)

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
            f'width="{size}" height="{size}" role="img" aria-label="{escape(title)}">'
        ),
        f"<title>{escape(title)}</title>",
        f'<rect x="{pad}" y="{pad}" width="{plot}" height="{plot}" fill="none" stroke="#999"/>',
        (
            f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        ),
        f'<text x="{pad}" y="{size - 8}" class="axis">reported confidence</text>',
        f'<text x="4" y="{pad - 10}" class="axis">right</text>',
    ]
    for lower, upper, count, accuracy, calibrated in bins:
        if not count or accuracy is None:
            continue
        width = max(plot * (upper - lower) - 1, 1)
        parts.append(
            f'<rect x="{x(lower):.1f}" y="{y(accuracy):.1f}" width="{width:.1f}" '
            f'height="{plot * accuracy:.1f}" fill="#0891b2" fill-opacity="0.6">'
            f"<title>{lower:.2f}-{upper:.2f}: {accuracy:.0%} right of {count}</title></rect>"
        )
        if calibrated is not None:
            parts.append(
                f'<circle cx="{x((lower + upper) / 2):.1f}" cy="{y(calibrated):.1f}" r="3" '
                f'fill="#b91c1c"><title>calibrated {calibrated:.2f}</title></circle>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - the only text is the escaped title

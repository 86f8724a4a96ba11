"""The overview's chart, drawn on the server as inline SVG: workflows that succeeded and failed
per minute over the last hour, as stacked bars. No JavaScript library; only numbers and fixed
labels go into the markup."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 160
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 40, 20, 10


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at or above ``value`` (at least 1): the y axis top."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def throughput_svg(succeeded: list[int], failed: list[int]) -> Markup:
    """Stacked bars, oldest minute on the left; ``succeeded[i]`` and ``failed[i]`` ended ``i``
    minutes ago."""
    minutes = len(succeeded)
    peak = nice_ceiling(max((s + f for s, f in zip(succeeded, failed, strict=True)), default=0))
    plot_w = WIDTH - MARGIN_LEFT
    plot_h = HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    bar_w = plot_w / max(minutes, 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="workflows ended per minute, last hour" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    base_y = MARGIN_TOP + plot_h
    for value, label_y in ((peak, MARGIN_TOP), (0, base_y)):
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH}" y1="{label_y}" y2="{label_y}" class="grid"/>'
        )
        parts.append(
            f'<text x="{MARGIN_LEFT - 4}" y="{label_y + 4}" text-anchor="end">{value}</text>'
        )
    for i in range(minutes):
        x = MARGIN_LEFT + (minutes - 1 - i) * bar_w
        ok_h = plot_h * succeeded[i] / peak
        bad_h = plot_h * failed[i] / peak
        title = escape(f"{i} min ago: {succeeded[i]} succeeded, {failed[i]} failed")
        parts.append(f"<g><title>{title}</title>")
        if ok_h:
            parts.append(
                f'<rect class="ok" x="{x + 1:.1f}" y="{base_y - ok_h:.1f}" '
                f'width="{bar_w - 2:.1f}" height="{ok_h:.1f}"/>'
            )
        if bad_h:
            parts.append(
                f'<rect class="bad" x="{x + 1:.1f}" y="{base_y - ok_h - bad_h:.1f}" '
                f'width="{bar_w - 2:.1f}" height="{bad_h:.1f}"/>'
            )
        parts.append("</g>")
    for ago in (60, 45, 30, 15, 0):
        x = MARGIN_LEFT + (minutes - ago) * bar_w if ago else WIDTH - 2
        anchor = "end" if ago == 0 else "middle" if ago != 60 else "start"
        label = "now" if ago == 0 else f"-{ago}m"
        parts.append(f'<text x="{x:.0f}" y="{HEIGHT - 4}" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

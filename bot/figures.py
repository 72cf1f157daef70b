"""The figures Flywheel reports and how they are written, for every place that shows them.

`flywheel stats` and `flywheel experiment status` in the terminal (bot/stats_cli.py,
bot/experiment_cli.py) and the App Home tab (bot/home.py) compute approval the same way here and
write dollars, durations, shares and approval with the same helpers, so the three never disagree.
No I/O, no arguments: values in, text out.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
BAR_WIDTH = 10


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion; None when ``n`` is 0.

    >>> low, high = wilson_interval(8, 10)
    >>> round(low, 4), round(high, 4)
    (0.4902, 0.9433)
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def approval(up: int, down: int) -> float | None:
    return up / (up + down) if up + down else None


class Approval:
    """Approval of rated calls: up / (up + down), with its 95 % Wilson interval."""

    up: int
    down: int

    @property
    def approval(self) -> float | None:
        return approval(self.up, self.down)

    @property
    def approval_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.up, self.up + self.down)


def approval_text(up: int, down: int, *, ascii_only: bool = False) -> str:
    """``"82% (67–91)"``, or a dash when nothing is rated."""
    interval = wilson_interval(up, up + down)
    dash = "-" if ascii_only else "–"
    if interval is None:
        return dash
    return f"{round(100 * up / (up + down))}% ({round(100 * interval[0])}{dash}{round(100 * interval[1])})"


def approval_bar(share: float | None, *, full: str = "█", empty: str = "░", width: int = BAR_WIDTH) -> str:
    if share is None:
        return ""
    filled = round(share * width)
    return full * filled + empty * (width - filled)


def usd(value: float | None) -> str:
    """Dollars: ``$1,234``, ``$12.34``, and two significant digits below a dollar (``$0.024``)."""
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = min(8, 1 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"


def duration(ms: int | None) -> str:
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000}m{ms % 60_000 // 1000:02d}s"


def percent(share: float | None) -> str:
    if share is None:
        return "–"
    if 0 < share < 0.01:
        return "<1%"
    if 0.99 < share < 1:
        return ">99%"
    return f"{round(100 * share)}%"


def pct(share: float | None) -> str:
    """A share as `flywheel experiment status` writes it: ``82 %``, a dash for none."""
    return "–" if share is None else f"{share * 100:.0f} %"

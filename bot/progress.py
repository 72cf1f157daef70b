"""A progress bar for long command-line work (`flywheel export`, `flywheel replay`).

Drawn on one line of stderr, rewritten in place at most ten times a second, and erased when the
work ends, so the lines printed after it start clean. Only on a terminal: piped or redirected,
it writes nothing, and logs, files and CI output stay as they were.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import IO

INTERVAL = 0.1  # seconds between redraws
BAR = 20  # cells


def is_terminal(stream: IO[str] | IO[bytes] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class ProgressBar:
    """``label [████████░░░░] done/total  40% · note``; with no total, ``label done``."""

    def __init__(self, label: str, total: int | None = None, *, stream: IO[str] | None = None,
                 enabled: bool = True) -> None:
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.on = enabled and is_terminal(self.stream)
        self.done, self.note = 0, ""
        self._drawn = 0.0
        self._shown = False
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            "█░…".encode(encoding)
            self._full, self._empty = "█", "░"
        except (UnicodeEncodeError, LookupError):
            self._full, self._empty = "#", "."

    def update(self, done: int, note: str = "") -> None:
        """Record progress; redraw if a tenth of a second has passed (always at the end)."""
        self.done, self.note = done, note
        if not self.on:
            return
        now = time.monotonic()
        if now - self._drawn >= INTERVAL or (self.total is not None and done >= self.total):
            self._drawn = now
            self._draw()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n, self.note)

    def line(self, width: int = 80) -> str:
        """The bar's text in at most ``width`` cells: the bar narrows (down to 5 cells) before anything is cut."""
        note = f" · {self.note}" if self.note else ""
        if not self.total:
            return f"{self.label} {self.done:,}{note}"[:width]
        share = min(self.done / self.total, 1.0)
        figures = f"{self.done:,}/{self.total:,} {round(100 * share):3d}%"
        cells = max(5, min(BAR, width - len(f"{self.label} [] {figures}{note}")))
        filled = round(share * cells)
        return f"{self.label} [{self._full * filled}{self._empty * (cells - filled)}] {figures}{note}"[:width]

    def _draw(self) -> None:
        self.stream.write("\r\033[K" + self.line(self._width() - 1))  # never wrap: \r returns to this line only
        self.stream.flush()
        self._shown = True

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        return columns if columns >= 20 else shutil.get_terminal_size((80, 24)).columns  # a new pty says 0

    def close(self) -> None:
        """Erase the bar (the report that follows takes its line)."""
        if self.on and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

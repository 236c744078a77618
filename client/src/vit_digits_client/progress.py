"""A progress bar on one terminal line: ``[#####.....]  320/1000 pictures  3.1 s``, redrawn in place."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30  # characters of the bar itself


class ProgressBar:
    """Counts up to ``total`` on ``stream`` (stderr, so that the results on stdout stay clean)."""

    def __init__(self, total: int, stream: TextIO, label: str = "pictures"):
        self.total, self.stream, self.label = max(total, 1), stream, label
        self.start = time.monotonic()

    def __call__(self, done: int) -> None:
        """Redraw the bar with ``done`` of the total done."""
        filled = round(WIDTH * min(done, self.total) / self.total)
        elapsed = time.monotonic() - self.start
        line = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done:>{len(str(self.total))}}/{self.total} {self.label}"
        self.stream.write(f"\r{line}  {elapsed:.1f} s")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        self.stream.write("\n")
        self.stream.flush()

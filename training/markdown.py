"""Markdown tables, the one way the training reports write them (experiments, trust, ship)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: the header line, the rule, then one line per row, each line ending in a
    newline. Cells are written as given (an empty string leaves a cell empty)."""
    lines = [_line(head), "|" + " --- |" * len(head)]
    for row in rows:
        if len(row) != len(head):
            raise ValueError(f"a row of {len(row)} cells under {len(head)} headings: {list(row)}")
        lines.append(_line(row))
    return "\n".join(lines) + "\n"


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"

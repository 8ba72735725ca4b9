"""What the benchmarks share: their results as a Markdown table for BENCHMARKS.md."""

from __future__ import annotations


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others (numbers) right-aligned."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    aligns = ["---"] + ["---:"] * (len(headers) - 1)
    return "\n".join([line(headers), line(aligns), *(line(r) for r in rows)])

"""What the benchmarks share: their results as a table on the console and in Markdown for BENCHMARKS.md."""

from __future__ import annotations

from rich.table import Table


def measure_table(title: str, rows: list[list[str]]) -> Table:
    """A two-column (measure, value) table for the console; verdicts in green (PASS) or red (FAIL, NO)."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(*row, style="green" if row[1].startswith("PASS") else
                      "red" if row[1].startswith(("FAIL", "NO")) else None)
    return table


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others (numbers) right-aligned."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    aligns = ["---"] + ["---:"] * (len(headers) - 1)
    return "\n".join([line(headers), line(aligns), *(line(r) for r in rows)])

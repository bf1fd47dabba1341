"""Append result rows to a table in BENCHMARKS.md, found by its `<!-- name -->` ... `<!-- /name -->` markers."""

from __future__ import annotations

from pathlib import Path


def append_rows(path: str | Path, table: str, rows: list[str]) -> None:
    p = Path(path)
    text = p.read_text()
    end = f"<!-- /{table} -->"
    if end not in text:
        raise SystemExit(f"{p} has no `{end}` marker to append the {table} rows before")
    p.write_text(text.replace(end, "\n".join(rows) + "\n" + end))

"""Append result rows to a table in BENCHMARKS.md, found by its `<!-- name -->` ... `<!-- /name -->` markers."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """The machine column of every benchmark table: architecture, cores and the load while it ran."""
    return f"{platform.machine()} ×{os.cpu_count()}, load {os.getloadavg()[0]:.1f}"


def append_rows(path: str | Path, table: str, rows: list[str]) -> None:
    p = Path(path)
    text = p.read_text()
    end = f"<!-- /{table} -->"
    if end not in text:
        raise SystemExit(f"{p} has no `{end}` marker to append the {table} rows before")
    p.write_text(text.replace(end, "\n".join(rows) + "\n" + end))


def replace_block(path: str | Path, name: str, text: str) -> None:
    """Put `text` between the `<!-- name -->` and `<!-- /name -->` markers, adding them at the end if absent."""
    p = Path(path)
    old = p.read_text()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    p.write_text(new)

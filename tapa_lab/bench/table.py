"""What every benchmark ends with: a rich table on the console, and the same table as markdown beside a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def write_report(title: str, header: list[str], rows: list[list[str]], payload: dict, out_dir: Path, stem: str,
                 console: Console) -> None:
    """Print ``rows`` under ``header`` and write ``<stem>.json`` (``payload``) and ``<stem>.md`` into ``out_dir``.

    Args:
        title: names the measurement and the machine; heads both the console table and the markdown file.
        header: column names.
        rows: one list of formatted cells per result.
        payload: what the JSON file holds (machine, versions, raw results).
        out_dir: created if missing.
        stem: file name without extension (``training``, ``decode``, ``attention``).
        console: where the table is printed.
    """
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="right")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (out_dir / f"{stem}.md").write_text(f"{title}\n\n" + "\n".join(lines) + "\n")
    console.print(f"wrote {out_dir / f'{stem}.json'} and {out_dir / f'{stem}.md'}")

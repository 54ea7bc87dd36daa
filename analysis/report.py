"""The report: every figure and table of a reproduce run, in one Markdown page beside them."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def write_report(path: Path, written: dict[str, list[Path]], status: list[dict], preset: str, seconds: float,
                 version: str) -> Path:
    """``version``: the hybridbench that made the report (the caller knows it; analysis imports no suite)."""
    lines = [f"# hybridbench report ({preset} preset)", "",
             f"hybridbench {version}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s in all.", "",
             "| experiment | jobs done | failed | pending | rows |", "|---|---|---|---|---|"]
    lines += [f"| {s['experiment']} | {s['done']} | {s['failed_jobs']} | {s['pending']} | {s['rows']} |"
              for s in status]
    for name, files in written.items():
        lines += ["", f"## {name}", ""]
        for f in files:
            rel = os.path.relpath(f, path.parent)
            if f.suffix == ".png":
                lines += [f"![{f.stem}]({rel})", ""]
            elif f.suffix == ".md":
                lines += [f.read_text().replace("\n## ", "\n### ").replace("## ", "### ", 1), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path

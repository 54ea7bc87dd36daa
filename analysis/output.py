"""Writing what analysis makes: figures as PNG, tables as CSV plus one Markdown summary."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.markdown import markdown_table


def save_figure(fig: plt.Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return out


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path, summary: str) -> list[Path]:
    """Each table as ``NAME.csv`` and all of them in ``summary`` (Markdown); returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written, md = [], []
    for name, table in tables.items():
        path = out_dir / f"{name}.csv"
        table.to_csv(path, index=False)
        written.append(path)
        md.append(f"## {name}\n\n{markdown_table(table) if not table.empty else '(no rows)'}\n")
    path = out_dir / summary
    path.write_text("\n".join(md))
    return [*written, path]

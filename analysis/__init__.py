"""Tables and figures made from stored result rows (never from a runner)."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import pandas as pd

from analysis import failures

# experiment name -> module with ``render(rows, out_dir) -> list[Path]``.
RENDERERS: dict[str, str] = {
    "zoo-fit": "analysis.zoo_fit",
    "reduction": "analysis.reduction",
    "recovery": "analysis.recovery",
    "recording": "analysis.recording",
}


def render(experiment: str, rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure and table of ``experiment`` under ``out_dir``; returns the files written.

    Failed jobs go to a table of their own; the figures are made from the other rows, if any.
    """
    if experiment not in RENDERERS:
        raise ValueError(f"no figures for experiment {experiment!r}; known: {', '.join(RENDERERS)}")
    written = failures.render(experiment, rows, Path(out_dir))
    usable = rows[~failures.failed_rows(rows)]
    if not usable.empty:
        written += import_module(RENDERERS[experiment]).render(usable.reset_index(drop=True), Path(out_dir))
    return written

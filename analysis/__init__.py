"""Tables and figures made from stored result rows (never from a runner)."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import pandas as pd

# experiment name -> module with ``render(rows, out_dir) -> list[Path]``.
RENDERERS: dict[str, str] = {
    "zoo-fit": "analysis.zoo_fit",
    "reduction": "analysis.reduction",
    "recovery": "analysis.recovery",
    "recording": "analysis.recording",
}


def render(experiment: str, rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure and table of ``experiment`` under ``out_dir``; returns the files written."""
    if experiment not in RENDERERS:
        raise ValueError(f"no figures for experiment {experiment!r}; known: {', '.join(RENDERERS)}")
    return import_module(RENDERERS[experiment]).render(rows, Path(out_dir))

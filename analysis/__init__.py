"""Tables and figures made from stored result rows (never from a runner)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def render(experiment: str, rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure and table of ``experiment`` under ``out_dir``; returns the files written."""
    from analysis import zoo_fit

    renderers = {"zoo-fit": zoo_fit.render}
    if experiment not in renderers:
        raise ValueError(f"no figures for experiment {experiment!r}; known: {', '.join(renderers)}")
    return renderers[experiment](rows, Path(out_dir))

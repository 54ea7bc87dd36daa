"""Training: the one staged loop (``loop``), batched curve fitting of gate ensembles (``curve_fit``) and
learning-rate schedules."""

from suite.train.curve_fit import (
    LOSSES,
    CurveFitConfig,
    CurveFitResult,
    best_per_group,
    curve_metrics,
    fit_curves,
    repeat_for_seeds,
)
from suite.train.loop import Stage, StepInfo, train
from suite.train.schedule import warmup_cosine

__all__ = [
    "LOSSES",
    "Stage",
    "StepInfo",
    "CurveFitConfig",
    "CurveFitResult",
    "best_per_group",
    "curve_metrics",
    "fit_curves",
    "repeat_for_seeds",
    "train",
    "warmup_cosine",
]

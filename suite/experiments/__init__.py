"""Experiments by name: each is a config dataclass with ``plan`` and ``run`` (see base.py)."""

from __future__ import annotations

from importlib import import_module

from suite.config import ConfigError
from suite.experiments.base import Experiment

# name -> "module:class"; imported on demand so that one experiment's dependencies never slow another.
EXPERIMENTS: dict[str, str] = {
    "zoo-fit": "suite.experiments.zoo_fit:ZooFit",
    "reduction": "suite.experiments.reduction:Reduction",
    "recovery": "suite.experiments.recovery:Recovery",
    "recording": "suite.experiments.recording:Recording",
}


def get_experiment(name: str) -> Experiment:
    """A fresh instance of the experiment called ``name``."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}",
                          field="experiment")
    module, _, cls = EXPERIMENTS[name].partition(":")
    return getattr(import_module(module), cls)()

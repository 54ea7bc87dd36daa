"""Experiments by name: each is a config dataclass with ``plan`` and ``run`` (see base.py)."""

from __future__ import annotations

from suite.config import ConfigError
from suite.experiments.base import Experiment


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name`` (its module is imported on demand)."""
    from suite.experiments import zoo_fit

    registry: dict[str, type] = {zoo_fit.ZooFit.name: zoo_fit.ZooFit}
    try:
        return registry[name]()
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(registry))}",
                          field="experiment") from None

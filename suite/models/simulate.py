"""The simulator of a saved model, by kind: ``simulate`` and ``reference`` under a ``Stimulus``, every ``record_dt``."""

from __future__ import annotations

from typing import Protocol

import torch

from suite.models.files import ModelFileError, SavedModel
from suite.models.stimulus import Stimulus


class ModelSimulator(Protocol):
    record_dt: float

    def density(self, value: float) -> float: ...

    def simulate(self, stimulus: Stimulus, t_stop: float) -> torch.Tensor: ...

    def reference(self, stimulus: Stimulus, t_stop: float) -> torch.Tensor: ...


def simulator(saved: SavedModel) -> ModelSimulator:
    if saved.kind == "recovered_gate":
        from suite.models.recovered import RecoveredGate

        return RecoveredGate(saved)
    if saved.kind == "reduced_hybrid":
        from suite.models.reduced import ReducedHybrid

        return ReducedHybrid(saved)
    raise ModelFileError(f"a {saved.kind} is not simulated on its own (it is a set of gates)", file=str(saved.path),
                         field="kind")

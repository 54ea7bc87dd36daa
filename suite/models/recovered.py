"""A saved recovered gate, reloaded: its HH (or other) cell with the learned gate, simulated as the run that
trained it simulated it (the same tables, step and scheme: the same trace, bit for bit), beside the
reference model it was trained on."""

from __future__ import annotations

import torch

from channelzoo.errors import ZooError
from channelzoo.models import get_model
from suite.experiments.recovery import F64, TRUTH_DT, RecoveryCell, ground_truth, simulate_tables
from suite.models.files import ModelFileError, SavedModel, require_field
from suite.models.neural_gate import gate_from_model
from suite.models.stimulus import Stimulus
from suite.sim.stimulus import current_density
from suite.train.trajectory import TrajectoryFitConfig, grid, tabulated_network


class RecoveredGate:
    """A ``recovered_gate`` model: the cell (``plugs_into``), its fixed parameters and the learned network."""

    def __init__(self, saved: SavedModel) -> None:
        if saved.kind != "recovered_gate":
            raise ModelFileError(f"a {saved.kind} is not a recovered gate", file=str(saved.path), field="kind")
        self.saved = saved
        where = require_field(saved, "plugs_into")
        try:
            model = get_model(str(where["model"]))
            self.cell = RecoveryCell(model, str(where["channel"]), str(where["gate"]))
        except (ZooError, KeyError, ValueError) as e:
            raise ModelFileError(f"does not name a known model, channel and gate ({e})", file=str(saved.path),
                                 field="plugs_into") from None
        self.gate = gate_from_model(saved)
        fixed = require_field(saved, "fixed_parameters")
        ids = [c.id for c in model.channels]
        try:
            values = [fixed["gbar"][i] for i in ids] + [fixed["e_rev"][i] for i in ids] + [fixed["capacitance"]]
        except (KeyError, TypeError):
            raise ModelFileError(f"needs gbar and e_rev of every channel ({ids}) and capacitance",
                                 file=str(saved.path), field="fixed_parameters") from None
        self.theta = torch.tensor(values, dtype=F64).unsqueeze(0)
        self.sim = require_field(saved, "simulation")
        self.current = require_field(saved, "training.current")
        self.record_dt = float(self.sim["record_dt"])

    def density(self, value: float) -> float:
        """A current in the unit the model was trained in (``training.current.unit``) as uA/cm2."""
        c = self.current
        return float(current_density(value * c["scale"], c["unit"], c["area_cm2"]))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x_inf and tau of every gate on the simulation's grid, the learned one last: ``[1, G, M]``."""
        s = self.sim
        fit = TrajectoryFitConfig(v_min=s["v_min"], v_max=s["v_max"], dv_net=s["dv_net"])
        v = grid(TrajectoryFitConfig(v_min=s["v_min"], v_max=s["v_max"], dv=s["dv"]))
        with torch.no_grad():
            inf_n, tau_n = tabulated_network(self.gate, fit, 1, v)
        mech_inf, mech_tau = self.cell.true_rates(v)
        inf = torch.cat([mech_inf[:-1].unsqueeze(0), inf_n.unsqueeze(1)], 1)
        tau = torch.cat([mech_tau[:-1].unsqueeze(0), tau_n.unsqueeze(1)], 1)
        return inf, tau

    def simulate(self, stimulus: Stimulus, t_stop: float) -> torch.Tensor:
        """Voltages ``[T]`` (mV) every ``record_dt`` ms from t = 0: the learned model as it was trained."""
        s = self.sim
        inf, tau = self.tables()
        profile = stimulus.profile(s["dt"], t_stop)
        return simulate_tables(self.cell, inf, tau, s["dv"], profile, s["dt"], self.theta, s["record_dt"])[0]

    def reference(self, stimulus: Stimulus, t_stop: float) -> torch.Tensor:
        """The model it was trained on (true gates and parameters) under the same stimulus: ``[T]`` mV."""
        return ground_truth(self.cell, self.sim["record_dt"])(stimulus.profile(TRUTH_DT, t_stop))[0]

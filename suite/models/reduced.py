"""A saved reduced hybrid, reloaded: the soma with its learned axial current and latent states, simulated as the
run that trained it simulated it (the same kernel and step), beside the full cell it was trained to replace."""

from __future__ import annotations

import torch

from suite.config import load_config
from suite.experiments.reduction import ReductionConfig, setup
from suite.models.files import ModelFileError, SavedModel, require_field
from suite.models.stimulus import Stimulus
from suite.sim.reduced import AxialODE, ReducedSoma, run_fused


def axial_from_model(saved: SavedModel) -> tuple[AxialODE, torch.Tensor]:
    """The one-model ``AxialODE`` the spec's architecture describes with the file's weights, and the stimulus scale."""
    arch = require_field(saved, "architecture")
    try:
        nz, z_max = int(arch["n_latents"]), int(arch["z_max"])
        width, depth, activation = int(arch["width"]), int(arch["depth"]), str(arch["activation"])
        dtype = saved.tensors["stim_scale"].dtype
        axial = AxialODE([nz], width, depth, activation, dtype=dtype, z_max=z_max)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"needs n_latents, z_max, width, depth, activation and a stim_scale tensor ({e})",
                             file=str(saved.path), field="architecture") from None
    weights = {k.removeprefix("axial."): v for k, v in saved.tensors.items() if k.startswith("axial.")}
    try:
        axial.load_state_dict(weights)
    except RuntimeError as e:
        raise ModelFileError(f"the weights do not fit the architecture: {str(e).splitlines()[-1].strip()}",
                             file=str(saved.path), field="architecture.width") from None
    return axial, saved.tensors["stim_scale"]


class ReducedHybrid:
    """A ``reduced_hybrid`` model: the soma (``plugs_into``) and its axial ODE; currents in nA (the full cell's)."""

    def __init__(self, saved: SavedModel) -> None:
        if saved.kind != "reduced_hybrid":
            raise ModelFileError(f"a {saved.kind} is not a reduced hybrid", file=str(saved.path), field="kind")
        self.saved = saved
        axial, scale = axial_from_model(saved)
        ref = require_field(saved, "reference")
        try:
            self.config = load_config(ReductionConfig, None, [], preset=ref["config"])
            self.setup = setup(self.config, str(ref["swc"]))
        except (KeyError, TypeError) as e:
            raise ModelFileError(f"needs the reduction config and morphology ({e})", file=str(saved.path),
                                 field="reference") from None
        where = require_field(saved, "plugs_into")
        self.hybrid = ReducedSoma(self.setup.channels, float(where["area_um2"]), axial, 1.0,
                                  float(where["capacitance"]), float(where["temperature"]))
        with torch.no_grad():
            self.hybrid.stim_scale.copy_(scale)
        self.v_init = float(where["v_init"])
        sim = require_field(saved, "simulation")
        self.dt, self.every = float(sim["dt"]), int(sim["record_every"])
        self.record_dt = self.dt * self.every

    def density(self, value: float) -> float:
        return float(value)  # stimuli are the full cell's current in nA, as trained

    def simulate(self, stimulus: Stimulus, t_stop: float) -> torch.Tensor:
        stim = stimulus.profile(self.dt, t_stop)[0]
        with torch.no_grad():
            v = run_fused(self.hybrid, stim, self.dt, v0=self.v_init).v[0, 0]
        return torch.from_numpy(v[::self.every].copy())

    def reference(self, stimulus: Stimulus, t_stop: float) -> torch.Tensor:
        stim = stimulus.profile(self.dt, t_stop)
        return self.setup.cable.simulate(stim, self.dt, self.v_init).v[0, ::self.every, 0]

"""Simulators: the shared membrane layer, a batched single compartment, stimuli (and the cable, elsewhere)."""

from suite.sim.membrane import Membrane
from suite.sim.single import SingleCompartment, Trace
from suite.sim.stimulus import SampledCurrent, StepCurrent, density_to_nA, nA_to_density, ou_current

__all__ = ["Membrane", "SampledCurrent", "SingleCompartment", "StepCurrent", "Trace", "density_to_nA",
           "nA_to_density", "ou_current"]

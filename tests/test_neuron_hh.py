"""NEURON as the oracle: the same HH soma under the same step current, in NEURON and in suite.sim.single.

Current-density conversion: NEURON's IClamp injects nA into a section of area A (cm2, lateral
surface pi d L, ends excluded); our single compartment takes uA/cm2. I [uA/cm2] = I [nA] * 1e-3 / A.
The soma here has L = d = 100/pi um, A = 1e-4 cm2, so 0.1 nA = 1 uA/cm2 (the paper's step 15 is 1.5 nA).
"""

import numpy as np
import pytest
import torch

from channelzoo.models import hh
from suite.sim import Membrane, SingleCompartment, StepCurrent, nA_to_density

h = pytest.importorskip("neuron").h

DT = 0.025
T_STOP = 100.0


def neuron_hh_soma(amp_nA: float, delay: float, dur: float) -> np.ndarray:  # noqa: N803 - unit name
    model = hh()
    h.load_file("stdrun.hoc")
    soma = h.Section(name="hh_soma")
    soma.L, soma.diam, soma.nseg, soma.cm = model.length_um, model.diam_um, 1, model.capacitance
    soma.insert("hh")
    h.usetable_hh = 0  # exact rates, not NEURON's 1-mV lookup table
    seg = soma(0.5)
    clamp = h.IClamp(seg)
    clamp.delay, clamp.dur, clamp.amp = delay, dur, amp_nA
    h.celsius, h.dt = model.temperature, DT
    v = h.Vector().record(seg._ref_v)
    h.finitialize(model.v_init)
    h.continuerun(T_STOP)
    out = np.array(v)
    del clamp, soma
    return out


def ours_hh_soma(amp_nA: float, delay: float, dur: float) -> np.ndarray:  # noqa: N803 - unit name
    model = hh()
    density = nA_to_density(amp_nA, model.area_cm2)
    cell = SingleCompartment(Membrane(model.channels, n_sites=1, dtype=torch.float64,
                                      temperature=model.temperature), model.capacitance)
    stim = StepCurrent(torch.tensor([density], dtype=torch.float64), delay, delay + dur)
    return cell.simulate(stim.sample(DT, round(T_STOP / DT)), DT, v0=model.v_init).v[:, 0].numpy()


@pytest.mark.parametrize("amp_nA", [0.25, 1.5])
def test_hh_soma_matches_neuron_to_a_microvolt(amp_nA: float) -> None:
    """Exact rates on both sides, the same scheme: max |dV| <= 1e-3 mV over 100 ms (measured: 4e-10)."""
    theirs = neuron_hh_soma(amp_nA, 10.0, 80.0)
    ours = ours_hh_soma(amp_nA, 10.0, 80.0)
    assert theirs.shape == ours.shape == (round(T_STOP / DT) + 1,)
    assert (theirs > 0).any(), "the step should make the soma spike"
    assert np.abs(theirs - ours).max() <= 1e-3

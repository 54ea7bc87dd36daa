"""channelzoo's Pospischil et al. 2008 channels against NEURON .mod files written from the paper's equations.

The mods (tests/mod/) are compiled once per session with nrnivmodl into a temporary folder. Gates are
compared under voltage clamp (x_inf and tau from the mod's own rates() at each clamped voltage), so a
mismatch in a cell test points at the simulator, not at a transcription of the rates.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from channelzoo.gates import GateBank
from channelzoo.models import pospischil_kd, pospischil_m, pospischil_na, pospischil_rs
from suite.sim import Membrane, SingleCompartment, StepCurrent, nA_to_density

neuron = pytest.importorskip("neuron")
h = neuron.h
MOD_DIR = Path(__file__).parent / "mod"
VOLTAGES = np.arange(-100.0, 60.0, 0.5)


@pytest.fixture(scope="session")
def pospischil_mechanisms(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile and load hbna, hbkd, hbim once per session."""
    if shutil.which("nrnivmodl") is None:
        pytest.skip("nrnivmodl not on PATH")
    if hasattr(h, "hbna"):  # already loaded in this process
        return
    build = tmp_path_factory.mktemp("nrnmech")
    for mod in MOD_DIR.glob("*.mod"):
        shutil.copy(mod, build)
    subprocess.run(["nrnivmodl"], cwd=build, check=True, capture_output=True)
    lib = next(build.glob("*/.libs/libnrnmech.so"), None) or next(build.glob("*/libnrnmech.so"))
    h.nrn_load_dll(str(lib))


def neuron_rates(mech: str, params: dict[str, float], names: list[str], celsius: float) -> dict[str, np.ndarray]:
    sec = h.Section(name=f"clamp_{mech}")
    sec.insert(mech)
    seg = sec(0.5)
    for k, value in params.items():
        setattr(seg, f"{k}_{mech}", value)
    h.celsius = celsius
    getattr(h, f"setdata_{mech}")(seg)
    out: dict[str, list[float]] = {n: [] for n in names}
    for v in VOLTAGES:
        getattr(h, f"rates_{mech}")(float(v))
        for n in names:
            out[n].append(getattr(seg, f"{n}_{mech}"))
    return {n: np.array(x) for n, x in out.items()}


CASES = [
    (pospischil_na(vt=-56.2), "hbna", {"vt": -56.2}, {"m": ("minf", "mtau"), "h": ("hinf", "htau")}),
    (pospischil_kd(vt=-57.9), "hbkd", {"vt": -57.9}, {"n": ("ninf", "ntau")}),
    (pospischil_m(tau_max=608.0), "hbim", {"taumax": 608.0}, {"p": ("pinf", "ptau")}),
]


@pytest.mark.parametrize("celsius", [36.0, 23.0])
@pytest.mark.parametrize(("channel", "mech", "params", "gates"), CASES, ids=[c[1] for c in CASES])
def test_gates_match_neuron_under_voltage_clamp(pospischil_mechanisms: None, channel, mech, params, gates,
                                                celsius: float) -> None:
    names = [n for pair in gates.values() for n in pair]
    theirs = neuron_rates(mech, params, names, celsius)
    bank = GateBank(channel.gates, dtype=torch.float64)
    inf, tau = bank.on_grid(torch.tensor(VOLTAGES, dtype=torch.float64), temperature=celsius)
    for i, gate in enumerate(channel.gates):
        inf_name, tau_name = gates[gate.name]
        np.testing.assert_allclose(inf[i].numpy(), theirs[inf_name], rtol=1e-9, atol=1e-12, err_msg=gate.name)
        np.testing.assert_allclose(tau[i].numpy(), theirs[tau_name], rtol=1e-9, err_msg=gate.name)


def test_rs_cell_matches_neuron_under_current_clamp(pospischil_mechanisms: None) -> None:
    """The RS cell (Na, Kd, M, leak) under a step, NEURON vs ours at dt 0.025: max |dV| <= 1e-3 mV over 100 ms."""
    model, dt, t_stop, amp = pospischil_rs(), 0.025, 100.0, 0.15
    na, kd, m, lk = (model.channel(i) for i in ("pospischil_na", "pospischil_kd", "pospischil_m", "leak"))
    sec = h.Section(name="rs")
    sec.L, sec.diam, sec.nseg, sec.cm = model.length_um, model.diam_um, 1, model.capacitance
    for mech in ("hbna", "hbkd", "hbim", "pas"):
        sec.insert(mech)
    seg = sec(0.5)
    seg.gbar_hbna, seg.vt_hbna, seg.ena = na.gbar, na.metadata["vt"], na.e_rev
    seg.gbar_hbkd, seg.vt_hbkd, seg.ek = kd.gbar, kd.metadata["vt"], kd.e_rev
    seg.gbar_hbim, seg.taumax_hbim = m.gbar, m.metadata["tau_max"]
    seg.g_pas, seg.e_pas = lk.gbar, lk.e_rev
    clamp = h.IClamp(seg)
    clamp.delay, clamp.dur, clamp.amp = 10.0, 80.0, amp
    h.load_file("stdrun.hoc")
    h.celsius, h.dt = model.temperature, dt
    rec = h.Vector().record(seg._ref_v)
    h.finitialize(model.v_init)
    h.continuerun(t_stop)
    theirs = np.array(rec)

    cell = SingleCompartment(Membrane(model.channels, n_sites=1, dtype=torch.float64,
                                      temperature=model.temperature), model.capacitance)
    stim = StepCurrent(torch.tensor([nA_to_density(amp, model.area_cm2)], dtype=torch.float64), 10.0, 90.0)
    ours = cell.simulate(stim.sample(dt, round(t_stop / dt)), dt, v0=model.v_init).v[:, 0].numpy()
    assert (theirs > 0).sum() > 0, "the step should make the RS cell spike"
    assert np.abs(theirs - ours).max() <= 1e-3

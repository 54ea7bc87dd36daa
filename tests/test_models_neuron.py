"""Exported learned models in NEURON: they compile with nrnivmodl and reproduce our simulators' traces.

Both sides evaluate the saved network exactly (NEURON with ``usetable_SUFFIX = 0``, ours with the network as
the gate module of ``suite.sim.single``) with the same scheme: fixed dt 0.025 ms, backward-Euler voltage
step and exponential-Euler (cnexp) gates half a step ahead. The HH soma is NEURON's ``hh`` with its K
conductance off plus the exported K channel, in the paper's 1 um x 10 um cylinder, at 6.3 C.
"""

import io
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from channelzoo.models import get_model
from runners.store import ResultStore
from runners.sweep import run_sweep
from suite.config import load_config
from suite.experiments import get_experiment
from suite.models.files import SavedModel, load_model
from suite.models.neural_gate import gate_from_model
from suite.models.nmodl import export_nmodl, mechanism_name
from suite.sim import Membrane, SingleCompartment, StepCurrent
from suite.sim.neuron_cable import neuron_available
from suite.sim.stimulus import current_density, cylinder_area_cm2

pytestmark = pytest.mark.skipif(not neuron_available(), reason="NEURON (and nrnivmodl) not installed")

DT, T_STOP, T_ON, T_OFF = 0.025, 100.0, 5.0, 95.0
CHEAP = ["seeds=1", "restarts=1", "sigma_v=[0.0]", "sigma_theta=[]", "tf_steps=150", "stage_steps=[20, 20, 40]",
         "ood=false"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SavedModel, object, float]:
    """A cheaply trained K gate, saved by the recovery run, exported, compiled and loaded into NEURON."""
    from neuron import h

    root = tmp_path_factory.mktemp("results")
    exp = get_experiment("recovery")
    run_sweep(exp, load_config(exp.config_type, None, CHEAP), ResultStore(root), stream=io.StringIO())
    saved = load_model(root / ResultStore(root).read("recovery")["model_file"].iloc[0])
    start = _cpu_seconds()
    mod = export_nmodl(saved, root / "mod")[0]
    subprocess.run(["nrnivmodl"], cwd=mod.parent, check=True, capture_output=True)
    seconds = _cpu_seconds() - start
    lib = next(iter(mod.parent.glob("*/libnrnmech.so")), None) or next(mod.parent.glob("*/.libs/libnrnmech.so"))
    h.nrn_load_dll(str(lib))
    h.load_file("stdrun.hoc")
    return saved, h, seconds


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children: what an export and compile cost, whatever else
    shares the machine (wall time on a loaded CI runner says more about the neighbours)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def neuron_trace(saved: SavedModel, h: object, amp_pa: float) -> np.ndarray:
    fixed, suffix = saved.spec["fixed_parameters"], mechanism_name(saved)
    soma = h.Section(name="learned_soma")
    soma.L, soma.diam, soma.nseg, soma.cm = 10.0, 2.0, 1, fixed["capacitance"]
    soma.insert("hh")
    soma.insert(suffix)
    seg = soma(0.5)
    seg.hh.gnabar, seg.hh.gkbar, seg.hh.gl, seg.hh.el = (fixed["gbar"]["hh_na"], 0.0, fixed["gbar"]["leak"],
                                                         fixed["e_rev"]["leak"])
    setattr(seg, f"gbar_{suffix}", fixed["gbar"]["hh_k"])
    soma.ena, soma.ek = fixed["e_rev"]["hh_na"], fixed["e_rev"]["hh_k"]
    h.usetable_hh = 0
    setattr(h, f"usetable_{suffix}", 0)  # the network exactly, as ours below
    clamp = h.IClamp(seg)
    clamp.delay, clamp.dur, clamp.amp = T_ON, T_OFF - T_ON, amp_pa * 1e-3
    h.celsius, h.dt, h.secondorder = saved.spec["plugs_into"]["temperature"], DT, 0
    v = h.Vector().record(seg._ref_v)
    h.finitialize(saved.spec["plugs_into"]["v_init"])
    h.continuerun(T_STOP)
    out = np.array(v)
    del clamp, soma
    return out


def our_trace(saved: SavedModel, amp_pa: float) -> np.ndarray:
    where, fixed = saved.spec["plugs_into"], saved.spec["fixed_parameters"]
    model = get_model(where["model"])
    ids = [c.id for c in model.channels]
    gate = gate_from_model(saved, dtype=torch.float64)
    membrane = Membrane(model.channels, n_sites=1, dtype=torch.float64, temperature=model.temperature,
                        replace={(where["channel"], where["gate"]): gate},
                        gbar=torch.tensor([fixed["gbar"][i] for i in ids], dtype=torch.float64),
                        e_rev=torch.tensor([fixed["e_rev"][i] for i in ids], dtype=torch.float64))
    cell = SingleCompartment(membrane, fixed["capacitance"], theta=0.0)
    density = current_density(amp_pa, "pA", cylinder_area_cm2(1.0, 10.0))
    stim = StepCurrent(torch.tensor([density], dtype=torch.float64), T_ON, T_OFF)
    with torch.no_grad():
        return cell.simulate(stim.sample(DT, round(T_STOP / DT)), DT, v0=where["v_init"]).v[:, 0].numpy()


@pytest.mark.parametrize("amp_pa", [15.0, 30.0])  # the training step, and one out of distribution
def test_the_exported_k_gate_in_neuron_matches_our_simulator(exported: tuple, amp_pa: float) -> None:
    saved, h, _ = exported
    theirs, ours = neuron_trace(saved, h, amp_pa), our_trace(saved, amp_pa)
    assert theirs.shape == ours.shape == (round(T_STOP / DT) + 1,)
    assert (ours > 0).any(), "the learned cell should spike under the step"
    assert np.abs(theirs - ours).max() <= 1e-6  # acceptance: 0.1 mV; measured 2.4e-10 mV


def test_export_and_compile_take_under_30_s(exported: tuple) -> None:
    assert exported[2] < 30.0  # CPU seconds; measured 4-5 s


# -- the reduced hybrid: its learned axial current and latents as a NONSPECIFIC_CURRENT with STATEs -------------------
REDUCED_CHEAP = ["n_latents=[2]", "widths=[8]", "seeds=[0]", "teacher_steps=40", "closed_steps=[10, 10, 10]",
                 "neuron=false"]


@pytest.fixture(scope="module")
def exported_hybrid(tmp_path_factory: pytest.TempPathFactory) -> tuple[SavedModel, object]:
    """A cheaply trained hybrid of the CA1 cell (the generated one without ../shared), exported and loaded."""
    from conftest import SHARED
    from neuron import h

    from runners.outcome import run_job

    root = tmp_path_factory.mktemp("results")
    morphology = "ca1" if (SHARED / "data" / "morphologies").is_dir() else ""
    exp = get_experiment("reduction")
    config = load_config(exp.config_type, None, [f"morphology={morphology}", *REDUCED_CHEAP])
    job = next(j for j in exp.plan(config) if j.payload["kind"] == "hybrid")
    outcome = run_job(exp, job, "cpu")
    assert outcome.ok, outcome.rows["error"].iloc[0]
    ResultStore(root).write("reduction", job.key, outcome.rows, outcome.artifacts)
    saved = load_model(root / outcome.rows["model_file"].iloc[0])
    mod = export_nmodl(saved, root / "mod")[0]
    subprocess.run(["nrnivmodl"], cwd=mod.parent, check=True, capture_output=True)
    lib = next(iter(mod.parent.glob("*/libnrnmech.so")), None) or next(mod.parent.glob("*/.libs/libnrnmech.so"))
    h.nrn_load_dll(str(lib))
    return saved, mod.stem


def test_the_exported_hybrid_in_neuron_matches_ours_over_the_training_stimulus(exported_hybrid: tuple,
                                                                               tmp_path: Path) -> None:
    """NEURON: a soma of the trained area (one-point SWC soma, Pospischil .mod channels) with the exported axial
    mechanism; ours: ``ReducedSoma.simulate`` (exact rates, the kernel's reference). Same step, fixed dt."""
    from suite.models.reduced import ReducedHybrid
    from suite.sim.neuron_cable import build_cell

    saved, suffix = exported_hybrid
    hybrid = ReducedHybrid(saved)
    c, area = hybrid.config, float(saved.spec["plugs_into"]["area_um2"])
    swc = tmp_path / "soma.swc"
    swc.write_text(f"1 1 0 0 0 {float(np.sqrt(area / (4 * np.pi)))!r} -1\n")
    cell = build_cell(swc, hybrid.setup.channels, ra=c.ra, cm=c.cm, nseg=1)
    try:
        assert cell.soma.area() == pytest.approx(area, rel=1e-9)
        cell.soma.sec.insert(suffix)
        scale = float(saved.tensors["stim_scale"][0])
        theirs, _ = cell.run(scale * c.amplitude, c.stim_start, c.stim_stop - c.stim_start, c.t_stop, c.dt,
                             c.v_init, celsius=c.temperature)
    finally:
        cell.close()
    stim = StepCurrent(torch.tensor([c.amplitude], dtype=torch.float64), c.stim_start, c.stim_stop)
    with torch.no_grad():
        ours = hybrid.hybrid.simulate(stim.sample(c.dt, round(c.t_stop / c.dt)).T, c.dt, v0=c.v_init).v[0, 0].numpy()
    assert theirs.shape == ours.shape == (round(c.t_stop / c.dt) + 1,)
    assert (ours > 0).any(), "the hybrid should spike under the training step"
    assert np.abs(theirs - ours).max() <= 0.05  # acceptance: 0.5 mV; measured 0.0043 mV (CA1, six spikes)


def test_the_documented_two_compartment_example_runs_on_an_exported_model(exported: tuple, tmp_path: Path) -> None:
    """docs/models.md's example, as a NEURON user runs it: a fresh process, the compiled folder, the model file."""
    import sys

    saved = exported[0]
    script = Path(__file__).resolve().parents[1] / "docs" / "examples" / "two_compartments_learned_k.py"
    mech_dir = saved.path.parents[3] / "mod"
    done = subprocess.run([sys.executable, str(script), str(mech_dir), str(saved.path), "15"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "spikes at the soma" in done.stdout
    assert len((tmp_path / "two_compartments.csv").read_text().splitlines()) == 1 + 4001


def test_a_learned_na_m_gate_keeps_its_channels_mechanistic_h_in_neuron(tmp_path_factory: pytest.TempPathFactory
                                                                        ) -> None:
    """The whole channel as one mechanism: Na with m learned (barely: the weights hardly matter here) and h
    written out from its rate forms with its Q10; hh's own Na off. Same scheme on both sides, exact rates."""
    from neuron import h

    root = tmp_path_factory.mktemp("results_na")
    exp = get_experiment("recovery")
    config = load_config(exp.config_type, None, ["targets=[hh_paper/hh_na/m]", "seeds=1", "restarts=1",
                                                 "sigma_v=[0.0]", "sigma_theta=[]", "tf_steps=30",
                                                 "stage_steps=[2, 2, 2]", "ood=false"])
    run_sweep(exp, config, ResultStore(root), stream=io.StringIO())
    saved = load_model(root / ResultStore(root).read("recovery")["model_file"].iloc[0])
    mod = export_nmodl(saved, root / "mod")[0]
    assert "hinf = a/(a + b)" in mod.read_text()
    subprocess.run(["nrnivmodl"], cwd=mod.parent, check=True, capture_output=True)
    h.load_file("stdrun.hoc")
    h.nrn_load_dll(str(next(iter(mod.parent.glob("*/libnrnmech.so")), None)
                       or next(mod.parent.glob("*/.libs/libnrnmech.so"))))
    fixed, suffix = saved.spec["fixed_parameters"], mechanism_name(saved)
    soma = h.Section(name="learned_na_soma")
    soma.L, soma.diam, soma.nseg, soma.cm = 10.0, 2.0, 1, fixed["capacitance"]
    soma.insert("hh")
    soma.insert(suffix)
    seg = soma(0.5)
    seg.hh.gnabar, seg.hh.gkbar, seg.hh.gl, seg.hh.el = 0.0, fixed["gbar"]["hh_k"], fixed["gbar"]["leak"], \
        fixed["e_rev"]["leak"]
    setattr(seg, f"gbar_{suffix}", fixed["gbar"]["hh_na"])
    soma.ena, soma.ek = fixed["e_rev"]["hh_na"], fixed["e_rev"]["hh_k"]
    h.usetable_hh = 0
    setattr(h, f"usetable_{suffix}", 0)
    clamp = h.IClamp(seg)
    clamp.delay, clamp.dur, clamp.amp = T_ON, T_OFF - T_ON, 0.015
    h.celsius, h.dt, h.secondorder = saved.spec["plugs_into"]["temperature"], DT, 0
    v = h.Vector().record(seg._ref_v)
    h.finitialize(saved.spec["plugs_into"]["v_init"])
    h.continuerun(T_STOP)
    theirs = np.array(v)
    del clamp, soma
    ours = our_trace(saved, 15.0)
    assert np.abs(theirs - ours).max() <= 1e-6

"""A two-compartment NEURON cell with a learned K channel exported by hybridbench.

    python two_compartments_learned_k.py MECH_DIR MODEL.json [AMP_PA]

MECH_DIR holds the exported .mod file, compiled there with ``nrnivmodl``; MODEL.json is the model file it came
from (for the fixed parameters it was trained with). The soma is the paper's 1 um x 10 um HH cylinder with
NEURON's ``hh`` for Na and leak and the learned channel for K; a passive dendrite hangs off it. Prints the
spike times at the soma and writes ``two_compartments.csv`` (t, soma and dendrite voltage).
"""

import csv
import json
import sys
from pathlib import Path

from neuron import h


def main(mech_dir: str, model_file: str, amp_pa: float = 40.0) -> list[float]:
    mech = Path(mech_dir)
    suffix = next(mech.glob("hb_*.mod")).stem  # hb_CHANNEL_GATE_HASH
    if not hasattr(h, suffix):  # NEURON loads ./x86_64 by itself when started in MECH_DIR
        lib = next(iter(mech.glob("*/libnrnmech.so")), None) or next(mech.glob("*/.libs/libnrnmech.so"))
        h.nrn_load_dll(str(lib))
    h.load_file("stdrun.hoc")
    spec = json.loads(Path(model_file).read_text())
    fixed, where = spec["fixed_parameters"], spec["plugs_into"]

    soma = h.Section(name="soma")
    soma.L, soma.diam, soma.cm = 10.0, 2.0, fixed["capacitance"]
    soma.insert("hh")
    soma.insert(suffix)  # the learned K channel: ik = gbar n^4 (v - ek), n from the network
    for seg in soma:
        seg.hh.gnabar, seg.hh.gkbar = fixed["gbar"]["hh_na"], 0.0  # hh's own K off: the learned one replaces it
        seg.hh.gl, seg.hh.el = fixed["gbar"]["leak"], fixed["e_rev"]["leak"]
    soma.ena, soma.ek = fixed["e_rev"]["hh_na"], fixed["e_rev"]["hh_k"]

    dend = h.Section(name="dend")
    dend.L, dend.diam, dend.cm, dend.Ra, dend.nseg = 50.0, 0.5, fixed["capacitance"], 100.0, 5
    dend.insert("pas")
    for seg in dend:
        seg.pas.g, seg.pas.e = fixed["gbar"]["leak"], fixed["e_rev"]["leak"]
    dend.connect(soma(1))

    clamp = h.IClamp(soma(0.5))
    clamp.delay, clamp.dur, clamp.amp = 5.0, 90.0, amp_pa * 1e-3  # nA
    h.celsius = where["temperature"]  # hh's Na follows celsius; the learned gate is as trained
    t, v_soma, v_dend = h.Vector().record(h._ref_t), h.Vector().record(soma(0.5)._ref_v), \
        h.Vector().record(dend(0.9)._ref_v)
    spikes = h.Vector()
    counter = h.APCount(soma(0.5))
    counter.thresh = 0.0
    counter.record(spikes)
    h.dt = 0.025
    h.finitialize(where["v_init"])
    h.continuerun(100.0)
    with open("two_compartments.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t", "v_soma", "v_dend"])
        out.writerows(zip(t, v_soma, v_dend, strict=True))
    return list(spikes)


if __name__ == "__main__":
    times = main(sys.argv[1], sys.argv[2], *(float(a) for a in sys.argv[3:4]))
    print(f"{len(times)} spikes at the soma: " + ", ".join(f"{x:.1f}" for x in times) + " ms")

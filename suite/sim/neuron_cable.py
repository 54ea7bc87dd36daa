"""The same cell in NEURON, as the oracle and the speed reference for the cable simulator.

The morphology goes in through NEURON's own Import3d (so our SWC conventions are checked too);
channels map to NEURON mechanisms by channelzoo id: the Pospischil ones to the .mod fixtures in
``tests/mod`` (compiled with ``nrnivmodl`` once, into the cache folder), leak to ``pas``, HH to ``hh``.
NEURON is imported lazily: nothing here is needed unless a comparison or a timing asks for it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from channelzoo.channel import Channel
from suite.native import cache_dir

MOD_DIR = Path(__file__).resolve().parents[2] / "tests" / "mod"


def neuron_available() -> bool:
    try:
        import neuron  # noqa: F401
    except ImportError:
        return False
    return shutil.which("nrnivmodl") is not None


def load_mechanisms(mod_dir: str | Path = MOD_DIR) -> Any:
    """``h`` with the .mod files of ``mod_dir`` compiled (cached by content) and loaded once per process."""
    from neuron import h

    h.load_file("stdrun.hoc")  # idempotent; needed even when another caller loaded the mechanisms
    h.load_file("import3d.hoc")
    if hasattr(h, "hbna"):
        return h
    mods = sorted(Path(mod_dir).glob("*.mod"))
    if not mods:
        raise FileNotFoundError(f"no .mod files in {mod_dir}")
    tag = hashlib.sha256(b"".join(m.read_bytes() for m in mods)).hexdigest()[:16]
    build = cache_dir() / f"nrnmech-{tag}"
    lib = next(iter(build.glob("*/.libs/libnrnmech.so")), None) or next(iter(build.glob("*/libnrnmech.so")), None)
    if lib is None:
        tmp = build.with_name(build.name + f".tmp{time.time_ns()}")
        tmp.mkdir(parents=True)
        for m in mods:
            shutil.copy(m, tmp)
        subprocess.run(["nrnivmodl"], cwd=tmp, check=True, capture_output=True)
        if not build.exists():
            tmp.rename(build)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        lib = next(iter(build.glob("*/.libs/libnrnmech.so")), None) or next(iter(build.glob("*/libnrnmech.so")))
    h.nrn_load_dll(str(lib))
    return h


def _insert(sec: Any, channel: Channel) -> None:
    """Put one channelzoo channel into a NEURON section (its mechanism, gbar, reversal, parameters)."""
    kind = channel.id
    if kind == "pospischil_na":
        sec.insert("hbna")
        sec.ena = channel.e_rev
        for seg in sec:
            seg.gbar_hbna, seg.vt_hbna = channel.gbar, channel.metadata["vt"]
    elif kind == "pospischil_kd":
        sec.insert("hbkd")
        sec.ek = channel.e_rev
        for seg in sec:
            seg.gbar_hbkd, seg.vt_hbkd = channel.gbar, channel.metadata["vt"]
    elif kind == "pospischil_m":
        sec.insert("hbim")
        sec.ek = channel.e_rev
        for seg in sec:
            seg.gbar_hbim, seg.taumax_hbim = channel.gbar, channel.metadata["tau_max"]
    elif kind in ("hh_na", "hh_k"):  # NEURON's hh holds both; its own leak is switched off
        if not hasattr(sec(0.5), "hh"):
            sec.insert("hh")
            for seg in sec:
                seg.gl_hh = 0.0
        for seg in sec:
            if kind == "hh_na":
                seg.gnabar_hh = channel.gbar
            else:
                seg.gkbar_hh = channel.gbar
        if kind == "hh_na":
            sec.ena = channel.e_rev
        else:
            sec.ek = channel.e_rev
    elif channel.ion_class == "Leak":
        sec.insert("pas")
        for seg in sec:
            seg.g_pas, seg.e_pas = channel.gbar, channel.e_rev
    else:
        raise ValueError(f"no NEURON mechanism known for channel {kind!r}")


@dataclass
class NeuronCell:
    """A NEURON cell built from an SWC file: its sections, the soma's middle and a current clamp there."""

    h: Any
    sections: list[Any]
    soma: Any
    clamp: Any
    holder: Any

    @property
    def n_segments(self) -> int:
        return sum(int(s.nseg) for s in self.sections)

    def close(self) -> None:
        """Delete the cell's sections (NEURON simulates every section that exists)."""
        self.clamp = None
        for sec in self.sections:
            self.h.delete_section(sec=sec)
        self.sections = []

    def run(self, amp: float, delay: float, dur: float, t_stop: float, dt: float = 0.025, v_init: float = -70.0,
            celsius: float = 36.0, record: bool = True) -> tuple[np.ndarray | None, float]:
        """One fixed-step run; returns the soma voltage (T+1 samples) and the wall time of the run (s)."""
        h = self.h
        self.clamp.amp, self.clamp.delay, self.clamp.dur = amp, delay, dur
        h.celsius, h.dt, h.secondorder = celsius, dt, 0
        h.steps_per_ms = 1.0 / dt
        vec = h.Vector().record(self.soma._ref_v, dt) if record else None
        start = time.perf_counter()
        h.finitialize(v_init)
        h.continuerun(t_stop)
        wall = time.perf_counter() - start
        return (np.array(vec) if vec is not None else None), wall


def build_cell(swc: str | Path, channels: Sequence[Channel], ra: float = 100.0, cm: float = 1.0,
               nseg: int | str = 1, mod_dir: str | Path = MOD_DIR) -> NeuronCell:
    """The SWC cell in NEURON with ``channels`` in every section; ``nseg`` per section or "d_lambda"."""
    h = load_mechanisms(mod_dir)

    class Holder:  # Import3d instantiates sections as attributes of a Python object
        pass

    holder = Holder()
    reader = h.Import3d_SWC_read()
    reader.quiet = 1
    reader.input(str(swc))
    h.Import3d_GUI(reader, False).instantiate(holder)
    secs = list(holder.all) if hasattr(holder, "all") else [s for s in h.allsec() if s.cell() is holder]
    for sec in secs:
        sec.Ra, sec.cm = ra, cm
        if nseg == "d_lambda":
            sec.nseg = int((sec.L / (0.1 * h.lambda_f(100, sec=sec)) + 0.9) / 2) * 2 + 1
        else:
            sec.nseg = int(nseg)
        for c in channels:
            _insert(sec, c)
    soma_sec = next(s for s in secs if "soma" in s.name())
    soma = soma_sec(0.5)
    clamp = h.IClamp(soma)
    return NeuronCell(h, secs, soma, clamp, holder)

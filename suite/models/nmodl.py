"""Saved models as NEURON mechanisms: the MLP forward written out in NMODL with its weights.

A recovered gate becomes its whole channel as one density mechanism (``SUFFIX hb_CHANNEL_GATE_HASH``):
the learned gate computes x_inf = sigmoid(o1) and tau = exp(o2) ms from (o1, o2) = MLP(u), u = (v - c) / r,
exactly the trained network (same input scaling, LayerNorm, activation), in plain NMODL statements (no
VERBATIM, so CoreNEURON and NMODL's other back ends take it too); the channel's other gates stay
mechanistic, their rate forms written out with their Q10 (``celsius`` matters for them, not for the
learned gate, which was trained as it is). K and Na channels use their ion (``ek``/``ena`` must be set in
the section); others are a NONSPECIFIC_CURRENT with their reversal as a PARAMETER.

The learned gate's rates sit in a PROCEDURE with a ``TABLE`` on the nodes it was trained on (``dv_net``
apart, linear in between: the function that was trained and scored), so NEURON's default
(``usetable_SUFFIX = 1``) simulates the gate as trained; ``usetable_SUFFIX = 0`` evaluates the network exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from channelzoo.channel import Channel
from channelzoo.errors import InputError
from channelzoo.gates import AlphaBeta, Gate, InfTau, Rate
from channelzoo.models import get_model
from suite.models.files import ModelFileError, SavedModel, require_field
from suite.models.neural_gate import gate_from_model
from suite.sim.reduced import AXIAL_SCALE_NA, LATENT_RATE_PER_MS

_IONS = {"K": "k", "Na": "na"}
_ACTIVATIONS = {"tanh": "tanh({x})", "silu": "({x})/(1 + exp(-({x})))", "softplus": "log(1 + exp({x}))",
                "relu": "0.5*(({x}) + fabs({x}))"}
_TERMS_PER_LINE = 8


def _num(x: float | torch.Tensor) -> str:
    return repr(float(x.detach() if isinstance(x, torch.Tensor) else x))


def _form(rate: Rate) -> str:
    """A rate form as an NMODL expression of v (mV)."""
    p = rate.params
    if rate.form in ("HHExpRate", "HHExpVariable"):
        return f"{_num(p['rate'])}*exp((v - ({_num(p['midpoint'])}))/({_num(p['scale'])}))"
    if rate.form in ("HHSigmoidRate", "HHSigmoidVariable"):
        return f"{_num(p['rate'])}/(1 + exp(-(v - ({_num(p['midpoint'])}))/({_num(p['scale'])})))"
    if rate.form in ("HHExpLinearRate", "HHExpLinearVariable"):
        return f"{_num(p['rate'])}*explin((v - ({_num(p['midpoint'])}))/({_num(p['scale'])}))"
    if rate.form == "BellTau":
        return (f"{_num(p['tau_min'])} + {_num(p['amplitude'])}/(exp((v - ({_num(p['v1'])}))/({_num(p['k1'])}))"
                f" + exp(-(v - ({_num(p['v2'])}))/({_num(p['k2'])})))")
    if rate.form == "GaussianTau":
        return (f"{_num(p['tau_min'])} + {_num(p['amplitude'])}*exp(-((v - ({_num(p['midpoint'])}))"
                f"/({_num(p['width'])}))^2)")
    if rate.form == "ConstantTau":
        return _num(p["tau"])
    if rate.form == "ICGSigmoid":
        return f"1/(1 + exp(-(({_num(p['a'])})*v - ({_num(p['b'])}))))"
    if rate.form == "ICGModifiedSigmoid":
        return f"({_num(p['c'])})/(1 + exp(-(({_num(p['a'])})*v - ({_num(p['b'])})))) + ({_num(p['d'])})"
    raise InputError(f"rate form {rate.form} has no NMODL translation yet", field="plugs_into.channel")


def _mechanistic(gate: Gate) -> list[str]:
    """Statements setting ``{name}inf`` and ``{name}tau`` (ms) of a mechanistic gate at v and celsius."""
    n, k = gate.name, gate.kinetics
    phi = f"{_num(gate.q10)}^((celsius - ({_num(gate.t_ref)}))/10)"
    if isinstance(k, AlphaBeta):
        return [f"a = {_form(k.alpha)}", f"b = {_form(k.beta)}", f"{n}inf = a/(a + b)",
                f"{n}tau = 1/((a + b)*{phi})"]
    if isinstance(k, InfTau):
        return [f"{n}inf = {_form(k.inf)}", f"{n}tau = ({_form(k.tau)})/{phi}"]
    raise InputError(f"gate {n}: {type(k).__name__} gates have no NMODL translation yet", field="plugs_into.channel")


def _sum(target: str, first: str, terms: list[tuple[float, str]]) -> list[str]:
    """``target = first + sum w*x``, split over lines of a few terms."""
    lines, head = [], first
    for i in range(0, len(terms), _TERMS_PER_LINE):
        chunk = "".join(f" {'-' if w < 0 else '+'} {_num(abs(w))}*{x}" for w, x in terms[i:i + _TERMS_PER_LINE])
        lines.append(f"{target} = {head}{chunk}")
        head = target
    return lines or [f"{target} = {first}"]


Layer = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # W [in, out], b, LN w, LN b


def mlp_lines(inputs: list[str], layers: list[Layer], activation: str, eps: float,
              outputs: list[str]) -> tuple[list[str], list[str]]:
    """(LOCAL names, statements) of an MLP unrolled: hidden layers Linear -> LayerNorm -> activation (as
    ``suite.gates`` and ``suite.sim.reduced`` compute them), then a linear layer into ``outputs``."""
    if activation not in _ACTIVATIONS:
        raise InputError(f"activation {activation} has no NMODL translation yet", field="architecture.activation")
    act = _ACTIVATIONS[activation]
    names = ["mu", "s2", *outputs]
    lines: list[str] = []
    previous = inputs
    for layer, (w, b, g, beta) in enumerate(layers):
        last = layer == len(layers) - 1
        pre = outputs if last else [f"a{layer}_{j}" for j in range(w.shape[1])]
        for j, target in enumerate(pre):
            lines += _sum(target, _num(b[j]), [(float(w[i, j]), x) for i, x in enumerate(previous)])
        if last:
            break
        post = [f"h{layer}_{j}" for j in range(w.shape[1])]
        names += pre + post
        width = len(pre)
        lines += _sum("mu", "0", [(1.0, x) for x in pre]) + [f"mu = mu/{width}"]
        lines += _sum("s2", "0", [(1.0, f"({x} - mu)*({x} - mu)") for x in pre]) + [f"s2 = s2/{width}"]
        for j in range(width):
            x = f"({pre[j]} - mu)/sqrt(s2 + {_num(eps)})*{_num(g[j])} + ({_num(beta[j])})"
            lines.append(f"{post[j]} = " + act.format(x=x))
        previous = post
    return names, lines


def _local(names: list[str], ind: str) -> str:
    """One LOCAL statement over several lines (NMODL caps a line's length)."""
    return f"{ind}LOCAL " + f",\n{ind}{ind}".join(", ".join(names[i:i + 12]) for i in range(0, len(names), 12))


def _input_line(saved: SavedModel) -> str:
    norm = require_field(saved, "input_normalisation")
    return f"u = (v - ({_num(norm['center_mv'])}))/{_num(norm['half_range_mv'])}"


def mlp_statements(saved: SavedModel, prefix: str = "gate.") -> tuple[list[str], list[str]]:
    """(LOCAL names, statements) computing ``o1`` and ``o2`` from ``v``: the gate network of ``saved``, unrolled."""
    gate = gate_from_model(saved, prefix, dtype=torch.float64).requires_grad_(False)
    eps = float(require_field(saved, "architecture").get("layer_norm_eps", 1e-5))
    layers: list[Layer] = [(gate.weights[k][0], gate.biases[k][0, 0], gate.ln_weights[k][0, 0],
                            gate.ln_biases[k][0, 0]) for k in range(gate.depth)]
    layers.append((gate.out_weight[0], gate.out_bias[0, 0], None, None))
    names, lines = mlp_lines(["u"], layers, gate.activation, eps, ["o1", "o2"])
    return ["u", *names], [_input_line(saved), *lines]


def mechanism_name(saved: SavedModel) -> str:
    where = require_field(saved, "plugs_into")
    tag = str(require_field(saved, "weights.sha256"))[:8]
    return f"hb_{where['channel']}_{where['gate']}_{tag}"


def recovered_channel_nmodl(saved: SavedModel) -> str:
    """The .mod text of a recovered gate's channel (the learned gate and the channel's other gates)."""
    where = require_field(saved, "plugs_into")
    fixed = require_field(saved, "fixed_parameters")
    sim = require_field(saved, "simulation")
    try:
        channel: Channel = get_model(str(where["model"])).channel(str(where["channel"]))
    except (InputError, KeyError) as e:
        raise ModelFileError(f"does not name a known model and channel ({e})", file=str(saved.path),
                             field="plugs_into") from None
    learned = str(where["gate"])
    suffix = mechanism_name(saved)
    ion = _IONS.get(channel.ion_class)
    gates = [g.name for g in channel.gates]
    others = [g for g in channel.gates if g.name != learned]
    gbar, e_rev = float(fixed["gbar"][channel.id]), float(fixed["e_rev"][channel.id])
    current = f"i{ion}" if ion else "i"
    names, mlp = mlp_statements(saved)
    v_min, v_max, dv_net = float(sim["v_min"]), float(sim["v_max"]), float(sim["dv_net"])
    nodes = round((v_max - v_min) / dv_net)
    open_prob = "*".join(f"{g.name}" for g in channel.gates for _ in range(int(g.power)))
    if any(float(g.power) != int(g.power) for g in channel.gates):
        open_prob = "*".join(f"{g.name}^{_num(g.power)}" for g in channel.gates)
    ind = "    "
    out = [
        f": {suffix}: channel {channel.id} of model {where['model']} with gate {learned} learned by hybridbench",
        f": (model file {Path(str(saved.path)).name}, job {saved.spec.get('job_key')}, "
        f"code version {saved.spec.get('code_version')}).",
        f": Learned gate: {learned}inf = sigmoid(o1), {learned}tau = exp(o2) ms, (o1, o2) = MLP(u), as trained.",
        f": usetable_{suffix} = 1 (default): the network on {dv_net:g}-mV nodes, linear in between (as trained);",
        f": usetable_{suffix} = 0: the network evaluated exactly. Other gates: mechanistic, Q10 from celsius"
        + (f" (trained at {where.get('temperature')} degC)." if where.get("temperature") is not None else "."),
        "", "NEURON {", f"{ind}SUFFIX {suffix}",
        f"{ind}USEION {ion} READ e{ion} WRITE i{ion}" if ion else f"{ind}NONSPECIFIC_CURRENT i",
        f"{ind}RANGE gbar, g" + ("" if ion else ", e"),
        f"{ind}GLOBAL " + ", ".join(f"{n}inf, {n}tau" for n in gates), "}", "",
        "UNITS {", f"{ind}(mV) = (millivolt)", f"{ind}(mA) = (milliamp)", f"{ind}(S) = (siemens)", "}", "",
        "PARAMETER {", f"{ind}gbar = {_num(gbar)} (S/cm2)"]
    if not ion:
        out.append(f"{ind}e = {_num(e_rev)} (mV)")
    out += ["}", "", "ASSIGNED {", f"{ind}v (mV)", f"{ind}celsius (degC)", f"{ind}g (S/cm2)",
            f"{ind}{current} (mA/cm2)"] + ([f"{ind}e{ion} (mV)"] if ion else [])
    out += [f"{ind}{n}inf" for n in gates] + [f"{ind}{n}tau (ms)" for n in gates] + ["}", ""]
    out += ["STATE { " + " ".join(gates) + " }", "", "BREAKPOINT {", f"{ind}SOLVE states METHOD cnexp",
            f"{ind}g = gbar*{open_prob}", f"{ind}{current} = g*(v - {'e' + ion if ion else 'e'})", "}", "",
            "INITIAL {", f"{ind}rates(v)"] + [f"{ind}{n} = {n}inf" for n in gates] + ["}", ""]
    out += ["DERIVATIVE states {", f"{ind}rates(v)"] + [f"{ind}{n}' = ({n}inf - {n})/{n}tau" for n in gates]
    out += ["}", "", "PROCEDURE rates(v (mV)) {"] + ([f"{ind}LOCAL a, b"] if others else []) + [f"{ind}learned(v)"]
    out += [f"{ind}{s}" for g in others for s in _mechanistic(g)]
    out += ["}", "", "PROCEDURE learned(v (mV)) {", _local(names, ind),
            f"{ind}TABLE {learned}inf, {learned}tau FROM {_num(v_min)} TO {_num(v_max)} WITH {nodes}"]
    out += [f"{ind}{s}" for s in mlp]
    out += [f"{ind}{learned}inf = 1/(1 + exp(-o1))", f"{ind}{learned}tau = exp(o2)", "}", ""]
    out += ["FUNCTION explin(x) {", f"{ind}if (fabs(x) < 1e-4) {{", f"{ind}{ind}explin = 1 + x/2 + x*x/12",
            f"{ind}}} else {{", f"{ind}{ind}explin = x/(1 - exp(-x))", f"{ind}}}", "}", ""]
    return "\n".join(out)


def reduced_hybrid_nmodl(saved: SavedModel) -> tuple[str, str]:
    """(suffix, .mod text) of a reduced hybrid's learned axial current with its latent states.

    The step is ours: I_ax and dz/dt are evaluated once per step BEFORE BREAKPOINT at (v, z) of the step's
    start; the current enters as a constant (no dI/dV: explicit, like ours), and z takes an explicit Euler
    step in the SOLVE procedure. The soma's own channels, capacitance and the stimulus (scaled by
    ``stim_scale`` of the spec's tensors) are the user's, as in the model it plugs into.
    """
    from suite.models.reduced import axial_from_model

    axial, _ = axial_from_model(saved)
    axial.requires_grad_(False)
    arch = require_field(saved, "architecture")
    area = float(require_field(saved, "plugs_into.area_um2"))
    nz = int(arch["n_latents"])
    suffix = f"hb_axial_{str(require_field(saved, 'weights.sha256'))[:8]}"
    z = [f"z{k + 1}" for k in range(nz)]
    layers: list[Layer] = []
    for k in range(axial.depth + 1):
        w, b = axial.weights[k][0], axial.biases[k][0, 0]
        if k == 0:
            w = w[:1 + nz]  # the masked latent slots are zero inputs
        if k == axial.depth:
            w, b = w[:, :1 + nz], b[:1 + nz]
            layers.append((w.double(), b.double(), None, None))
        else:
            layers.append((w.double(), b.double(), axial.ln_weights[k][0, 0].double(),
                           axial.ln_biases[k][0, 0].double()))
    outputs = ["o0", *(f"o{k + 1}" for k in range(nz))]
    names, lines = mlp_lines(["u", *z], layers, axial.activation, float(arch.get("layer_norm_eps", 1e-5)), outputs)
    ind = "    "
    out = [f": {suffix}: the learned axial current of a reduced hybrid ({nz} latent states), by hybridbench",
           f": (model file {Path(str(saved.path)).name}, job {saved.spec.get('job_key')}, "
           f"code version {saved.spec.get('code_version')}); trained on a soma of area {area:g} um2.",
           f": I_ax = {AXIAL_SCALE_NA:g} nA * o0 and dz_k/dt = {LATENT_RATE_PER_MS:g}/ms * o_k, (o0, o...) = "
           "MLP(u, z), u = (v - c)/r;",
           ": evaluated once per step at its start (explicit, as trained). Insert it in a soma of that area with "
           "the cell's own channels; scale the stimulus by stim_scale.",
           "", "NEURON {", f"{ind}SUFFIX {suffix}", f"{ind}NONSPECIFIC_CURRENT i", f"{ind}RANGE iax, area_um2", "}",
           "", "UNITS {", f"{ind}(mV) = (millivolt)", f"{ind}(mA) = (milliamp)", f"{ind}(nA) = (nanoamp)",
           f"{ind}(um) = (micron)", "}", "",
           "PARAMETER {", f"{ind}area_um2 = {_num(area)} (um2)", "}", "",
           "ASSIGNED {", f"{ind}v (mV)", f"{ind}i (mA/cm2)", f"{ind}iax (nA)"] + [f"{ind}d{n} (/ms)" for n in z]
    out += ["}", "", "STATE { " + " ".join(z) + " }" if z else "", "",
            "INITIAL {"] + [f"{ind}{n} = 0" for n in z] + [f"{ind}forward(v)", "}", "",
            "BEFORE BREAKPOINT {", f"{ind}forward(v)", "}", "",
            "BREAKPOINT {", f"{ind}SOLVE advance", f"{ind}i = -iax/(area_um2*(0.01))", "}", "",
            "PROCEDURE advance() {"] + [f"{ind}{n} = {n} + dt*d{n}" for n in z] + ["}", ""]
    out += ["PROCEDURE forward(v (mV)) {", _local(["u", *names], ind), f"{ind}{_input_line(saved)}"]
    out += [f"{ind}{s}" for s in lines]
    out += [f"{ind}iax = {_num(AXIAL_SCALE_NA)}*o0"] + [f"{ind}d{n} = {_num(LATENT_RATE_PER_MS)}*o{k + 1}"
                                                        for k, n in enumerate(z)]
    out += ["}", ""]
    return suffix, "\n".join(out)


def export_nmodl(saved: SavedModel, out_dir: str | Path) -> list[Path]:
    """Write the model's mechanism into ``out_dir``; returns the .mod files written."""
    if saved.kind == "recovered_gate":
        suffix, text = mechanism_name(saved), recovered_channel_nmodl(saved)
    elif saved.kind == "reduced_hybrid":
        suffix, text = reduced_hybrid_nmodl(saved)
    else:
        raise InputError(f"NMODL export of a {saved.kind} is not supported (export one of its gates as a recovered "
                         "gate instead)", file=str(saved.path), field="kind")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{suffix}.mod"
    path.write_text(text)
    return [path]

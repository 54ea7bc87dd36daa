"""A neural gate (one member of a ``NeuralGateEnsemble``) as named tensors and a spec, and back."""

from __future__ import annotations

from typing import Any

import torch

from suite.gates import NeuralGateEnsemble
from suite.gates.neural import LAYER_NORM_EPS, V_CENTER_MV, V_HALF_RANGE_MV
from suite.models.files import ModelFileError, SavedModel, require_field

INPUT_NORMALISATION = {"u": "(V - center_mv) / half_range_mv", "center_mv": V_CENTER_MV,
                       "half_range_mv": V_HALF_RANGE_MV}


def architecture(ens: NeuralGateEnsemble) -> dict[str, Any]:
    """What the weights compute: hidden layers Linear -> LayerNorm -> activation, then (o1, o2)."""
    return {"type": "neural_gate", "width": ens.width, "depth": ens.depth, "activation": ens.activation,
            "layer_norm_eps": LAYER_NORM_EPS, "hidden": "h = act(layer_norm(h W + b) * ln_weight + ln_bias)",
            "outputs": {"x_inf": "sigmoid(o1)", "tau_ms": "exp(o2)"}}


def member_tensors(ens: NeuralGateEnsemble, member: int, prefix: str = "gate.") -> dict[str, torch.Tensor]:
    """Member ``member``'s weights as a one-gate ensemble's state dict, names prefixed."""
    return {prefix + k: v[member:member + 1].detach().clone().contiguous() for k, v in ens.state_dict().items()}


def gate_from_model(model: SavedModel, prefix: str = "gate.", dtype: torch.dtype | None = None,
                    field: str = "architecture") -> NeuralGateEnsemble:
    """The one-gate ensemble a spec's ``architecture`` describes, with the file's weights (checked)."""
    arch = require_field(model, field)
    try:
        width, depth, activation = int(arch["width"]), int(arch["depth"]), str(arch["activation"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"needs width, depth and activation ({e})", file=str(model.path), field=field) from None
    weights = {k.removeprefix(prefix): v for k, v in model.tensors.items() if k.startswith(prefix)}
    stored = next(iter(weights.values()), None)
    try:
        ens = NeuralGateEnsemble(1, width, depth, activation,
                                 dtype=dtype or (stored.dtype if stored is not None else torch.float32))
    except ValueError as e:
        raise ModelFileError(str(e), file=str(model.path), field=field) from None
    expected = ens.state_dict()
    for k, v in expected.items():
        if k not in weights or tuple(weights[k].shape) != tuple(v.shape):
            got = tuple(weights[k].shape) if k in weights else "nothing"
            raise ModelFileError(f"{field} (width {width}, depth {depth}) needs {prefix}{k} of shape "
                                 f"{tuple(v.shape)}, the weights hold {got}", file=str(model.path),
                                 field=f"{field}.width")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise ModelFileError(f"weights {extra} are not part of {field}", file=str(model.path), field=f"{field}.depth")
    with torch.no_grad():
        ens.load_state_dict({k: weights[k].to(ens.out_bias.dtype) for k in expected})
    return ens

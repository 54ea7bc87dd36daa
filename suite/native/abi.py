"""The kernels' calling convention: one ``ctypes.Structure`` per kernel call, mirroring ``hybridbench.h``.

Every exported kernel takes a pointer to its argument struct. ``library()`` loads the one library (see
``build.py``), declares each entry point and checks each struct's size against the C compiler's, so a field
added on one side only stops the load (with a warning) instead of reading garbage. ``args(cls, **fields)``
fills a struct from numbers and arrays: each array's dtype and contiguity are checked, and the struct holds
the arrays alive until the call.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

import numpy as np
import torch

from suite.native.build import load_from

i32, i64, long_, f64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_long, ctypes.c_double, ctypes.c_void_p


def _fields(kind: object, names: str) -> list[tuple[str, object]]:
    return [(n, kind) for n in names.split()]


class MembraneDims(ctypes.Structure):
    _fields_ = _fields(i64, "B T G C W M R") + _fields(f64, "vmin dv dt theta K")


class MembraneArgs(ctypes.Structure):
    """``hb_membrane_forward`` / ``hb_membrane_backward`` (membrane.c)."""

    _fields_ = [("d", MembraneDims), *_fields(i64, "istride tstride"),
                *_fields(ptr, "v0 x0 iext iscale cap gbar erev tinf tdec gidx gpow vforce gforce V X gV "
                              "ginf gdec ggbar gerev gcap giext gx0")]
    _dtypes_ = {"gidx": np.int64, "gpow": np.int32}


class TreeArgs(ctypes.Structure):
    """``hb_tree_solve`` (cable.c)."""

    _fields_ = [*_fields(i32, "B N n_threads"), ("g_stride", long_), *_fields(ptr, "parent g d rhs")]
    _dtypes_ = {"parent": np.int64}


class CableArgs(ctypes.Structure):
    """``hb_cable_run`` (cable.c)."""

    _fields_ = [*_fields(i32, "B N T G C M K S R theta n_threads"), ("gbar_stride", long_),
                *_fields(f64, "v_lo inv_h"),
                *_fields(ptr, "parent g_ax gsum cap area_f gbar erev gate_index gate_power has_membrane tab "
                              "stim_node stim rec_node out v0 x0")]
    _dtypes_ = {"parent": np.int64, "gate_index": np.int32, "gate_power": np.int32, "has_membrane": np.uint8,
                "stim_node": np.int64, "rec_node": np.int64}


class HybridArgs(ctypes.Structure):
    """``hb_hybrid_run`` and ``hb_hybrid_lanes`` (hybrid.c)."""

    _fields_ = [*_fields(i32, "n_models P Zmax H D act G C M K T R mode every want_grad n_threads"),
                *_fields(long_, "stim_stride target_stride"),
                *_fields(f64, "Af cap v_lo inv_h v0 scale dt v_center v_half axial_scale latent_rate"),
                *_fields(ptr, "params grads losses nz gate_index gate_power gbar erev tab stim v_target v_out "
                              "iax_out z_out")]
    _dtypes_ = {"nz": np.int32, "gate_index": np.int32, "gate_power": np.int32}


class GatesArgs(ctypes.Structure):
    """``hb_gates_f32`` / ``hb_gates_f64`` (gates.c); ``w b lg lb gw gb glg glb`` point to arrays of
    per-layer pointers."""

    _fields_ = [*_fields(i32, "G N W D loss_kind threads"), ("u", ptr), ("u_stride", long_),
                *_fields(ptr, "t_inf t_tau t_logtau s_inf s_tau active w b lg lb wo bo gw gb glg glb gwo gbo "
                              "loss inf tau")]
    _dtypes_ = {"active": np.bool_}
    _real_ = None  # float32 or float64, as the entry point


# entry point -> (its struct, the C function reporting the struct's size, its return type)
ENTRY_POINTS = {
    "hb_membrane_forward": (MembraneArgs, "hb_membrane_args_size", None),
    "hb_membrane_backward": (MembraneArgs, "hb_membrane_args_size", None),
    "hb_tree_solve": (TreeArgs, "hb_tree_args_size", None),
    "hb_cable_run": (CableArgs, "hb_cable_args_size", ctypes.c_int),
    "hb_hybrid_run": (HybridArgs, "hb_hybrid_args_size", ctypes.c_int),
    "hb_hybrid_lanes": (HybridArgs, "hb_hybrid_args_size", ctypes.c_int),
    "hb_gates_f32": (GatesArgs, "hb_gates_f32_args_size", ctypes.c_int),
    "hb_gates_f64": (GatesArgs, "hb_gates_f64_args_size", ctypes.c_int),
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL | None:
    """Declares every entry point of ``lib``; None (with a warning) when a struct disagrees with the C side."""
    for name, (struct, size_fn, restype) in ENTRY_POINTS.items():
        size = getattr(lib, size_fn)
        size.restype, size.argtypes = ctypes.c_size_t, []
        if size() != ctypes.sizeof(struct):
            warnings.warn(f"{struct.__name__} is {ctypes.sizeof(struct)} bytes in suite/native/abi.py but "
                          f"{size()} in C: running the torch paths", RuntimeWarning, stacklevel=2)
            return None
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, [ctypes.POINTER(struct)]
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """Every kernel, built once per machine (see ``build.py``) and bound; None without a C compiler."""
    lib = load_from()
    return bind(lib) if lib is not None else None


_DTYPES = {np.dtype(np.float64): "double", np.dtype(np.float32): "float", np.dtype(np.int64): "int64",
           np.dtype(np.int32): "int32", np.dtype(np.uint8): "uint8", np.dtype(np.bool_): "uint8"}
_TORCH = {torch.float64: np.float64, torch.float32: np.float32, torch.int64: np.int64, torch.int32: np.int32,
          torch.uint8: np.uint8, torch.bool: np.bool_}


def address(value: object, field: str, dtype: type | None = np.float64) -> int | None:
    """The data address of a C-contiguous array or CPU tensor of ``dtype`` (any kernel dtype for None), of a
    ctypes array, or None for None."""
    if value is None:
        return None
    if isinstance(value, ctypes.Array):
        return ctypes.addressof(value)
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu" or not value.is_contiguous() or value.dtype not in _TORCH:
            raise TypeError(f"{field}: a contiguous CPU tensor of a kernel dtype is needed, got {value.dtype} on "
                            f"{value.device}{'' if value.is_contiguous() else ', not contiguous'}")
        found, addr = np.dtype(_TORCH[value.dtype]), value.data_ptr()
    elif isinstance(value, np.ndarray):
        if not value.flags.c_contiguous or value.dtype not in _DTYPES:
            raise TypeError(f"{field}: a C-contiguous array of a kernel dtype is needed, got {value.dtype}"
                            f"{'' if value.flags.c_contiguous else ', not contiguous'}")
        found, addr = value.dtype, value.ctypes.data
    else:
        raise TypeError(f"{field}: an array, a tensor or None is needed, got {type(value).__name__}")
    if dtype is not None and found != np.dtype(dtype):
        raise TypeError(f"{field}: {np.dtype(dtype)} is needed, got {found}")
    return addr


def args(cls: type[ctypes.Structure], **fields: object) -> ctypes.Structure:
    """``cls`` filled from ``fields``: numbers as they are, arrays and tensors as pointers (kept alive by the
    struct until it is dropped), None as NULL. Pointer fields left out are NULL."""
    kinds = dict(cls._fields_)
    dtypes = getattr(cls, "_dtypes_", {})
    default = getattr(cls, "_real_", np.float64)
    unknown = set(fields) - set(kinds)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    s = cls()
    keep = []
    for name, value in fields.items():
        if kinds[name] is ptr:
            setattr(s, name, address(value, f"{cls.__name__}.{name}", dtypes.get(name, default)))
            keep.append(value)
        else:
            setattr(s, name, value)
    s._keep = keep  # the arrays must outlive the call
    return s

"""Compiled kernels for the cable's hot loops and the reduced hybrid cell: the Python side of
``suite/native/cable.c`` and ``suite/native/hybrid.c``.

At one cell a time step costs a few microseconds of arithmetic but dozens of tensor calls, so the
per-call overhead of eager PyTorch decides the speed (DESIGN: measure, then fuse). ``load()`` is the
compiled library (``suite.native``), or None without a C compiler: the simulators then stay on their
torch paths. Each function here fills one kernel's argument struct and runs it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from suite.native import CableArgs, HybridArgs, TreeArgs, args, library


def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use, cached on disk), or None without a compiler."""
    return library()


def tree_solve(parent: np.ndarray, g: np.ndarray, g_stride: int, d: np.ndarray, rhs: np.ndarray,
               n_threads: int) -> None:
    """Solves ``A x = rhs`` in place for a batch of trees (``d`` [B, N] overwritten, x written to ``rhs``)."""
    b, n = d.shape
    library().hb_tree_solve(args(TreeArgs, B=b, N=n, n_threads=n_threads, g_stride=g_stride, parent=parent, g=g,
                                 d=d, rhs=rhs))


def cable_run(**fields: object) -> int:
    """``hb_cable_run`` with the fields of ``CableArgs``: the number of cells that went non-finite."""
    return library().hb_cable_run(args(CableArgs, **fields))


def hybrid_run(**fields: object) -> int:
    """``hb_hybrid_run`` (one trace per instance, optional gradients) with the fields of ``HybridArgs``:
    the number of instances that went non-finite, or -1 on a parameter layout mismatch."""
    return library().hb_hybrid_run(args(HybridArgs, **fields))


def hybrid_lanes(**fields: object) -> int:
    """``hb_hybrid_lanes`` (four traces of a model in SIMD lanes, no gradient) with the fields of ``HybridArgs``."""
    return library().hb_hybrid_lanes(args(HybridArgs, **fields))

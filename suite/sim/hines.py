"""O(N) solves of symmetric tree matrices (Hines 1984), batched and differentiable.

The matrix of an implicit cable step is a tree: ``A_ii = d_i``, ``A_{i,p(i)} = A_{p(i),i} = -g_i`` with
nodes in Hines order (``parent[i] < i``). Gaussian elimination from the leaves to the root and
substitution back down costs O(N) with no fill-in. Two backends, one answer: the compiled kernel (CPU,
one call per solve) and a torch one that eliminates a whole tree level per call (any device).
The solve is an autograd function; because A is symmetric its backward is one more solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from suite.sim import native


@dataclass(frozen=True, eq=False)
class HinesTree:
    """A tree's sparsity, with its nodes grouped by depth for level-parallel elimination."""

    parent: np.ndarray  # [N] int, -1 at the root (node 0)
    levels: tuple[np.ndarray, ...]  # nodes of depth 1, 2, ... (depth 0 is the root)

    @classmethod
    def from_parents(cls, parent: np.ndarray) -> HinesTree:
        parent = np.asarray(parent, dtype=np.int64)
        if parent.ndim != 1 or len(parent) == 0 or parent[0] != -1:
            raise ValueError("parent must be 1-D with -1 at node 0 (the root)")
        if (parent[1:] < 0).any() or (parent[1:] >= np.arange(1, len(parent))).any():
            raise ValueError("nodes must be in Hines order: 0 <= parent[i] < i for i > 0")
        depth = np.zeros(len(parent), dtype=np.int64)
        for i in range(1, len(parent)):
            depth[i] = depth[parent[i]] + 1
        levels = tuple(np.flatnonzero(depth == k) for k in range(1, int(depth.max()) + 1))
        return cls(parent, levels)

    @property
    def n_nodes(self) -> int:
        return int(self.parent.shape[0])

    def neighbour_sum(self, g: Tensor) -> Tensor:
        """sum_j g_ij over each node's neighbours (its parent link and its children's), ``[..., N]``."""
        idx = torch.as_tensor(self.parent[1:], device=g.device)
        return g.index_add(-1, idx, g[..., 1:])


def tree_solve(tree: HinesTree, d: Tensor, g: Tensor, rhs: Tensor, backend: str = "auto") -> Tensor:
    """x with A x = rhs, for ``d`` and ``rhs`` ``[B, N]`` and ``g`` ``[N]`` or ``[B, N]`` (g[0] unused).

    ``backend``: "native" (compiled, CPU), "torch" (level-parallel, any device) or "auto" (native
    where it can run). Differentiable in d, g and rhs with either backend.
    """
    if backend == "auto":
        backend = "native" if d.device.type == "cpu" and native.load() is not None else "torch"
    if backend == "native":
        return _NativeSolve.apply(tree, d, g, rhs)
    if backend == "torch":
        return _torch_solve(tree, d, g, rhs)
    raise ValueError(f"unknown backend {backend!r}; known: auto, native, torch")


def _torch_solve(tree: HinesTree, d: Tensor, g: Tensor, rhs: Tensor) -> Tensor:
    """Level by level: every node of one depth is eliminated into its parent in one call (out of place)."""
    gb = g.expand_as(d)
    dev = d.device
    for nodes in reversed(tree.levels):
        idx = torch.as_tensor(nodes, device=dev)
        par = torch.as_tensor(tree.parent[nodes], device=dev)
        gi, di = gb.index_select(-1, idx), d.index_select(-1, idx)
        f = gi / di
        d = d.index_add(-1, par, -f * gi)
        rhs = rhs.index_add(-1, par, f * rhs.index_select(-1, idx))
    x = rhs[..., :1] / d[..., :1]
    for nodes in tree.levels:
        idx = torch.as_tensor(nodes, device=dev)
        par = torch.as_tensor(tree.parent[nodes], device=dev)
        xi = (rhs.index_select(-1, idx) + gb.index_select(-1, idx) * x.index_select(-1, par)) / d.index_select(-1, idx)
        x = _scatter_into(x, idx, xi, tree.n_nodes)
    return x


def _scatter_into(x: Tensor, idx: Tensor, values: Tensor, n: int) -> Tensor:
    """``x`` grown to ``n`` nodes (zeros where unknown yet) with ``values`` at ``idx``."""
    if x.shape[-1] < n:
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], n - x.shape[-1])], dim=-1)
    return x.index_copy(-1, idx, values)


def _native_solve(tree: HinesTree, d: np.ndarray, g: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    b, n = d.shape
    d = np.array(d, dtype=np.float64, order="C")  # copies: the kernel works in place
    x = np.array(rhs, dtype=np.float64, order="C")
    g = np.ascontiguousarray(g, dtype=np.float64)
    stride = n if g.ndim == 2 else 0
    native.tree_solve(tree.parent, g, stride, d, x, torch.get_num_threads())
    return x


class _NativeSolve(torch.autograd.Function):
    """Forward: the compiled solve. Backward: lam = A^-1 grad (A is symmetric), dd = -lam x,
    dg_i = lam_i x_p + lam_p x_i."""

    @staticmethod
    def forward(ctx, tree: HinesTree, d: Tensor, g: Tensor, rhs: Tensor) -> Tensor:
        x = _native_solve(tree, d.detach().cpu().numpy(), g.detach().cpu().numpy(), rhs.detach().cpu().numpy())
        out = torch.from_numpy(x).to(d.dtype)
        ctx.tree = tree
        ctx.g_shape = g.shape
        ctx.save_for_backward(d, g, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor | None, Tensor | None, Tensor | None]:
        d, g, x = ctx.saved_tensors
        tree = ctx.tree
        lam = torch.from_numpy(_native_solve(tree, d.detach().numpy(), g.detach().numpy(),
                                             grad.detach().numpy())).to(d.dtype)
        grad_d = -lam * x if ctx.needs_input_grad[1] else None
        grad_g = None
        if ctx.needs_input_grad[2]:
            par = torch.as_tensor(np.maximum(tree.parent, 0))
            gg = lam * x[..., par] + lam[..., par] * x
            gg[..., 0] = 0.0
            grad_g = gg if len(ctx.g_shape) == 2 else gg.sum(0)
        return None, grad_d, grad_g, lam if ctx.needs_input_grad[3] else None

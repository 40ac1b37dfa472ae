"""Kernels of the condensed training step of one sparse linear layer.

The layer's active weights are stored as a flat ``values [nnz]`` vector in row-major
(CSR) order: row ``r`` owns ``values[rowptr[r]:rowptr[r + 1]]`` at input columns
``col[...]``. The input gradient reads them column by column through the transposed
(CSC) structure: column ``c`` owns positions ``perm[colptr[c]:colptr[c + 1]]`` of
``values``, at output rows ``rowt[...]``. Activations are handled transposed,
``(features, batch)``, so that every gathered input row is one contiguous vector over
the batch (the multiply-accumulate vectorises along it).

Each kernel comes in two implementations with the same signature:

``numba``
    fused loops compiled by numba (CPU, float32), parallel over output rows (forward,
    weight gradient) or input columns (input gradient); four active entries per pass
    over the batch, so an output vector is loaded and stored once for four products.
``torch``
    ``torch.sparse`` CSR products (MKL on the CPU, cuSPARSE on CUDA) and
    ``torch.sparse.sampled_addmm`` for the weight gradient; any device and float dtype.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sparse_agents.condensed.kernels import numba_threads

__all__ = ["IMPLEMENTATIONS", "NUMBA_AVAILABLE", "backward_input", "backward_weight",
           "backward_both", "forward", "forward_rows", "numba_supports", "scatter"]

try:  # numba is a dependency, but the torch kernels remain without it
    if os.environ.get("SPARSE_AGENTS_NO_NUMBA"):
        raise ImportError("disabled by SPARSE_AGENTS_NO_NUMBA")
    from numba import njit, prange

    NUMBA_AVAILABLE = True
except Exception:  # pragma: no cover - depends on the environment
    NUMBA_AVAILABLE = False

IMPLEMENTATIONS = ("numba", "torch")

#: reassociation (vectorised reductions) and FMA contraction; NaN/inf still propagate
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

if NUMBA_AVAILABLE:

    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _forward_t(xt, vals, col, rowptr, bias, outt):  # pragma: no cover - jit
        """``outt[r, :] = bias[r] + sum_p vals[p] * xt[col[p], :]`` (p in row r)."""
        n = rowptr.shape[0] - 1
        nb = xt.shape[1]
        for r in prange(n):
            o = outt[r]
            bi = bias[r]
            for b in range(nb):
                o[b] = bi
            p = rowptr[r]
            e = rowptr[r + 1]
            while p + 4 <= e:
                v0 = vals[p]
                v1 = vals[p + 1]
                v2 = vals[p + 2]
                v3 = vals[p + 3]
                x0 = xt[col[p]]
                x1 = xt[col[p + 1]]
                x2 = xt[col[p + 2]]
                x3 = xt[col[p + 3]]
                for b in range(nb):
                    o[b] += v0 * x0[b] + v1 * x1[b] + v2 * x2[b] + v3 * x3[b]
                p += 4
            while p < e:
                v = vals[p]
                xr = xt[col[p]]
                for b in range(nb):
                    o[b] += v * xr[b]
                p += 1

    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _forward_rows(x, vals, col, rowptr, bias, out):  # pragma: no cover - jit
        """Batch-major forward for small batches: ``out[b, r]`` as a gathered dot."""
        n = rowptr.shape[0] - 1
        nb = x.shape[0]
        for r in prange(n):
            s = rowptr[r]
            e = rowptr[r + 1]
            bi = bias[r]
            for b in range(nb):
                xb = x[b]
                acc = np.float32(0.0)
                for p in range(s, e):
                    acc += vals[p] * xb[col[p]]
                out[b, r] = acc + bi

    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _weight_grad(dyt, xt, col, rowptr, gv):  # pragma: no cover - jit
        """``gv[p] = dot(dyt[r, :], xt[col[p], :])`` for every active entry p of row r."""
        n = rowptr.shape[0] - 1
        nb = xt.shape[1]
        for r in prange(n):
            g = dyt[r]
            p = rowptr[r]
            e = rowptr[r + 1]
            while p + 4 <= e:
                x0 = xt[col[p]]
                x1 = xt[col[p + 1]]
                x2 = xt[col[p + 2]]
                x3 = xt[col[p + 3]]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for b in range(nb):
                    gb = g[b]
                    a0 += gb * x0[b]
                    a1 += gb * x1[b]
                    a2 += gb * x2[b]
                    a3 += gb * x3[b]
                gv[p] = a0
                gv[p + 1] = a1
                gv[p + 2] = a2
                gv[p + 3] = a3
                p += 4
            while p < e:
                xr = xt[col[p]]
                a = np.float32(0.0)
                for b in range(nb):
                    a += g[b] * xr[b]
                gv[p] = a
                p += 1

    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _input_grad_t(dyt, vals, perm, rowt, colptr, dxt):  # pragma: no cover - jit
        """``dxt[c, :] = sum_q vals[perm[q]] * dyt[rowt[q], :]`` (q in column c)."""
        n = colptr.shape[0] - 1
        nb = dyt.shape[1]
        for c in prange(n):
            o = dxt[c]
            for b in range(nb):
                o[b] = 0.0
            q = colptr[c]
            e = colptr[c + 1]
            while q + 4 <= e:
                v0 = vals[perm[q]]
                v1 = vals[perm[q + 1]]
                v2 = vals[perm[q + 2]]
                v3 = vals[perm[q + 3]]
                y0 = dyt[rowt[q]]
                y1 = dyt[rowt[q + 1]]
                y2 = dyt[rowt[q + 2]]
                y3 = dyt[rowt[q + 3]]
                for b in range(nb):
                    o[b] += v0 * y0[b] + v1 * y1[b] + v2 * y2[b] + v3 * y3[b]
                q += 4
            while q < e:
                v = vals[perm[q]]
                yr = dyt[rowt[q]]
                for b in range(nb):
                    o[b] += v * yr[b]
                q += 1


    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _backward_t(dyt, xt, vals, perm, rowt, colptr, dxt, gv):  # pragma: no cover - jit
        """Both gradients in one pass over the transposed structure: for column ``c``
        and each of its entries ``q`` (row ``r = rowt[q]``), ``gv[perm[q]] =
        dot(dyt[r], xt[c])`` and ``dxt[c] += vals[perm[q]] * dyt[r]``; every gathered
        output-gradient row serves both products."""
        n = colptr.shape[0] - 1
        nb = dyt.shape[1]
        for c in prange(n):
            o = dxt[c]
            xc = xt[c]
            for b in range(nb):
                o[b] = 0.0
            q = colptr[c]
            e = colptr[c + 1]
            while q + 4 <= e:
                p0 = perm[q]
                p1 = perm[q + 1]
                p2 = perm[q + 2]
                p3 = perm[q + 3]
                v0 = vals[p0]
                v1 = vals[p1]
                v2 = vals[p2]
                v3 = vals[p3]
                y0 = dyt[rowt[q]]
                y1 = dyt[rowt[q + 1]]
                y2 = dyt[rowt[q + 2]]
                y3 = dyt[rowt[q + 3]]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for b in range(nb):
                    xb = xc[b]
                    g0 = y0[b]
                    g1 = y1[b]
                    g2 = y2[b]
                    g3 = y3[b]
                    a0 += g0 * xb
                    a1 += g1 * xb
                    a2 += g2 * xb
                    a3 += g3 * xb
                    o[b] += v0 * g0 + v1 * g1 + v2 * g2 + v3 * g3
                gv[p0] = a0
                gv[p1] = a1
                gv[p2] = a2
                gv[p3] = a3
                q += 4
            while q < e:
                pq = perm[q]
                v = vals[pq]
                yr = dyt[rowt[q]]
                a = np.float32(0.0)
                for b in range(nb):
                    g = yr[b]
                    a += g * xc[b]
                    o[b] += v * g
                gv[pq] = a
                q += 1

    @njit(parallel=True, cache=True, nogil=True)
    def _scatter(weight, flat, vals):  # pragma: no cover - jit
        """``weight[flat[i]] = vals[i]`` (the active values into the dense weight)."""
        for i in prange(flat.shape[0]):
            weight[flat[i]] = vals[i]


def scatter(weight: Tensor, s, values: Tensor) -> None:
    """Write ``values`` into a weight at the active entries of structure ``s``."""
    if numba_supports(weight) and numba_supports(values) and weight.is_contiguous():
        match_torch_threads()
        _scatter(weight.detach().view(-1).numpy(), s.arrays.flat, values.detach().numpy())
    else:
        weight.detach().view(-1)[s.flat.to(weight.device)] = values.detach().to(weight.dtype)


def match_torch_threads() -> None:
    """Run the numba kernels on as many threads as torch uses (``torch.set_num_threads``).
    numba's default is every core, so a sweep running one process per core would
    oversubscribe them, and a parallel kernel waits for its slowest thread."""
    numba_threads(torch.get_num_threads())


def numba_supports(t: Tensor) -> bool:
    """Whether the numba kernels can run on tensors like ``t`` (CPU float32)."""
    return NUMBA_AVAILABLE and t.device.type == "cpu" and t.dtype == torch.float32


def _u32(t: Tensor) -> np.ndarray:
    """An int32 index tensor as an unsigned numpy view (no copy; lets gathers vectorise)."""
    return t.numpy().view(np.uint32)


@dataclass(frozen=True)
class Arrays:
    """A CPU structure's indices as the numpy views the numba kernels take."""

    col: np.ndarray
    rowptr: np.ndarray
    perm: np.ndarray
    rowt: np.ndarray
    colptr: np.ndarray
    flat: np.ndarray

    @classmethod
    def of(cls, s) -> Arrays:
        return cls(_u32(s.col), s.rowptr.numpy(), _u32(s.perm), _u32(s.rowt),
                   s.colptr.numpy(), s.flat.numpy())


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A ``torch.sparse`` CSR matrix on indices built by ``Structure`` (valid by
    construction, so torch's invariant checks are skipped)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


#: at or below this batch size the no-grad forward uses the batch-major kernel
ROWS_MAX_BATCH = 4


def forward(s, xt: Tensor, values: Tensor, bias: Tensor, impl: str) -> Tensor:
    """``y.T [out, B]`` of the layer with structure ``s`` on ``xt [in, B]`` (contiguous)."""
    if impl == "numba":
        match_torch_threads()
        outt = torch.empty((s.out_features, xt.shape[1]), dtype=xt.dtype)
        a = s.arrays
        _forward_t(xt.numpy(), values.numpy(), a.col, a.rowptr, bias.numpy(), outt.numpy())
        return outt
    csr = _csr(s.rowptr, s.col, values, (s.out_features, s.in_features))
    return torch.mm(csr, xt) + bias[:, None]


def forward_rows(s, x: Tensor, values: Tensor, bias: Tensor) -> Tensor:
    """``y [B, out]`` from a contiguous ``x [B, in]`` (numba, small batches, no grad)."""
    match_torch_threads()
    out = torch.empty((x.shape[0], s.out_features), dtype=x.dtype)
    a = s.arrays
    _forward_rows(x.numpy(), values.numpy(), a.col, a.rowptr, bias.numpy(), out.numpy())
    return out


def backward_input(s, dyt: Tensor, values: Tensor, impl: str) -> Tensor:
    """``dx.T [in, B]`` from ``dy.T [out, B]`` through the transposed structure."""
    if impl == "numba":
        match_torch_threads()
        dxt = torch.empty((s.in_features, dyt.shape[1]), dtype=dyt.dtype)
        a = s.arrays
        _input_grad_t(dyt.numpy(), values.numpy(), a.perm, a.rowt, a.colptr, dxt.numpy())
        return dxt
    csc = _csr(s.colptr, s.rowt, values[s.perm.long()], (s.in_features, s.out_features))
    return torch.mm(csc, dyt)


def backward_both(s, dyt: Tensor, xt: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """``(dx.T [in, B], grad of the values [nnz])`` in one numba pass (see
    ``_backward_t``)."""
    match_torch_threads()
    dxt = torch.empty((s.in_features, dyt.shape[1]), dtype=dyt.dtype)
    gv = torch.empty(s.nnz, dtype=dyt.dtype)
    a = s.arrays
    _backward_t(dyt.numpy(), xt.numpy(), values.numpy(), a.perm, a.rowt, a.colptr,
                dxt.numpy(), gv.numpy())
    return dxt, gv


def backward_weight(s, dyt: Tensor, xt: Tensor, impl: str) -> Tensor:
    """The gradient of the active values, ``[nnz]``, from ``dy.T [out, B]`` and
    ``x.T [in, B]``."""
    if impl == "numba":
        match_torch_threads()
        gv = torch.empty(s.nnz, dtype=dyt.dtype)
        a = s.arrays
        _weight_grad(dyt.numpy(), xt.numpy(), a.col, a.rowptr, gv.numpy())
        return gv
    pattern = _csr(s.rowptr, s.col, torch.zeros(s.nnz, dtype=dyt.dtype, device=dyt.device),
                   (s.out_features, s.in_features))
    return torch.sparse.sampled_addmm(pattern, dyt, xt.t(), beta=0.0).values()

"""Compute kernels for condensed layers, and the measured, cached choice between them.

Every kernel computes the compact output ``y[b, i] = bias[i] + sum_j values[i, j] *
x[b, indices[i, j]]`` (``j < lengths[i]``) of one condensed layer. The candidates:

``dense``
    ``F.linear`` on the *shrunk* layer: a small dense weight of only the kept rows
    and kept input columns. Always a candidate, so the automatic choice is never
    slower than a dense layer of the shrunk shape (up to timing noise).
``csr``
    ``torch.sparse`` CSR matrix times dense (MKL / cuSPARSE).
``gather``
    eager ``(x[:, indices] * values).sum(-1)``; only for small ``batch * nnz``.
``numba_rows`` / ``numba_rows_serial``
    fused gather-multiply-accumulate per output row (``parallel=True`` / serial);
    the fast kernel at batch 1 and small batches on CPU.
``numba_axpy`` / ``numba_axpy_serial``
    per output row, ``out[i, :] += values[i, j] * x.T[indices[i, j], :]`` over the
    whole batch (vectorised along the batch); the fast kernel at larger batches.
``triton_ell``
    a Triton ELLPACK kernel for CUDA tensors (a program per tile of rows x batch
    columns; the tile is tuned per shape and batch bucket by timing).

Numba and Triton are optional: when they cannot be imported the torch kernels remain.
The choice is made from a quick measurement the first time a layer sees a batch size
bucket (powers of two), per (device, dtype, layout, shape, bucket, threads), and
cached in-process (:func:`kernel_choices`, :func:`clear_kernel_cache`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from functools import cache, partial

import numpy as np
import torch

from sparse_agents.timing import sample_interleaved, synchronize

__all__ = [
    "CPU_KERNELS",
    "CUDA_KERNELS",
    "KERNELS",
    "NUMBA_AVAILABLE",
    "batch_bucket",
    "clear_kernel_cache",
    "kernel_choices",
    "measure",
    "pick",
    "triton_available",
    "triton_configs",
]

# --------------------------------------------------------------------------- numba
try:  # numba is optional at run time: without it the torch kernels remain
    if os.environ.get("SPARSE_AGENTS_NO_NUMBA"):
        raise ImportError("disabled by SPARSE_AGENTS_NO_NUMBA")
    import numba
    from numba import njit, prange

    NUMBA_AVAILABLE = True
except Exception:  # pragma: no cover - depends on the environment
    numba = None
    NUMBA_AVAILABLE = False

#: reassociation (vectorised reductions) and FMA contraction, but no assumption that
#: values are finite: NaN/inf inputs propagate as in the dense layer
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

if NUMBA_AVAILABLE:
    # The serial and parallel kernels are separate functions on purpose: numba's
    # on-disk cache is keyed by the function, not by the ``parallel`` flag.

    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _rows_par(x, values, indices, lengths, bias):  # pragma: no cover - jit
        n = values.shape[0]
        nb = x.shape[0]
        out = np.empty((nb, n), dtype=x.dtype)
        for i in prange(n):
            length = lengths[i]
            bi = bias[i]
            for b in range(nb):
                acc = np.float32(0.0)
                for j in range(length):
                    acc += values[i, j] * x[b, indices[i, j]]
                out[b, i] = acc + bi
        return out

    @njit(fastmath=_FASTMATH, cache=True, nogil=True)
    def _rows_ser(x, values, indices, lengths, bias):  # pragma: no cover - jit
        n = values.shape[0]
        nb = x.shape[0]
        out = np.empty((nb, n), dtype=x.dtype)
        for i in range(n):
            length = lengths[i]
            bi = bias[i]
            for b in range(nb):
                acc = np.float32(0.0)
                for j in range(length):
                    acc += values[i, j] * x[b, indices[i, j]]
                out[b, i] = acc + bi
        return out

    # The axpy kernels work on x.T and write out.T. They use row views on purpose:
    # ``o[b] += v * xr[b]`` over views vectorises, the same loop written with 2-D
    # indices does not (measured 5x slower).
    @njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
    def _axpy_par(xt, values, indices, lengths, bias):  # pragma: no cover - jit
        n = values.shape[0]
        nb = xt.shape[1]
        outt = np.empty((n, nb), dtype=xt.dtype)
        for i in prange(n):
            o = outt[i]
            bi = bias[i]
            for b in range(nb):
                o[b] = bi
            for j in range(lengths[i]):
                v = values[i, j]
                xr = xt[indices[i, j]]
                for b in range(nb):
                    o[b] += v * xr[b]
        return outt

    @njit(fastmath=_FASTMATH, cache=True, nogil=True)
    def _axpy_ser(xt, values, indices, lengths, bias):  # pragma: no cover - jit
        n = values.shape[0]
        nb = xt.shape[1]
        outt = np.empty((n, nb), dtype=xt.dtype)
        for i in range(n):
            o = outt[i]
            bi = bias[i]
            for b in range(nb):
                o[b] = bi
            for j in range(lengths[i]):
                v = values[i, j]
                xr = xt[indices[i, j]]
                for b in range(nb):
                    o[b] += v * xr[b]
        return outt

    @njit(cache=True, nogil=True)
    def _transpose(a):  # pragma: no cover - jit
        """A small 2-D array's contiguous transpose (a torch op costs more here)."""
        r, c = a.shape
        out = np.empty((c, r), dtype=a.dtype)
        for i in range(r):
            for j in range(c):
                out[j, i] = a[i, j]
        return out

#: below this many elements the axpy kernels transpose in numba, above in torch
SMALL_TRANSPOSE = 1 << 15


def _np_index(t: torch.Tensor) -> np.ndarray:
    """An index tensor as an *unsigned* numpy view (no copy): numba then skips the
    negative-index wrap-around, which is what lets the gathers vectorise."""
    a = t.numpy()
    return a.view(np.uint16) if a.dtype == np.int16 else a.view(np.uint32)


@cache
def _start_numba_pool() -> None:
    """Start numba's thread pool, once per process, keeping torch's thread count.

    numba's OpenMP layer shares torch's libgomp, and starting the pool sets that
    library's thread count to every core: without the reset a process on one torch
    thread would run its dense products on all cores."""
    torch_threads = torch.get_num_threads()
    numba.get_num_threads()  # the first numba thread call starts the pool
    torch.set_num_threads(torch_threads)


def numba_threads(n: int) -> None:
    """Match numba's thread count to torch's (``n``) in the calling thread."""
    if NUMBA_AVAILABLE:
        _start_numba_pool()
        n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
        if numba.get_num_threads() != n:
            numba.set_num_threads(n)


def make_numba_rows(values, indices, lengths, bias, parallel: bool) -> Callable:
    """Batch-major fused kernel: ``out [B, n]`` from a contiguous ``x [B, in]``."""
    v, ix, ln, bs = values.numpy(), _np_index(indices), lengths.numpy(), bias.numpy()
    fn = _rows_par if parallel else _rows_ser
    from_numpy = torch.from_numpy

    def run(x: torch.Tensor) -> torch.Tensor:
        return from_numpy(fn(x.contiguous().numpy(), v, ix, ln, bs))

    return run


def make_numba_axpy(values, indices, lengths, bias, parallel: bool) -> Callable:
    """Row-major fused kernel, vectorised along the batch: it reads ``x.T`` (free when
    ``x`` is itself a transposed view, e.g. the previous axpy layer's output) and
    returns ``out.T`` as a transposed view for large outputs."""
    v, ix, ln, bs = values.numpy(), _np_index(indices), lengths.numpy(), bias.numpy()
    fn = _axpy_par if parallel else _axpy_ser
    from_numpy = torch.from_numpy
    small = SMALL_TRANSPOSE

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.stride(0) == 1 and x.stride(1) == x.shape[0]:  # x.T is contiguous
            xt = x.t().numpy()
        elif x.numel() <= small:
            xt = _transpose(x.contiguous().numpy())
        else:
            xt = x.t().contiguous().numpy()
        outt = fn(xt, v, ix, ln, bs)
        if outt.size <= small:
            return from_numpy(_transpose(outt))
        return from_numpy(outt).t()

    return run


# --------------------------------------------------------------------------- csr
def make_csr(csr: torch.Tensor, bias: torch.Tensor) -> Callable:
    """``x @ W.T + bias`` for a ``torch.sparse`` CSR weight ``W [n, in]`` (MKL on CPU,
    cuSPARSE on CUDA); the result is a transposed view."""
    bias_col = bias[:, None]
    if csr.is_cuda:  # cuSPARSE SpMM; addmm with a broadcast bias is a CPU path
        return lambda x: (torch.mm(csr, x.t()) + bias_col).t()
    return lambda x: torch.addmm(bias_col, csr, x.t()).t()


# --------------------------------------------------------------------------- triton
#: Tiles the Triton ELL kernel's tuning tries: (BLOCK_N rows, BLOCK_B batch columns,
#: UNROLL fan-in entries per loop step, warps); tiles wider than the batch are skipped.
#: Chosen from sweeps of about 60 tiles and grids on an H100 (docs/condensed.md): small
#: one-warp programs win up to batch 256 (many programs in flight keep L2 busy), 2-4
#: warp tiles at batch 1024; persistent grids that keep x in L1 always lost.
TRITON_TILES: tuple[tuple[int, int, int, int], ...] = (
    (8, 1, 16, 1), (32, 1, 8, 1), (16, 2, 8, 1), (16, 4, 8, 1), (4, 16, 16, 1),
    (8, 16, 4, 1), (2, 32, 16, 1), (2, 32, 8, 1), (2, 64, 8, 1), (8, 32, 4, 1),
    (2, 32, 16, 2), (2, 64, 16, 2), (4, 64, 8, 2), (2, 128, 8, 2), (16, 16, 8, 2),
    (32, 16, 8, 4), (16, 32, 4, 4),
)

_TRITON: object = None  # None: not tried; False: unavailable; else the jitted kernel
_TRITON_TUNED: dict[tuple, tuple[tuple[int, int, int, int], float]] = {}


def triton_available() -> bool:
    return _triton_kernel() is not False


def _triton_kernel():
    """The Triton ELLPACK kernel, compiled lazily (import triton only for CUDA)."""
    global _TRITON
    if _TRITON is not None:
        return _TRITON
    try:
        import triton
        import triton.language as tl
    except Exception:  # pragma: no cover - depends on the environment
        _TRITON = False
        return _TRITON

    # n and k are not specialised (one compile serves every layer shape); nb is, so
    # that a batch that is a multiple of 16 gets vectorised loads of x's rows
    @triton.jit(do_not_specialize=["n", "k"])
    def ell_kernel(xt_ptr, vt_ptr, it_ptr, bias_ptr, out_ptr, n, nb, k,
                   BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, UNROLL: tl.constexpr,
                   WIDE: tl.constexpr):  # pragma: no cover - GPU / interpreter
        # xt [in, nb] row-major (x transposed: a row of it is one input over the batch);
        # vt / it [k, n] (transposed ELL: loads coalesce over rows); out [nb, n].
        # Padded ELL entries have value 0 and index 0. Program (r, b) computes row
        # block r of batch block b.
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
        mn = rn < n
        mb = rb < nb
        if WIDE:
            rb = rb.to(tl.int64)
        acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
        for j0 in range(0, k, UNROLL):
            for u in tl.static_range(UNROLL):  # independent gathers in flight
                j = j0 + u
                mj = mn & (j < k)
                if WIDE:
                    off = j.to(tl.int64) * n + rn
                else:
                    off = j * n + rn
                v = tl.load(vt_ptr + off, mask=mj, other=0.0).to(tl.float32)
                ix = tl.load(it_ptr + off, mask=mj, other=0)
                if WIDE:
                    ix = ix.to(tl.int64)
                else:
                    ix = ix.to(tl.int32)
                xv = tl.load(xt_ptr + ix[:, None] * nb + rb[None, :],
                             mask=mj[:, None] & mb[None, :], other=0.0)
                acc += v[:, None] * xv.to(tl.float32)
        acc += tl.load(bias_ptr + rn, mask=mn, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptr + rb[None, :] * n + rn[:, None],
                 acc.to(out_ptr.dtype.element_ty), mask=mn[:, None] & mb[None, :])

    _TRITON = ell_kernel
    return _TRITON


def _triton_grid(n: int, nb: int, tile: tuple[int, int, int, int]) -> tuple[int, int]:
    return -(-n // tile[0]), -(-nb // tile[1])


def _triton_tiles(nb: int) -> list[tuple[int, int, int, int]]:
    """Tiles worth trying for batch size ``nb``: none much wider than the batch, none
    so narrow that the batch needs more than 64 of them."""
    cap = max(1, 1 << (max(1, nb) - 1).bit_length())
    fits = [t for t in TRITON_TILES if cap // 64 <= t[1] <= cap]
    widest = max(t[1] for t in TRITON_TILES)
    return fits or [t for t in TRITON_TILES if t[1] == widest]


def triton_configs() -> dict[tuple, dict]:
    """The Triton ELL kernel's tuned tiles: key -> tile, seconds per call."""
    return {key: {"tile": dict(zip(("BLOCK_N", "BLOCK_B", "UNROLL", "num_warps"), tile,
                                   strict=True)), "seconds": t}
            for key, (tile, t) in _TRITON_TUNED.items()}


def make_triton_ell(values_t, indices_t, bias, *,
                    tile: tuple[int, int, int, int] | None = None) -> Callable:
    """CUDA kernel over the transposed ELL layout ``values_t / indices_t [k, n]``.

    The tile is tuned once per (rows, fan-in, batch bucket, dtypes) by timing every
    tile of :data:`TRITON_TILES` that fits the batch with :func:`measure`
    (:func:`triton_configs`); ``tile=`` forces one.
    """
    kernel = _triton_kernel()
    k, n = values_t.shape
    interpret = bool(os.environ.get("TRITON_INTERPRET"))
    runs: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}

    def tiled(x: torch.Tensor, t: tuple[int, int, int, int]) -> Callable:
        """The kernel with tile ``t``, for inputs shaped like ``x``."""
        nb = x.shape[0]
        meta = dict(BLOCK_N=t[0], BLOCK_B=t[1], UNROLL=t[2],
                    WIDE=max(x.shape[1] * nb, n * nb, k * n) >= 2**31)
        if not interpret:
            meta["num_warps"] = t[3]
        launch = kernel[_triton_grid(n, nb, t)]

        def fn(x: torch.Tensor) -> torch.Tensor:
            out = torch.empty((nb, n), dtype=x.dtype, device=x.device)
            launch(x.t().contiguous(), values_t, indices_t, bias, out, n, nb, k, **meta)
            return out
        return fn

    def launcher(x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        if tile is not None:
            return tiled(x, tile)
        key = (x.device.index, n, k, batch_bucket(x.shape[0]), x.dtype, values_t.dtype,
               indices_t.dtype)
        if key not in _TRITON_TUNED:
            tiles = _triton_tiles(x.shape[0])
            if interpret:  # the CPU interpreter cannot time anything
                _TRITON_TUNED[key] = (tiles[0], float("nan"))
            else:  # pragma: no cover - needs a GPU
                by_name = {str(t): t for t in tiles}
                times = measure({name: tiled(x, t) for name, t in by_name.items()}, x,
                                reference=None)
                best = min(times, key=times.get)
                _TRITON_TUNED[key] = (by_name[best], times[best])
        return tiled(x, _TRITON_TUNED[key][0])

    def run(x: torch.Tensor) -> torch.Tensor:
        fn = runs.get(x.shape[0])
        if fn is None:
            fn = runs[x.shape[0]] = launcher(x)
        return fn(x)

    return run


# --------------------------------------------------------------------------- choice
#: every kernel name, in the order they are tried
KERNELS = ("dense", "csr", "gather", "numba_rows", "numba_rows_serial", "numba_axpy",
           "numba_axpy_serial", "triton_ell")
CPU_KERNELS = ("dense", "csr", "gather", "numba_rows", "numba_rows_serial", "numba_axpy",
               "numba_axpy_serial")
CUDA_KERNELS = ("dense", "csr", "gather", "triton_ell")
#: seconds the automatic choice spends timing one (layer shape, batch bucket)
MEASURE_BUDGET_S = 0.25
#: the eager gather materialises ``batch * nnz`` products: skip it above this
GATHER_LIMIT = 1 << 21

_CHOICES: dict[tuple, str] = {}
_TIMINGS: dict[tuple, dict[str, float]] = {}


def batch_bucket(n: int) -> int:
    """Batch sizes ``[2**(b-1), 2**b)`` share bucket ``b`` (and a kernel choice)."""
    return int(n).bit_length()


def kernel_choices() -> dict[tuple, dict]:
    """The cached automatic choices: key -> {"kernel": name, "times": {name: seconds}}."""
    return {k: {"kernel": v, "times": dict(_TIMINGS.get(k, {}))} for k, v in _CHOICES.items()}


def clear_kernel_cache() -> None:
    """Forget every measured choice (layers re-measure at their next call)."""
    _CHOICES.clear()
    _TIMINGS.clear()
    _TRITON_TUNED.clear()


def cached_choice(key: tuple) -> str | None:
    return _CHOICES.get(key)


def record_choice(key: tuple, name: str, times: Mapping[str, float]) -> None:
    _CHOICES[key] = name
    _TIMINGS[key] = dict(times)


#: another kernel replaces ``dense`` only when measured at least this much faster: the
#: automatic choice must never lose to dense, and timings on a busy machine are noisy
DENSE_MARGIN = 0.9


def pick(times: Mapping[str, float]) -> str:
    """The fastest kernel, ``dense`` unless another beats it by ``DENSE_MARGIN``."""
    best = min(times, key=times.get)
    if "dense" in times and best != "dense" and times[best] > DENSE_MARGIN * times["dense"]:
        return "dense"
    return best


def measure(fns: Mapping[str, Callable], x: torch.Tensor, *, budget_s: float | None = None,
            rounds: int = 5, reference: str | None = "dense") -> dict[str, float]:
    """Median seconds per call of each candidate on input ``x``, interleaved.

    Each candidate runs once first (compilation, lazy set-up) and, when ``reference``
    is given, its output is checked against the reference's; a candidate that fails or
    disagrees is dropped with a warning. Then ``rounds`` rounds time every candidate
    in turn (:func:`sparse_agents.timing.sample_interleaved`, about ``budget_s`` in
    all); candidates more than 3x slower than the best after the first round are
    dropped early.
    """
    budget_s = MEASURE_BUDGET_S if budget_s is None else budget_s
    device = x.device
    outs: dict[str, torch.Tensor] = {}
    live: dict[str, Callable] = {}
    first: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            fn(x)  # compile / build
            synchronize(device)
            t0 = time.perf_counter()
            y = fn(x)
            synchronize(device)
            first[name] = time.perf_counter() - t0
        except Exception as err:  # pragma: no cover - defensive
            warnings.warn(f"condensed kernel {name!r} failed and is skipped: {err}",
                          RuntimeWarning, stacklevel=3)
            continue
        outs[name] = y
        live[name] = fn
    if reference in outs:
        ref = outs[reference]
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        for name in list(live):
            if name != reference and not torch.allclose(
                    outs[name], ref, rtol=1e-3, atol=1e-4 * max(1.0, scale)):
                warnings.warn(f"condensed kernel {name!r} disagrees with {reference!r} and "
                              "is skipped", RuntimeWarning, stacklevel=3)
                del live[name]
    if not live:
        raise RuntimeError("no condensed kernel could run on this input")
    best_first = min(first[n] for n in live)
    per_call = max(best_first, 1e-7)
    reps = max(1, min(1000, int(budget_s / rounds / max(1, len(live)) / per_call)))
    samples = sample_interleaved({n: partial(fn, x) for n, fn in live.items()}, rounds=rounds,
                                 calls=reps, warmup=0, device=device, drop_slower=3.0)
    return {n: float(np.median(s)) for n, s in samples.items()}

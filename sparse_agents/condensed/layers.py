"""Condensed linear layers: ``y[:, rows[i]] = bias[i] + sum_j values[i, j] * x[:, indices[i, j]]``.

:class:`CondensedLinear` (constant fan-in) and :class:`PaddedCondensedLinear` (ELLPACK,
variable fan-in) compute with the fastest kernel of :mod:`sparse_agents.condensed.kernels`
for the batch size; see ``docs/condensed.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_agents.condensed import kernels as K
from sparse_agents.condensed.chain import Chain, condense_one, index_dtype

__all__ = ["CondensedLinear", "PaddedCondensedLinear", "condense_linear", "index_dtype"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


class CondensedLinear(nn.Module):
    """A sparse linear layer with constant fan-in, stored condensed.

    Buffers: ``values [n_alive, k]``, ``indices [n_alive, k]`` (``int16`` when
    ``in_features < 32768``, else ``int32``), ``lengths [n_alive]`` (all ``k`` here),
    ``bias [n_alive]``, ``rows [n_alive]`` (the output position of each kept row) and
    ``fill [out_features]`` (the constant output of every row not in ``rows``, e.g.
    an ablated neuron's bias).

    Args:
        values, indices: the kept rows' weights and their input columns.
        bias: per kept row (``None``: zeros).
        rows: output position of each kept row (``None``: ``0..n_alive-1``).
        in_features: input width.
        out_features: output width (``None``: ``n_alive``, or ``max(rows) + 1``).
        lengths: active entries per row (``None``: all ``k``); entries past a row's
            length are padding and ignored.
        fill: output of the rows not in ``rows`` (``None``: zeros).
        kernel: ``"auto"`` (measure and cache the fastest per batch-size bucket) or
            one of :data:`sparse_agents.condensed.kernels.KERNELS`.

    The forward pass has no gradient with respect to the condensed weights; an input
    that requires grad is handled by a differentiable dense-shrunk path.
    """

    layout = "constant"

    def __init__(self, values: Tensor, indices: Tensor, bias: Tensor | None = None,
                 rows: Tensor | None = None, *, in_features: int,
                 out_features: int | None = None, lengths: Tensor | None = None,
                 fill: Tensor | None = None, kernel: str = "auto") -> None:
        super().__init__()
        self.kernel = kernel
        self._chain = None  # set by bind(): the chain this layer belongs to
        self._link = -1
        self.source_name: str | None = None
        #: the source layer's row of each kept row (set by bind / restructure)
        self.source_rows: Tensor | None = None
        self._contiguous_output = True
        self._reset_caches()
        self._set_structure(values, indices, bias, rows, in_features=in_features,
                            out_features=out_features, lengths=lengths, fill=fill)

    # ------------------------------------------------------------------ set-up
    @property
    def kernel(self) -> str:
        return self._kernel

    @kernel.setter
    def kernel(self, name: str) -> None:
        _check(name == "auto" or name in K.KERNELS,
               f"kernel must be 'auto' or one of {K.KERNELS}, got {name!r}")
        self._kernel = name
        if hasattr(self, "_fast"):
            self._clear_choices()

    @property
    def contiguous_output(self) -> bool:
        """Return a contiguous output (default). ``condense()`` turns it off inside a
        chain, where the next condensed layer reads a transposed output for free."""
        return self._contiguous_output

    @contiguous_output.setter
    def contiguous_output(self, value: bool) -> None:
        self._contiguous_output = bool(value)
        if hasattr(self, "_fast"):
            self._clear_choices()

    def _clear_choices(self) -> None:
        self._fast.clear()
        self._bucket_kernel.clear()
        self._bucket_fn.clear()

    def _reset_caches(self) -> None:
        self._fast: dict[int, Callable[[Tensor], Tensor]] = {}
        self._fast_dtype: torch.dtype | None = None
        self._fast_cuda: bool | None = None
        self._fast_threads = -1
        self._bucket_kernel: dict[int, str] = {}
        self._bucket_fn: dict[int, Callable[[Tensor], Tensor]] = {}
        self._mat: dict[str, object] = {}  # materialised alternative layouts

    @torch.inference_mode(False)
    @torch.no_grad()
    def _set_structure(self, values: Tensor, indices: Tensor, bias: Tensor | None,
                       rows: Tensor | None, *, in_features: int, out_features: int | None,
                       lengths: Tensor | None, fill: Tensor | None) -> None:
        """Validate and install a new structure (clears every cached kernel)."""
        _check(isinstance(values, Tensor) and values.dim() == 2 and values.is_floating_point(),
               "values must be a 2-D floating tensor [n_alive, k], got "
               f"{getattr(values, 'shape', type(values))}")
        _check(isinstance(indices, Tensor) and tuple(indices.shape) == tuple(values.shape),
               f"indices must have the shape of values {tuple(values.shape)}, got "
               f"{tuple(getattr(indices, 'shape', ()))}")
        _check(not indices.is_floating_point() and indices.dtype != torch.bool,
               f"indices must be an integer tensor, got {indices.dtype}")
        in_features = int(in_features)
        _check(in_features >= 0, f"in_features must be >= 0, got {in_features}")
        n, k = values.shape
        dev = values.device
        if lengths is None:
            lengths = torch.full((n,), k, dtype=torch.int32, device=dev)
        else:
            _check(tuple(lengths.shape) == (n,), f"lengths must have shape ({n},), got "
                   f"{tuple(lengths.shape)}")
            lengths = lengths.to(device=dev, dtype=torch.int32)
            _check(bool(((lengths >= 0) & (lengths <= k)).all()),
                   f"lengths must be in [0, {k}]")
        varying = n > 0 and bool((lengths != k).any())
        if self.layout == "constant" and varying:
            raise ValueError("lengths vary between rows: use PaddedCondensedLinear for a "
                             "variable fan-in layer")
        valid = torch.arange(k, device=dev)[None, :] < lengths[:, None].long()
        if indices.numel():
            live = indices[valid]
            _check(live.numel() == 0 or (int(live.min()) >= 0 and int(live.max()) < in_features),
                   f"indices must be in [0, in_features={in_features})")
        indices = torch.where(valid, indices.to(dev).long(), 0).to(index_dtype(in_features))
        values = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=dev))
        if bias is None:
            bias = torch.zeros(n, dtype=values.dtype, device=dev)
        _check(tuple(bias.shape) == (n,), f"bias must have shape ({n},), got "
               f"{tuple(bias.shape)}")
        if rows is None:
            rows = torch.arange(n, device=dev)
            out_features = n if out_features is None else int(out_features)
        else:
            rows = rows.to(device=dev, dtype=torch.long)
            _check(tuple(rows.shape) == (n,), f"rows must have shape ({n},), got "
                   f"{tuple(rows.shape)}")
            if out_features is None:
                out_features = int(rows.max()) + 1 if n else 0
        out_features = int(out_features)
        _check(n == 0 or (int(rows.min()) >= 0 and int(rows.max()) < out_features),
               f"rows must be in [0, out_features={out_features})")
        _check(rows.unique().numel() == n, "rows must be distinct")
        if fill is None:
            fill = torch.zeros(out_features, dtype=values.dtype, device=dev)
        _check(tuple(fill.shape) == (out_features,),
               f"fill must have shape ({out_features},), got {tuple(fill.shape)}")
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("values", values.detach().contiguous().clone())
        self.register_buffer("indices", indices.contiguous())
        self.register_buffer("lengths", lengths.contiguous())
        self.register_buffer("bias", bias.detach().to(values.dtype).contiguous().clone())
        self.register_buffer("rows", rows.contiguous())
        self.register_buffer("fill", fill.detach().to(values.dtype).contiguous().clone())
        self._identity_rows = n == out_features and bool(
            (rows == torch.arange(n, device=dev)).all())
        self._reset_caches()

    @classmethod
    def for_structure(cls, values: Tensor, indices: Tensor, bias: Tensor | None = None,
                      rows: Tensor | None = None, *, in_features: int,
                      out_features: int | None = None, lengths: Tensor | None = None,
                      fill: Tensor | None = None, kernel: str = "auto") -> CondensedLinear:
        """A layer of the layout this structure needs (arguments as the constructor): a
        :class:`PaddedCondensedLinear` when ``lengths`` vary between rows, else a
        :class:`CondensedLinear`."""
        layout = _layout_for(values, lengths)
        return layout(values, indices, bias, rows, in_features=in_features,
                      out_features=out_features, lengths=lengths, fill=fill, kernel=kernel)

    @torch.inference_mode(False)
    def restructure(self, values: Tensor, indices: Tensor, bias: Tensor | None,
                    rows: Tensor | None, *, in_features: int, out_features: int | None,
                    lengths: Tensor | None, fill: Tensor | None,
                    source_rows: Tensor | None = None) -> None:
        """Install a new structure in place (arguments as the constructor, moved to this
        layer's device and dtype): the layer stays the same module of its model and
        switches between the constant and padded layout as ``lengths`` need. Clears
        every cached kernel."""
        dev, dtype = self.values.device, self.values.dtype

        def move(t: Tensor | None, floating: bool) -> Tensor | None:
            return None if t is None else t.to(dev, dtype) if floating else t.to(dev)

        self.__class__ = _layout_for(values, lengths)
        self._set_structure(move(values, True), move(indices, False), move(bias, True),
                            move(rows, False), in_features=in_features,
                            out_features=out_features, lengths=move(lengths, False),
                            fill=move(fill, True))
        if source_rows is not None:
            self.source_rows = source_rows.to(dev)

    def bind(self, chain: Chain, link: int, source_name: str, source_rows: Tensor) -> None:
        """Make this layer link ``link`` of ``chain`` (what :meth:`refresh` re-gathers
        from): the condensed source layer ``source_name``, whose rows ``source_rows`` it
        keeps."""
        self._chain, self._link, self.source_name = chain, int(link), source_name
        self.source_rows = source_rows.to(self.values.device)

    def keep_alive(self, obj: object) -> None:
        """Keep ``obj`` (not a submodule) alive as long as this layer: the chain holds
        its sources weakly, and the masked view of ``from_linear(linear, mask)`` has no
        other owner."""
        object.__setattr__(self, "_keepalive", obj)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor | None = None, *,
                    kernel: str = "auto") -> CondensedLinear:
        """Condense one ``nn.Linear`` through ``mask``, else its own mask (a ``weight_mask``
        buffer or torch's pruning API), else its weight's nonzeros. Rows without an active
        weight output their bias. The result can :meth:`refresh` from ``linear``. Returns
        a :class:`PaddedCondensedLinear` when the fan-in varies between rows."""
        return condense_linear(linear, mask, kernel=kernel)

    # ------------------------------------------------------------------ info
    @property
    def chain(self) -> Chain | None:
        """The chain of source layers this layer was condensed in (``None``: built
        directly from tensors, nothing to refresh from)."""
        return self._chain

    @property
    def n_alive(self) -> int:
        return self.values.shape[0]

    @property
    def fan_in(self) -> int:
        """``k``: the (maximum) number of active weights per kept row."""
        return self.values.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.lengths.sum())

    @property
    def chosen_kernels(self) -> dict[int, str]:
        """Batch bucket (``batch.bit_length()``) -> kernel used, for buckets seen so far."""
        return dict(self._bucket_kernel)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"n_alive={self.n_alive}, fan_in={self.fan_in}, layout={self.layout}, "
                f"index_dtype={str(self.indices.dtype).replace('torch.', '')}, "
                f"kernel={self.kernel}")

    def to_dense(self) -> Tensor:
        """The equivalent dense weight ``[out_features, in_features]`` (zeros elsewhere)."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype,
                        device=self.values.device)
        w[self.rows] = self._dense_weight()
        return w

    def full_bias(self) -> Tensor:
        """The equivalent dense bias ``[out_features]`` (``fill`` for rows not kept)."""
        b = self.fill.clone()
        b[self.rows] = self.bias
        return b

    # ------------------------------------------------------------------ refresh
    def refresh(self, force: bool = False) -> bool:
        """Re-gather values (and folded biases) from the source ``nn.Linear`` layers of
        this layer's chain; indices are recomputed only when a mask changed since the
        last refresh (or ``force``). Returns whether the structure was rebuilt."""
        if self._chain is None:
            raise RuntimeError("this CondensedLinear has no source layer to refresh from: "
                               "build it with condense() or CondensedLinear.from_linear()")
        return self._chain.refresh(force=force)

    def set_values(self, values: Tensor, bias: Tensor, fill: Tensor | None = None) -> None:
        """Copy new values, bias (and ``fill``) in place, same structure and shapes;
        materialised layouts follow."""
        with torch.no_grad():
            self.values.copy_(values)
            self.bias.copy_(bias)
            if fill is not None:
                self.fill.copy_(fill)
            for name in list(self._mat):
                self._update_mat(name)

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .double(), ...
        out = super()._apply(fn, recurse)
        self._reset_caches()
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_fast={}, _fast_dtype=None, _fast_cuda=None, _fast_threads=-1, _mat={},
                     _bucket_fn={}, _bucket_kernel={})
        return state

    # ------------------------------------------------------------------ layouts
    def _valid(self) -> Tensor:
        k = self.values.shape[1]
        return torch.arange(k, device=self.values.device)[None, :] < self.lengths[:, None]

    # Layouts are built outside inference mode: a tensor made under
    # ``torch.inference_mode()`` could not be updated in place by a later refresh.
    @torch.inference_mode(False)
    @torch.no_grad()
    def _dense_weight(self) -> Tensor:
        if "dense" not in self._mat:
            self._mat["dense"] = torch.zeros(self.n_alive, self.in_features,
                                             dtype=self.values.dtype,
                                             device=self.values.device)
            self._update_mat("dense")
        return self._mat["dense"]

    @torch.inference_mode(False)
    @torch.no_grad()
    def _csr_weight(self) -> Tensor:
        if "csr" not in self._mat:
            valid = self._valid()
            crow = torch.zeros(self.n_alive + 1, dtype=torch.int64, device=self.values.device)
            crow[1:] = torch.cumsum(self.lengths.long(), 0)
            col = self.indices.long()[valid]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
                self._mat["csr"] = torch.sparse_csr_tensor(
                    crow, col, self.values[valid].clone(), (self.n_alive, self.in_features))
            self._mat["csr_valid"] = valid
        return self._mat["csr"]

    @torch.inference_mode(False)
    @torch.no_grad()
    def _ell_t(self) -> tuple[Tensor, Tensor]:
        if "ell_t" not in self._mat:
            self._mat["ell_t"] = (self.values.t().contiguous(), self.indices.t().contiguous())
        return self._mat["ell_t"]

    def _update_mat(self, name: str) -> None:
        with torch.no_grad():
            if name == "dense":
                w = self._mat["dense"]
                w.zero_()
                if self.values.numel():
                    w.scatter_add_(1, self.indices.long(), self.values)
            elif name == "csr":
                self._mat["csr"].values().copy_(self.values[self._mat["csr_valid"]])
            elif name == "ell_t":
                self._mat["ell_t"][0].copy_(self.values.t())

    # ------------------------------------------------------------------ kernels
    def available_kernels(self, x: Tensor) -> list[str]:
        """Kernels that can run on ``x`` (device, dtype, libraries installed)."""
        if x.is_cuda:
            names = ["dense", "csr", "gather"]
            if x.dtype in (torch.float32, torch.float16, torch.bfloat16) and \
                    K.triton_available():
                names.append("triton_ell")
            return names
        names = ["dense", "csr", "gather"]
        if K.NUMBA_AVAILABLE and x.dtype == torch.float32:
            names += ["numba_rows", "numba_rows_serial", "numba_axpy", "numba_axpy_serial"]
        return names

    def _build_kernel(self, name: str) -> Callable[[Tensor], Tensor]:
        """The kernel as a function of ``x``, including the copy to a contiguous output
        where one is owed (so that the automatic choice measures that copy too)."""
        fn = self._raw_kernel(name)
        if self.contiguous_output and self._identity_rows and name not in (
                "dense", "gather", "numba_rows", "numba_rows_serial", "triton_ell"):
            raw = fn

            def fn(x):
                return raw(x).contiguous()
        return fn

    def _raw_kernel(self, name: str) -> Callable[[Tensor], Tensor]:
        if name == "dense":
            w, b = self._dense_weight(), self.bias
            return lambda x: F.linear(x, w, b)
        if name == "csr":
            return K.make_csr(self._csr_weight(), self.bias)
        if name == "gather":
            idx, v, b = self.indices.long(), self.values, self.bias
            return lambda x: (x[:, idx] * v).sum(-1) + b
        if name in ("numba_rows", "numba_rows_serial"):
            return K.make_numba_rows(self.values, self.indices, self.lengths, self.bias,
                                     parallel=name == "numba_rows")
        if name in ("numba_axpy", "numba_axpy_serial"):
            return K.make_numba_axpy(self.values, self.indices, self.lengths, self.bias,
                                     parallel=name == "numba_axpy")
        if name == "triton_ell":
            vt, it = self._ell_t()
            return K.make_triton_ell(vt, it, self.bias)
        raise ValueError(f"unknown kernel {name!r}")  # pragma: no cover

    def _choice_key(self, x: Tensor) -> tuple:
        threads = torch.get_num_threads() if not x.is_cuda else 0
        return (x.device.type, x.dtype, self.layout, self.in_features, self.n_alive,
                self.fan_in, self.nnz, K.batch_bucket(x.shape[0]), threads,
                self.contiguous_output and self._identity_rows)

    def candidates(self, x: Tensor) -> list[str]:
        """Kernels the automatic choice measures for input ``x``."""
        names = self.available_kernels(x)
        if x.shape[0] * max(1, self.values.numel()) > K.GATHER_LIMIT:
            names = [n for n in names if n != "gather"]
        if torch.get_num_threads() == 1:  # a parallel numba kernel cannot beat its serial twin
            names = [n for n in names if n not in ("numba_rows", "numba_axpy")]
        return names

    def _resolve(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        _check(x.dtype == self.values.dtype,
               f"input dtype {x.dtype} does not match the layer's {self.values.dtype}")
        _check(x.device == self.values.device,
               f"input device {x.device} does not match the layer's {self.values.device}")
        threads = torch.get_num_threads()
        if (x.dtype, x.is_cuda, threads) != (self._fast_dtype, self._fast_cuda,
                                             self._fast_threads):
            self._clear_choices()
            self._fast_dtype, self._fast_cuda, self._fast_threads = x.dtype, x.is_cuda, threads
        if not x.is_cuda:
            K.numba_threads(threads)
        bucket = K.batch_bucket(x.shape[0])
        fn = self._bucket_fn.get(bucket)
        if fn is not None:  # another batch size of a bucket already resolved
            self._fast[x.shape[0]] = fn
            return fn
        if self.n_alive == 0 or self.fan_in == 0:
            name = "empty"
            n, b = self.n_alive, self.bias

            def fn(x):
                return b.expand(x.shape[0], n).clone()
        else:
            name = self._bucket_kernel.get(bucket)
            if name is None:
                name = self._pick(x)
            if name not in self.available_kernels(x):
                warnings.warn(f"kernel {name!r} cannot run on this input "
                              f"({x.device.type}, {x.dtype}); using 'dense'",
                              RuntimeWarning, stacklevel=3)
                name = "dense"
            fn = self._build_kernel(name)
        self._bucket_kernel[bucket] = name
        self._bucket_fn[bucket] = fn
        self._fast[x.shape[0]] = fn
        return fn

    def _pick(self, x: Tensor) -> str:
        if self.kernel != "auto":
            return self.kernel
        key = self._choice_key(x)
        name = K.cached_choice(key)
        if name is None:
            cands = self.candidates(x)
            with torch.no_grad():
                fns = {n: self._build_kernel(n) for n in cands}
                times = K.measure(fns, x.detach())
                name = K.pick(times)
                if name != "dense" and "dense" in fns:  # confirm: noise must not beat dense
                    again = K.measure({"dense": fns["dense"], name: fns[name]}, x.detach(),
                                      reference=None)
                    name = K.pick(again)
                    times = {**times, **{f"{n} (confirm)": t for n, t in again.items()}}
            K.record_choice(key, name, times)
        return name

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        # fast path: a 2-D input whose batch size, dtype, device and thread count
        # already have a kernel (a handful of attribute reads, then the kernel)
        if x.dim() == 2:
            fn = self._fast.get(x.shape[0])
            if fn is not None and x.shape[1] == self.in_features and not x.requires_grad \
                    and x.dtype is self._fast_dtype and x.is_cuda is self._fast_cuda \
                    and torch.get_num_threads() == self._fast_threads:
                y = fn(x)
                return y if self._identity_rows else self._scatter(y)
        return self._slow_forward(x)

    def _slow_forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"expected input [..., {self.in_features}], got {tuple(x.shape)}")
        if x.dim() != 2:
            lead = x.shape[:-1]
            y = self.forward(x.reshape(-1, self.in_features))
            return y.reshape(*lead, y.shape[-1])
        if x.shape[0] == 0:
            return self.fill.new_zeros(0, self.out_features) + self.fill
        if x.requires_grad:
            if torch.is_grad_enabled():  # differentiable with respect to x
                y = F.linear(x, self._dense_weight(), self.bias)
                return y if self._identity_rows else self._scatter(y)
            x = x.detach()
        fn = self._fast.get(x.shape[0])
        if fn is None or x.dtype is not self._fast_dtype or x.is_cuda is not self._fast_cuda \
                or torch.get_num_threads() != self._fast_threads:
            fn = self._resolve(x)
        y = fn(x)
        return y if self._identity_rows else self._scatter(y)

    def _scatter(self, y: Tensor) -> Tensor:
        out = self.fill.expand(y.shape[0], self.out_features).clone()
        out.index_copy_(1, self.rows, y.to(out.dtype))
        return out


class PaddedCondensedLinear(CondensedLinear):
    """ELLPACK variant of :class:`CondensedLinear` for variable fan-in (SET, RigL):
    every kept row is padded to the largest fan-in ``k``; ``lengths[i]`` says how many
    of row ``i``'s entries are real. The kernels skip the padding (the ``csr`` kernel
    stores none), so the automatic choice falls back to CSR where that is faster."""

    layout = "padded"

    def __init__(self, values: Tensor, indices: Tensor, bias: Tensor | None = None,
                 rows: Tensor | None = None, *, in_features: int,
                 out_features: int | None = None, lengths: Tensor | None = None,
                 fill: Tensor | None = None, kernel: str = "auto") -> None:
        super().__init__(values, indices, bias, rows, in_features=in_features,
                         out_features=out_features, lengths=lengths, fill=fill, kernel=kernel)


def _layout_for(values: Tensor, lengths: Tensor | None) -> type[CondensedLinear]:
    """:class:`PaddedCondensedLinear` when ``lengths`` vary between the rows of
    ``values [n, k]``, else :class:`CondensedLinear` (which validates the arguments)."""
    if lengths is None or not isinstance(values, Tensor) or values.dim() != 2:
        return CondensedLinear
    n, k = values.shape
    varying = n > 0 and bool((lengths != k).any())
    return PaddedCondensedLinear if varying else CondensedLinear


def condense_linear(linear: nn.Linear, mask: Tensor | None = None, *,
                    kernel: str = "auto") -> CondensedLinear:
    """Condense one ``nn.Linear`` (see :meth:`CondensedLinear.from_linear`)."""
    return condense_one(linear, mask, layer_type=CondensedLinear, kernel=kernel)

"""Condensed training of one masked ``nn.Linear``: forward, input gradient, weight
gradient and optimizer step on the active weights only (DESIGN section 5b).

While a layer trains condensed, its trainable parameter is ``weight_values``, the
active weights in row-major order (``[nnz]``); the dense ``weight`` stays on the module
as a buffer under the same name (so ``state_dict`` keys, checkpoints and every reader
of ``module.weight`` are unchanged) and is brought up to date from the values after
each optimizer step, at ``state_dict()`` and on request. The mask stays the truth: the
structure (CSR indices and the transposed CSC ones) is built from it and rebuilt only
when it changes. The optimizer holds ``weight_values`` where it held ``weight``; its
``state_dict`` is written with weight-shaped state (zeros at inactive entries), as in
masked training, and loading one compacts it again, so checkpoints of either mode load
under the other. ``SparseTopology(compute=...)`` decides which layers train this way.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparse_agents.compute import kernels as K
from sparse_agents.optim_state import reset_value

__all__ = ["VALUES", "CondensedLinearTraining", "Structure", "check_elementwise_optimizer",
           "condensed_linear", "map_state", "swap_param"]

#: the name of the compact trainable parameter on a condensed module
VALUES = "weight_values"

#: optimizers whose update of an entry reads only that entry's gradient and state, so a
#: step over the active values equals the masked dense step (subclasses included)
ELEMENTWISE_OPTIMIZERS: tuple[type, ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
    torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam,
    torch.optim.Rprop, torch.optim.ASGD, torch.optim.Adadelta,
)


def check_elementwise_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` updates each entry from its own gradient and state only."""
    return isinstance(optimizer, ELEMENTWISE_OPTIMIZERS)


@dataclass
class Structure:
    """Index structure of a mask ``[out, in]``: CSR over rows, CSC over columns."""

    out_features: int
    in_features: int
    nnz: int
    flat: Tensor  # int64 [nnz]: row-major flat index of each active entry into the weight
    col: Tensor  # int32 [nnz]: input column of each entry (CSR order)
    rowptr: Tensor  # int64 [out + 1]
    perm: Tensor  # int32 [nnz]: CSR position of each entry in column-major (CSC) order
    rowt: Tensor  # int32 [nnz]: output row of each entry in CSC order
    colptr: Tensor  # int64 [in + 1]

    @classmethod
    @torch.no_grad()
    def from_mask(cls, mask: Tensor) -> Structure:
        out_f, in_f = mask.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)
        rows = torch.div(flat, in_f, rounding_mode="floor")
        cols = flat - rows * in_f
        rowptr = torch.zeros(out_f + 1, dtype=torch.int64, device=mask.device)
        rowptr[1:] = torch.bincount(rows, minlength=out_f).cumsum(0)
        colptr = torch.zeros(in_f + 1, dtype=torch.int64, device=mask.device)
        colptr[1:] = torch.bincount(cols, minlength=in_f).cumsum(0)
        perm = torch.argsort(cols * out_f + rows)  # stable order: by column, then row
        return cls(out_f, in_f, int(flat.numel()), flat, cols.to(torch.int32), rowptr,
                   perm.to(torch.int32), rows[perm].to(torch.int32), colptr)

    @functools.cached_property
    def arrays(self) -> K.Arrays:
        """The indices as numpy views for the numba kernels (CPU structures)."""
        return K.Arrays.of(self)

    def to(self, device: torch.device) -> Structure:
        if self.flat.device == device:
            return self
        return Structure(self.out_features, self.in_features, self.nnz,
                         *(t.to(device) for t in (self.flat, self.col, self.rowptr, self.perm,
                                                  self.rowt, self.colptr)))


class _LinearFunction(torch.autograd.Function):
    """``y = x @ W.T + b`` with ``W`` given by its active ``values`` on ``structure``."""

    @staticmethod
    def forward(ctx, x2: Tensor, values: Tensor, bias: Tensor | None,
                layer: CondensedLinearTraining) -> Tensor:
        s = layer.structure
        impl = layer.impl_for(values)
        vals = values.detach()
        b = bias.detach() if bias is not None else layer.zero_bias(vals)
        xt = x2.detach().t().contiguous()  # free when x2 is a condensed layer's output
        yt = K.forward(s, xt, vals, b, impl)
        ctx.save_for_backward(xt, values)
        ctx.structure = s
        ctx.impl = impl
        ctx.layer = layer
        return yt.t()

    @staticmethod
    def backward(ctx, gy: Tensor):
        xt, values = ctx.saved_tensors
        s, impl, layer = ctx.structure, ctx.impl, ctx.layer
        dyt = gy.t().contiguous()
        dx = dvalues = dbias = None
        vals = values.detach()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_w and layer.want_dense_grad and s is layer.structure:
            dense = dyt @ xt.t()  # the dense gradient, for a topology update
            layer.keep_dense_grad(dense, values)
            dvalues = dense.reshape(-1)[s.flat]
            need_w = False
        if need_x and need_w and impl == "numba":  # one pass serves both gradients
            dxt, dvalues = K.backward_both(s, dyt, xt, vals)
            dx = dxt.t()
        else:
            if need_x:
                dx = K.backward_input(s, dyt, vals, impl).t()
            if need_w:
                dvalues = K.backward_weight(s, dyt, xt, impl)
        if ctx.needs_input_grad[2]:
            dbias = dyt.sum(1)
        return dx, dvalues, dbias, None


class _DenseLinearFunction(torch.autograd.Function):
    """The same layer computed with the dense weight (kept up to date from the values):
    the masked layer's products, the gradient read at the active entries. For the
    batches where the kernels do not pay; the optimizer still steps the values only."""

    @staticmethod
    def forward(ctx, x2: Tensor, values: Tensor, bias: Tensor | None,
                layer: CondensedLinearTraining) -> Tensor:
        weight = layer.module.weight.detach()
        x = x2.detach()
        ctx.save_for_backward(x, weight)
        ctx.structure = layer.structure
        ctx.layer = layer
        return torch.nn.functional.linear(x, weight, None if bias is None else bias.detach())

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight = ctx.saved_tensors
        s, layer = ctx.structure, ctx.layer
        dx = dvalues = dbias = None
        if ctx.needs_input_grad[0]:
            dx = gy @ weight
        if ctx.needs_input_grad[1]:
            dense = gy.t() @ x
            if layer.want_dense_grad and s is layer.structure:
                layer.keep_dense_grad(dense, layer.values)
            dvalues = dense.reshape(-1)[s.flat]
        if ctx.needs_input_grad[2]:
            dbias = gy.sum(0)
        return dx, dvalues, dbias, None


def map_state(entry: dict, shape: torch.Size, fn: Callable[[str, Tensor], Tensor]) -> dict:
    """An optimizer state entry with ``fn(key, value)`` applied to its tensors of
    ``shape`` (the per-weight state; scalars such as Adam's ``step`` pass through)."""
    return {k: fn(k, v) if torch.is_tensor(v) and v.shape == shape else v
            for k, v in entry.items()}


def swap_param(optimizer: torch.optim.Optimizer, old: Tensor, new: Tensor) -> bool:
    """Put ``new`` where ``old`` is in the optimizer's param groups (same position)."""
    for group in optimizer.param_groups:
        params = group["params"]
        for i, p in enumerate(params):
            if p is old:
                params[i] = new
                return True
    return False


class _Hook:
    """A module hook calling ``owner.<name>`` (torch marks hooks with attributes, which
    bound methods cannot take)."""

    def __init__(self, owner: CondensedLinearTraining, name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, *args):
        return getattr(self.owner, self.name)(*args)


class CondensedLinearTraining:
    """Trains one ``nn.Linear`` on its active weights (see the module docstring).

    Args:
        module: the layer (a plain ``nn.Linear`` with a trainable ``weight``).
        mask: its bool mask ``[out, in]`` (the weights outside it are 0).
        mask_name: the module's mask buffer, read again after ``load_state_dict``.
        kernels_for: ``batch -> bool``, the batches the kernels compute in training
            (``None``: all); the others use the dense product on the dense weight.
        impl: ``"numba"``, ``"torch"``, or ``None`` (numba where it runs, else torch).
    """

    def __init__(self, module: nn.Linear, mask: Tensor, impl: str | None = None, *,
                 mask_name: str = "weight_mask",
                 kernels_for: Callable[[int], bool] | None = None) -> None:
        if impl is not None and impl not in K.IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {K.IMPLEMENTATIONS} or None, got {impl!r}")
        self.module = module
        self.impl = impl
        self.mask_name = mask_name
        #: batch -> whether the kernels compute it (``None``: always; else the dense
        #: product on the up-to-date weight, as a masked layer, for the other batches)
        self.kernels_for: Callable[[int], bool] | None = kernels_for
        self.structure = Structure.from_mask(mask)
        weight = module.weight
        self.values = nn.Parameter(weight.detach().reshape(-1)[self.structure.flat].clone(),
                                   requires_grad=weight.requires_grad)
        #: the next backward keeps the dense weight gradient (before a topology update)
        self.want_dense_grad = False
        self.dense_grad: Tensor | None = None
        self._zero_bias: Tensor | None = None
        #: (id, version) of the values last written into the dense weight
        self._synced: tuple[int, int] | None = None
        self._mark_synced()
        #: called after ``load_state_dict`` wrote the module (the owning topology's
        #: hook); ``None``: re-read the values from the loaded weight
        self.on_load: Callable[[CondensedLinearTraining], None] | None = None

    def __getstate__(self) -> dict:
        """Pickled (``torch.save`` of a whole model) without its owner's load hook."""
        return {**self.__dict__, "on_load": None, "dense_grad": None}

    def __deepcopy__(self, memo) -> CondensedLinearTraining:
        """A copy of the module trains condensed on its own values, with no owner."""
        new = copy.copy(self)
        memo[id(self)] = new
        new.module = copy.deepcopy(self.module, memo)
        new.values = copy.deepcopy(self.values, memo)
        new.on_load = None
        new.dense_grad = None
        new.want_dense_grad = False
        return new

    # ------------------------------------------------------------------ install
    def _own_hooks(self) -> list[tuple[dict, int]]:
        module = self.module
        return [(hooks, key) for hooks in (module._state_dict_pre_hooks,
                                           module._state_dict_hooks,
                                           module._load_state_dict_post_hooks)
                for key, fn in hooks.items() if isinstance(fn, _Hook) and fn.owner is self]

    def install(self) -> None:
        """Make ``weight_values`` the module's trainable parameter and ``weight`` a
        buffer of the same name; route ``forward`` through the condensed kernels."""
        module = self.module
        weight = module._parameters.pop("weight")
        module._buffers = {"weight": weight, **module._buffers}
        module.register_parameter(VALUES, self.values)
        module.forward = self.forward
        module.register_state_dict_pre_hook(_Hook(self, "_before_state_dict"))
        module.register_state_dict_post_hook(_Hook(self, "_drop_values_key"))
        module.register_load_state_dict_post_hook(_Hook(self, "_after_load"))

    def uninstall(self) -> None:
        """Undo :meth:`install`: ``weight`` (up to date) is the parameter again."""
        module = self.module
        self.sync_weight()
        for hooks, key in self._own_hooks():
            del hooks[key]
        module.__dict__.pop("forward", None)
        del module._parameters[VALUES]
        weight = module._buffers.pop("weight")
        module._parameters = {"weight": weight, **module._parameters}

    # ------------------------------------------------------------------ compute
    def impl_for(self, values: Tensor) -> str:
        if self.impl is not None:
            if self.impl == "numba" and not K.numba_supports(values):
                raise ValueError("impl='numba' runs on CPU float32 tensors only, got "
                                 f"{values.device} {values.dtype}")
            return self.impl
        return "numba" if K.numba_supports(values) else "torch"

    def zero_bias(self, like: Tensor) -> Tensor:
        zb = self._zero_bias
        if zb is None or zb.device != like.device or zb.dtype != like.dtype \
                or zb.numel() != self.structure.out_features:
            zb = self._zero_bias = torch.zeros(self.structure.out_features, dtype=like.dtype,
                                               device=like.device)
        return zb

    def forward(self, input: Tensor) -> Tensor:
        module = self.module
        values = self.values
        if self.structure.flat.device != values.device:
            self.structure = self.structure.to(values.device)
        bias = module.bias
        lead = input.shape[:-1]
        x2 = input.reshape(-1, input.shape[-1]) if input.dim() != 2 else input
        if torch.is_grad_enabled() and (input.requires_grad or values.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            if self.use_kernels(x2.shape[0]) or not self.weight_is_current():
                y = _LinearFunction.apply(x2, values, bias, self)
            else:
                y = _DenseLinearFunction.apply(x2, values, bias, self)
        elif self.weight_is_current() and (x2.shape[0] <= K.ROWS_MAX_BATCH
                                           or not self.use_kernels(x2.shape[0])):
            # a few samples (predict, rollouts), or a batch the kernels do not pay for:
            # the dense product on the up-to-date weight, exactly the masked layer's
            return torch.nn.functional.linear(input, module.weight, bias)
        else:
            y = self._forward_no_grad(x2, values.detach(),
                                      None if bias is None else bias.detach())
        return y if input.dim() == 2 else y.reshape(*lead, y.shape[-1])

    def use_kernels(self, batch: int) -> bool:
        """Whether a training forward of ``batch`` samples runs the condensed kernels
        (``kernels_for``; ``None``: always) or the dense product on the weight."""
        rule = self.kernels_for
        return True if rule is None else bool(rule(batch))

    def _forward_no_grad(self, x2: Tensor, values: Tensor, bias: Tensor | None) -> Tensor:
        s = self.structure
        impl = self.impl_for(values)
        b = bias if bias is not None else self.zero_bias(values)
        if impl == "numba" and x2.shape[0] <= K.ROWS_MAX_BATCH:
            return K.forward_rows(s, x2.contiguous(), values, b)
        return K.forward(s, x2.t().contiguous(), values, b, impl).t()

    def weight_is_current(self) -> bool:
        """Whether the dense ``weight`` holds the values as they are now."""
        values = self.values
        return self._synced == (id(values), values._version)

    def _mark_synced(self) -> None:
        self._synced = (id(self.values), self.values._version)

    def keep_dense_grad(self, dense: Tensor, values: Tensor) -> None:
        """Keep (or, when this backward adds to an earlier one's gradient, add) the
        dense weight gradient of this backward for the topology's next update."""
        if self.dense_grad is not None and values.grad is not None:
            self.dense_grad = self.dense_grad + dense
        else:
            self.dense_grad = dense

    # ------------------------------------------------------------------ sync
    @torch.no_grad()
    def sync_weight(self) -> None:
        """Write the active values into the dense ``weight`` (inactive entries stay 0)."""
        weight = self.module.weight
        K.scatter(weight, self.structure, self.values)
        self._mark_synced()

    @torch.no_grad()
    def gather_values(self) -> None:
        """Read the active values from the dense ``weight`` (after it was written)."""
        weight = self.module.weight
        self.values.copy_(weight.reshape(-1)[self.structure.flat.to(weight.device)])
        self._mark_synced()

    def _before_state_dict(self, module, prefix, keep_vars) -> None:
        self.sync_weight()

    def _drop_values_key(self, module, state_dict, prefix, local_metadata) -> None:
        state_dict.pop(prefix + VALUES, None)

    def _after_load(self, module, incompatible) -> None:
        missing = [k for k in incompatible.missing_keys if k.endswith("." + VALUES)
                   or k == VALUES]
        for key in missing:
            incompatible.missing_keys.remove(key)
        if self.on_load is not None:
            self.on_load(self)
        else:
            self.follow_mask(None)

    @torch.no_grad()
    def follow_mask(self, optimizer: torch.optim.Optimizer | None) -> None:
        """After the module's weight and mask were written (a load): weights outside
        the mask become 0 and the structure and values follow them."""
        module = self.module
        mask = getattr(module, self.mask_name, None)
        if mask is None:
            self.gather_values()
            return
        mask = mask.to(torch.bool)
        module.weight.mul_(mask)
        old = self.structure_mask().to(mask.device)
        if torch.equal(old, mask):
            self.gather_values()
        else:
            self.restructure(mask, old & mask, optimizer)

    def structure_mask(self) -> Tensor:
        """The mask the structure was built from."""
        s = self.structure
        mask = torch.zeros(s.out_features * s.in_features, dtype=torch.bool,
                           device=s.flat.device)
        mask[s.flat] = True
        return mask.view(s.out_features, s.in_features)

    # ------------------------------------------------------------------ restructure
    @torch.no_grad()
    def restructure(self, mask: Tensor, keep: Tensor,
                    optimizer: torch.optim.Optimizer | None) -> None:
        """Rebuild the structure for ``mask``; the values are read from the dense
        weight; the gradient and optimizer state of entries in ``keep`` survive, the
        others restart (0, or the optimizer's initial value)."""
        old = self.structure
        new = Structure.from_mask(mask)
        weight = self.module.weight
        keep_flat = keep.reshape(-1)
        values = self.values

        def remap(t: Tensor, fill: float) -> Tensor:
            dense = self.dense_state(t, fill).view(-1)  # still on the old structure
            dense[~keep_flat] = fill
            return dense[new.flat]

        entry = optimizer.state.get(values, {}) if optimizer is not None else {}
        state = map_state(entry, values.shape,
                          lambda k, v: remap(v, reset_value(optimizer, values, k)))
        grad = None if values.grad is None else remap(values.grad, 0.0)
        fresh = weight.reshape(-1)[new.flat].to(values.dtype)
        if new.nnz == old.nnz:  # in place: the parameter (and autograd's view of it) stays
            values.copy_(fresh)
            if grad is not None:
                values.grad.copy_(grad)
            if optimizer is not None and state:
                for key, value in state.items():
                    current = optimizer.state[values][key]
                    if torch.is_tensor(value) and value.shape == values.shape:
                        current.copy_(value)
        else:  # a new parameter of the new size, in the module and the optimizer
            param = nn.Parameter(fresh.clone(), requires_grad=values.requires_grad)
            param.grad = grad
            self.module.register_parameter(VALUES, param)  # same place
            if optimizer is not None:
                swap_param(optimizer, values, param)
                optimizer.state.pop(values, None)
                if state:
                    optimizer.state[param] = state
            self.values = param
        self.structure = new
        self.dense_grad = None
        self._mark_synced()

    def dense_state(self, value: Tensor, fill: float) -> Tensor:
        """A compact state tensor written out at the weight's shape (``fill`` outside)."""
        weight = self.module.weight
        dense = torch.full((weight.numel(),), fill, dtype=value.dtype, device=value.device)
        dense[self.structure.flat.to(value.device)] = value
        return dense.view(weight.shape)

    def compact_state(self, value: Tensor) -> Tensor:
        """A weight-shaped state tensor read at the active entries."""
        return value.reshape(-1)[self.structure.flat.to(value.device)].clone()


def condensed_linear(module: nn.Module) -> CondensedLinearTraining | None:
    """The condensed training runtime of ``module``, if it trains condensed."""
    forward = module.__dict__.get("forward")
    owner = getattr(forward, "__self__", None)
    return owner if isinstance(owner, CondensedLinearTraining) else None

"""``condense(model)``: an inference copy of a masked model with condensed layers.

A *chain* is a maximal run ``Linear, act..., Linear, act..., Linear`` inside an
``nn.Sequential`` (acts: element-wise activations), holding at least one masked
``nn.Linear`` (one with a ``weight_mask`` buffer). Each Linear of a chain becomes a
:class:`~sparse_agents.condensed.layers.CondensedLinear` in place, so the Sequential
keeps its layout (``policy_net[0]`` is still the first layer). Along a chain:

* a row with no active weight (an *ablated* neuron) outputs the constant
  ``act(bias)``: it is folded into the next layer's bias and dropped from both
  layers; a row whose only inputs are such constants becomes constant in turn;
* a row whose output no later row reads is dropped too;
* the layers between the chain's ends compute only the kept neurons (a compact
  output); the last one writes the full width, constants included.

A masked ``nn.Linear`` outside any chain (e.g. an SB3 ``action_net``) is condensed
alone. Masked layers that cannot be condensed (convolutions, Linear subclasses) stay
dense-masked; :func:`condense` says so with a :class:`CondenseWarning` and in the
copy's ``condense_report``.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sparse_agents.condensed.layers import CondensedLinear, PaddedCondensedLinear, index_dtype
from sparse_agents.topology import MASK_BUFFER as MASK
from sparse_agents.topology import MASKABLE

__all__ = ["ELEMENTWISE", "CondenseReport", "CondenseWarning", "condense", "condense_linear",
           "refresh"]

#: activations (and eval-time no-ops) that act element-wise, so an ablated neuron's
#: constant output can be folded forward through them
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout, nn.AlphaDropout,
)
#: masked layer types that are reported when kept dense-masked (the topology's, plus
#: Bilinear for masks users add themselves)
_MASKABLE = (*MASKABLE, nn.Bilinear)


class CondenseWarning(UserWarning):
    """A masked layer was kept dense-masked because it cannot be condensed."""


@dataclass
class LayerReport:
    name: str
    in_features: int
    out_features: int
    kept_in: int  # input columns the condensed layer reads (compact width)
    n_alive: int
    fan_in: int
    nnz: int
    layout: str
    index_dtype: str
    ablated: int  # constant rows folded away
    dropped: int  # rows nobody reads


@dataclass
class CondenseReport:
    """What :func:`condense` did: ``condensed`` layers, and masked layers ``kept`` dense
    (name, type, reason)."""

    condensed: list[LayerReport] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = ["condensed layers:"]
        for r in self.condensed:
            lines.append(
                f"  {r.name}: {r.in_features}->{r.out_features} kept {r.n_alive} rows x "
                f"fan-in {r.fan_in} ({r.layout}, {r.index_dtype}), {r.ablated} ablated "
                f"folded, {r.dropped} unused dropped, reads {r.kept_in} inputs")
        if self.kept:
            lines.append("kept dense-masked:")
            lines += [f"  {n} ({t}): {why}" for n, t, why in self.kept]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- chains
def _mask_of(linear: nn.Linear) -> Tensor:
    mask = getattr(linear, MASK, None)
    if mask is None:
        return torch.ones(linear.weight.shape, dtype=torch.bool, device=linear.weight.device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(linear.weight.shape):
        raise ValueError(f"weight_mask must be a tensor with the weight's shape "
                         f"{tuple(linear.weight.shape)}, got "
                         f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"weight_mask must be a bool tensor, got {mask.dtype}")
    return mask


def _ell(mk: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """ELL layout of a bool matrix: (row, col of each active entry in row-major order,
    position in its row, lengths, valid [n, kmax])."""
    r, c = mk.nonzero(as_tuple=True)
    n = mk.shape[0]
    lengths = mk.sum(1)
    kmax = int(lengths.max()) if n else 0
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(r.numel(), device=mk.device) - starts[r]
    valid = torch.zeros(n, kmax, dtype=torch.bool, device=mk.device)
    valid[r, pos] = True
    return r, c, pos, lengths, valid


@dataclass
class _LinkPlan:
    rows: Tensor  # kept source rows, sorted
    cols: Tensor | None  # kept source columns (None: all, first layer)
    const: Tensor  # source rows whose output is constant
    prev_const: Tensor | None  # source columns carrying constants from the previous layer
    flat: Tensor  # [n, k] flat source position of each entry (0 where padded)
    valid: Tensor  # [n, k]
    indices: Tensor  # [n, k] column in the layer's (compact) input
    lengths: Tensor
    in_width: int
    out_width: int
    ablated: int
    dropped: int


def _plan(masks: list[Tensor]) -> list[_LinkPlan]:
    n_links = len(masks)
    alive: list[Tensor] = []
    prev = None
    for m in masks:
        a = (m if prev is None else m[:, prev]).any(1)
        alive.append(a)
        prev = a
    keep = list(alive)
    for layer in range(n_links - 2, -1, -1):
        used = masks[layer + 1][keep[layer + 1]].any(0)
        keep[layer] = alive[layer] & used
    plans = []
    for layer, m in enumerate(masks):
        rows = keep[layer].nonzero().squeeze(1)
        last = layer == n_links - 1
        cols = None if layer == 0 else keep[layer - 1].nonzero().squeeze(1)
        mk = m[rows] if cols is None else m[rows][:, cols]
        r, c, pos, lengths, valid = _ell(mk)
        src_c = c if cols is None else cols[c]
        flat = torch.zeros(valid.shape, dtype=torch.long, device=m.device)
        flat[r, pos] = rows[r] * m.shape[1] + src_c
        indices = torch.zeros(valid.shape, dtype=torch.long, device=m.device)
        indices[r, pos] = c
        in_width = m.shape[1] if cols is None else cols.numel()
        plans.append(_LinkPlan(
            rows=rows, cols=cols, const=(~alive[layer]).nonzero().squeeze(1),
            prev_const=None if layer == 0 else (~alive[layer - 1]).nonzero().squeeze(1),
            flat=flat, valid=valid, indices=indices.to(index_dtype(in_width)),
            lengths=lengths.to(torch.int32), in_width=in_width,
            out_width=m.shape[0] if last else rows.numel(),
            ablated=int((~alive[layer]).sum()),
            dropped=int((alive[layer] & ~keep[layer]).sum())))
    return plans


def _apply_acts(acts: list[nn.Module], v: Tensor) -> Tensor:
    for act in acts:
        if not isinstance(act, (nn.Dropout, nn.AlphaDropout)):  # identity at inference
            v = act(v)
    return v


class _Chain:
    """Sources (weak references to the training model's Linears), the activations
    between them, and the condensed layers built from them."""

    def __init__(self, sources: list[nn.Linear], acts: list[list[nn.Module]],
                 names: list[str], kernel: str = "auto") -> None:
        self._sources = [weakref.ref(s) for s in sources]
        self.acts = acts
        self.names = names
        self.kernel = kernel
        self.layers: list[CondensedLinear] = []
        self._snap: list[Tensor] = []
        self._plans: list[_LinkPlan] = []

    # copies keep pointing at the same sources; pickles drop them
    def __deepcopy__(self, memo):
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == "_sources" else copy.deepcopy(value, memo)
        return new

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sources"] = [None] * len(self._sources)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._sources = [_dead for _ in self._sources]

    def sources(self) -> list[nn.Linear]:
        out = [ref() for ref in self._sources]
        if any(s is None for s in out):
            raise RuntimeError("the source model of this condensed copy no longer exists "
                               "(garbage-collected or unpickled copy): nothing to refresh from")
        return out

    @torch.inference_mode(False)
    def build(self) -> list[CondensedLinear]:
        """Create the condensed layers (first time)."""
        sources = self.sources()
        masks = [_mask_of(s) for s in sources]
        self._install(sources, masks, new=True)
        return self.layers

    @torch.inference_mode(False)
    def refresh(self, force: bool = False) -> bool:
        sources = self.sources()
        masks = [_mask_of(s) for s in sources]
        changed = force or len(masks) != len(self._snap) or any(
            m.shape != s.shape or m.device != s.device or not torch.equal(m, s)
            for m, s in zip(masks, self._snap, strict=True))
        if changed:
            self._install(sources, masks, new=False)
        else:
            for layer, (values, bias, fill) in zip(self.layers, self._values(sources, masks),
                                                   strict=True):
                layer._set_values(values, bias, fill)
        return changed

    def _install(self, sources, masks, new: bool) -> None:
        with torch.no_grad():
            self._plans = _plan(masks)
            self._snap = [m.clone() for m in masks]
            vals = self._values(sources, masks)
        for i, (plan, (values, bias, fill)) in enumerate(zip(self._plans, vals, strict=True)):
            last = i == len(self._plans) - 1
            varying = plan.rows.numel() > 0 and bool((plan.lengths != plan.valid.shape[1]).any())
            cls = PaddedCondensedLinear if varying else CondensedLinear
            kwargs = dict(in_features=plan.in_width, out_features=plan.out_width,
                          lengths=plan.lengths, fill=fill if last else None)
            rows = plan.rows if last else None
            if new:
                layer = cls(values, plan.indices, bias, rows, kernel=self.kernel, **kwargs)
                layer._chain, layer._link, layer.source_name = self, i, self.names[i]
                layer.contiguous_output = last
                self.layers.append(layer)
                layer.source_rows = plan.rows.to(layer.values.device)
            else:
                layer = self.layers[i]
                dev = layer.values.device
                dtype = layer.values.dtype
                layer.__class__ = cls
                layer._set_structure(
                    values.to(dev, dtype), plan.indices.to(dev), bias.to(dev, dtype),
                    None if rows is None else rows.to(dev),
                    **{**kwargs, "lengths": plan.lengths.to(dev),
                       "fill": None if kwargs["fill"] is None else kwargs["fill"].to(dev, dtype)})
                layer.source_rows = plan.rows.to(dev)

    def _values(self, sources, masks) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """(values, bias, fill) per layer, with constants folded forward."""
        out = []
        carried = None  # constant outputs of the previous layer's const rows
        with torch.no_grad():
            for i, (src, m, plan) in enumerate(zip(sources, masks, self._plans, strict=True)):
                w = src.weight.detach()
                b = src.bias.detach() if src.bias is not None else torch.zeros(
                    w.shape[0], dtype=w.dtype, device=w.device)
                beff = b.clone()
                if plan.prev_const is not None and plan.prev_const.numel():
                    wc = w[:, plan.prev_const] * m[:, plan.prev_const]
                    beff = beff + wc @ carried
                values = w.reshape(-1)[plan.flat] * plan.valid
                if i < len(sources) - 1:
                    carried = _apply_acts(self.acts[i], beff[plan.const])
                last = i == len(sources) - 1
                out.append((values, beff[plan.rows], beff if last else None))
        return out


def _dead():
    return None


def _report(chain: _Chain) -> list[LayerReport]:
    out = []
    for src_ref, name, plan, layer in zip(chain._sources, chain.names, chain._plans,
                                          chain.layers, strict=True):
        src = src_ref()
        out.append(LayerReport(
            name=name, in_features=src.in_features, out_features=src.out_features,
            kept_in=plan.in_width, n_alive=layer.n_alive, fan_in=layer.fan_in, nnz=layer.nnz,
            layout=layer.layout, index_dtype=str(layer.indices.dtype).replace("torch.", ""),
            ablated=plan.ablated, dropped=plan.dropped))
    return out


def condense_linear(linear: nn.Linear, mask: Tensor | None = None, *,
                    kernel: str = "auto") -> CondensedLinear:
    """Condense one ``nn.Linear`` (see :meth:`CondensedLinear.from_linear`)."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(linear.weight.shape):
            raise ValueError(f"mask must have the weight's shape {tuple(linear.weight.shape)}, "
                             f"got {tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
        mask = mask.to(device=linear.weight.device, dtype=torch.bool)
        linear = _MaskedView(linear, mask)
    elif getattr(linear, MASK, None) is None:
        linear = _MaskedView(linear, linear.weight.detach() != 0)
    else:
        _mask_of(linear)
    chain = _Chain([linear], [[]], ["linear"], kernel=kernel)
    layer = chain.build()[0]
    if isinstance(linear, _MaskedView):  # only weakly referenced by the chain: keep it
        object.__setattr__(layer, "_keepalive", linear)
    return layer


class _MaskedView(nn.Module):
    """A Linear seen through an explicit mask (for ``from_linear(linear, mask)``)."""

    def __init__(self, linear: nn.Linear, mask: Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "_linear", linear)
        self.register_buffer(MASK, mask)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @property
    def weight(self) -> Tensor:
        return self._linear.weight

    @property
    def bias(self) -> Tensor | None:
        return self._linear.bias


# ---------------------------------------------------------------------------- condense
class _CondenseState:
    """Kept on the copy (``model._condense_state``): its source, chains, and the names
    of the parameters/buffers that are plain copies of the source's."""

    def __init__(self, source: nn.Module, chains: list[_Chain], copied: list[str]) -> None:
        self._source = weakref.ref(source)
        self.chains = chains
        self.copied = copied

    def __deepcopy__(self, memo):
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == "_source" else copy.deepcopy(value, memo)
        return new

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_source"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._source = _dead

    def source(self) -> nn.Module:
        src = self._source()
        if src is None:
            raise RuntimeError("the source model of this condensed copy no longer exists: "
                               "nothing to refresh from")
        return src


class _Refresh:
    """``condensed.refresh()``: bound to the copy made by :func:`condense`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, force: bool = False) -> bool:
        return refresh(self.model, force=force)


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    out = dict(model.named_parameters())
    out.update(dict(model.named_buffers()))
    return out


def refresh(model: nn.Module, force: bool = False) -> bool:
    """Bring a condensed copy up to date with its source model after training.

    Parameters and buffers the copy kept as they were (e.g. a CNN feature extractor,
    SB3's ``log_std``) are copied from the source; condensed layers re-gather their
    values and folded biases, and recompute their indices only when a mask changed
    since the last refresh (or ``force``). Returns whether any structure changed.
    """
    state = getattr(model, "_condense_state", None)
    chains: list[_Chain] = []
    if isinstance(state, _CondenseState):
        src = _tensors(state.source())
        dst = _tensors(model)
        with torch.no_grad():
            for name in state.copied:
                dst[name].copy_(src[name])
        chains = list(state.chains)
    else:
        for m in model.modules():
            if isinstance(m, CondensedLinear) and m._chain is not None \
                    and all(m._chain is not c for c in chains):
                chains.append(m._chain)
    changed = False
    for chain in chains:
        changed |= chain.refresh(force=force)
    return changed


def _inference_copy(model: nn.Module) -> nn.Module:
    """A deep copy without optimizers (SB3 policies hold one; its hooks may reference
    a SparseTopology and, through it, the whole training state)."""
    memo: dict[int, object] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.optim.Optimizer):
                memo[id(value)] = None
            elif not isinstance(value, (nn.Module, Tensor)) and hasattr(value, "__dict__"):
                _memo_graph_tensors(value, memo)
    return copy.deepcopy(model, memo)


def _memo_graph_tensors(obj: object, memo: dict[int, object], depth: int = 0) -> None:
    """Non-leaf tensors (part of an autograd graph) cannot be deep-copied: copy them
    detached. SB3 policies keep such tensors in ``action_dist`` after a forward."""
    for value in vars(obj).values():
        if isinstance(value, Tensor):
            if value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
        elif depth < 2 and not isinstance(value, (nn.Module, torch.optim.Optimizer)) \
                and hasattr(value, "__dict__"):
            _memo_graph_tensors(value, memo, depth + 1)


def _runs(seq: nn.Sequential) -> list[list[tuple[str, nn.Linear, list[nn.Module]]]]:
    """Maximal Linear(-act*-Linear)* runs among ``seq``'s children: lists of
    (child key, linear, acts after it)."""
    runs, cur, acts = [], [], []
    for key, child in seq._modules.items():
        if type(child) is nn.Linear:
            if cur:
                cur[-1] = (cur[-1][0], cur[-1][1], acts)
            cur.append((key, child, []))
            acts = []
        elif cur and isinstance(child, ELEMENTWISE):
            acts.append(child)
        else:
            if cur:
                runs.append(cur)
            cur, acts = [], []
    if cur:
        runs.append(cur)
    return runs


def condense(model: nn.Module, *, kernel: str = "auto", warn: bool = True) -> nn.Module:
    """An inference copy of ``model`` whose masked linear layers are condensed.

    Works on any ``nn.Module``: ``nn.Sequential`` MLPs, SB3 policies (the
    ``mlp_extractor`` networks, ``action_net``/``value_net``, DQN's ``q_net``, actor
    and critic MLPs) and models that contain such parts; everything else is copied as
    is. The copy's outputs equal ``model``'s (float tolerance). Returns a copy of the
    same class, in eval mode without gradients, with

    * ``copy.refresh()`` (also :func:`refresh`): update it after training;
    * ``copy.condense_report``: a :class:`CondenseReport` of what was condensed and
      which masked layers were kept dense-masked (also warned about).

    Args:
        model: the (masked) model; it is not modified.
        kernel: ``"auto"`` or a kernel name forced on every condensed layer.
        warn: warn (:class:`CondenseWarning`) about masked layers kept dense-masked.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if kernel != "auto":
        from sparse_agents.condensed.kernels import KERNELS

        if kernel not in KERNELS:
            raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}")
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and getattr(m, MASK, None) is not None:
            try:
                _mask_of(m)
            except ValueError as err:
                raise ValueError(f"layer {name!r}: {err}") from None
    if type(model) is nn.Linear:
        return condense_linear(model, kernel=kernel)
    target = _inference_copy(model)
    src_mods = dict(model.named_modules())
    report = CondenseReport()
    chains: list[_Chain] = []
    done: set[str] = set()
    replace: list[tuple[nn.Module, str, CondensedLinear]] = []

    def prefix(name: str) -> str:
        return f"{name}." if name else ""

    for seq_name, seq in list(target.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for run in _runs(seq):
            names = [prefix(seq_name) + key for key, _, _ in run]
            if not any(getattr(src_mods[n], MASK, None) is not None for n in names):
                continue
            chain = _Chain([src_mods[n] for n in names], [acts for _, _, acts in run], names,
                           kernel=kernel)
            for (key, _, _), layer in zip(run, chain.build(), strict=True):
                replace.append((seq, key, layer))
            chains.append(chain)
            done.update(names)
    for name, m in list(target.named_modules()):
        if name in done or getattr(m, MASK, None) is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = target.get_submodule(parent_name) if name else None
        if type(m) is nn.Linear and parent is not None and \
                not isinstance(parent, nn.MultiheadAttention):
            chain = _Chain([src_mods[name]], [[]], [name], kernel=kernel)
            replace.append((parent, attr, chain.build()[0]))
            chains.append(chain)
            done.add(name)
        elif isinstance(m, _MASKABLE):
            why = ("a Linear subclass or a Linear its parent may use directly"
                   if isinstance(m, nn.Linear) else f"{type(m).__name__} is not condensed")
            report.kept.append((name or "<model>", type(m).__name__, why))
    for parent, attr, layer in replace:
        setattr(parent, attr, layer)
    for chain in chains:
        report.condensed += _report(chain)
    if report.kept and warn:
        kept = ", ".join(f"{n} ({t})" for n, t, _ in report.kept)
        warnings.warn(f"condense: kept dense-masked (not condensed): {kept}", CondenseWarning,
                      stacklevel=2)
    src_t, dst_t = _tensors(model), _tensors(target)
    # tensors of condensed layers are re-gathered by their chains, never copied (an
    # ablated neuron's bias shrinks the condensed bias: its name matches, its shape not)
    inside = tuple(f"{n}." for n in done)
    copied = [n for n, t in dst_t.items()
              if n in src_t and src_t[n].shape == t.shape and not n.startswith(inside)]
    target._condense_state = _CondenseState(model, chains, copied)
    target.condense_report = report
    if not hasattr(target, "refresh"):
        target.refresh = _Refresh(target)
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return target

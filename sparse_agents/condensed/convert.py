"""``condense(model)``: an inference copy of a masked model with its masked ``nn.Linear``
layers condensed, and ``refresh()`` to bring it up to date after training.
See ``docs/condensed.md`` for what is condensed, folded and kept.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sparse_agents.condensed.chain import Chain, dead_ref
from sparse_agents.condensed.kernels import KERNELS
from sparse_agents.condensed.layers import CondensedLinear, condense_linear
from sparse_agents.condensed.masks import has_mask, is_plain_linear, mask_of
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
#: said (report note and warning) when a model has nothing to condense
NO_MASK = ("no masked layer found, nothing was condensed: give the model's nn.Linear "
           "layers masks with a SparseTopology, a 'weight_mask' buffer (bool or 0/1), or "
           "torch's pruning API (torch.nn.utils.prune, torch.ao.pruning)")


class CondenseWarning(UserWarning):
    """:func:`condense` kept a masked layer dense-masked, or found nothing to condense."""


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
    """What :func:`condense` did: ``condensed`` layers, masked layers ``kept`` dense
    (name, type, reason), and ``notes`` (e.g. that the model had no masked layer)."""

    condensed: list[LayerReport] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _report(chain: Chain) -> list[LayerReport]:
    """One :class:`LayerReport` per layer of a freshly built chain."""
    out = []
    for src, name, plan, layer in zip(chain.sources(), chain.names, chain.plans,
                                      chain.layers, strict=True):
        out.append(LayerReport(
            name=name, in_features=src.in_features, out_features=src.out_features,
            kept_in=plan.in_width, n_alive=layer.n_alive, fan_in=layer.fan_in, nnz=layer.nnz,
            layout=layer.layout, index_dtype=str(layer.indices.dtype).replace("torch.", ""),
            ablated=plan.ablated, dropped=plan.dropped))
    return out


# ---------------------------------------------------------------------------- condense
class _CondenseState:
    """Kept on the copy (``model._condense_state``): its source, chains, and the names
    of the parameters/buffers that are plain copies of the source's."""

    def __init__(self, source: nn.Module, chains: list[Chain], copied: list[str]) -> None:
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
        self._source = dead_ref

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
    chains: list[Chain] = []
    if isinstance(state, _CondenseState):
        src = _tensors(state.source())
        dst = _tensors(model)
        with torch.no_grad():
            for name in state.copied:
                dst[name].copy_(src[name])
        chains = list(state.chains)
    else:
        for m in model.modules():
            if isinstance(m, CondensedLinear) and m.chain is not None \
                    and all(m.chain is not c for c in chains):
                chains.append(m.chain)
    changed = False
    for chain in chains:
        changed |= chain.refresh(force=force)
    return changed


def _inference_copy(model: nn.Module) -> nn.Module:
    """A deep copy without optimizers (SB3 policies hold one; its hooks may reference
    a SparseTopology and, through it, the whole training state), with graph tensors
    copied detached (see :func:`_memo_graph_tensors`)."""
    memo: dict[int, object] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.optim.Optimizer):
                memo[id(value)] = None
            elif isinstance(value, Tensor):
                if value.grad_fn is not None:  # torch.nn.utils.prune's ``weight``
                    memo[id(value)] = value.detach().clone()
            elif not isinstance(value, nn.Module) and hasattr(value, "__dict__"):
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
        if is_plain_linear(child):
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


# ---------------------------------------------------------------------------- condense steps
@dataclass
class _Found:
    """What the steps of :func:`condense` collect on the copy: chains built, layers to
    swap in (parent, attribute, layer), names of the condensed Linears, layers kept."""

    chains: list[Chain] = field(default_factory=list)
    swaps: list[tuple[nn.Module, str, nn.Module]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    kept: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, chain: Chain, places: list[tuple[nn.Module, str]]) -> None:
        """Build ``chain``; its layers go to ``places`` (parent, attribute) later."""
        for (parent, attr), layer in zip(places, chain.build(), strict=True):
            self.swaps.append((parent, attr, layer))
        self.chains.append(chain)
        self.done.update(chain.names)


def _check_arguments(model: nn.Module, kernel: str) -> None:
    """``model`` is a module, ``kernel`` is known, and every Linear's mask is valid."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if kernel != "auto" and kernel not in KERNELS:
        raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}")
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and has_mask(m):
            try:
                mask_of(m)
            except ValueError as err:
                raise ValueError(f"layer {name!r}: {err}") from None


def _condense_sequentials(target: nn.Module, src_mods: dict[str, nn.Module], kernel: str,
                          found: _Found) -> None:
    """Condense every Linear run holding a masked Linear inside an ``nn.Sequential``."""
    for seq_name, seq in list(target.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for run in _runs(seq):
            names = [f"{seq_name}.{key}" if seq_name else key for key, _, _ in run]
            if not any(has_mask(src_mods[n]) for n in names):
                continue
            chain = Chain([src_mods[n] for n in names], [acts for _, _, acts in run], names,
                          layer_type=CondensedLinear, kernel=kernel)
            found.add(chain, [(seq, key) for key, _, _ in run])


def _condense_standalone(target: nn.Module, src_mods: dict[str, nn.Module], kernel: str,
                         found: _Found) -> None:
    """Condense the remaining masked Linears alone; note masked layers kept dense."""
    for name, m in list(target.named_modules()):
        if name in found.done or not has_mask(m):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = target.get_submodule(parent_name) if name else None
        if is_plain_linear(m) and parent is not None and \
                not isinstance(parent, nn.MultiheadAttention):
            chain = Chain([src_mods[name]], [[]], [name], layer_type=CondensedLinear,
                          kernel=kernel)
            found.add(chain, [(parent, attr)])
        elif isinstance(m, _MASKABLE):
            why = ("a Linear subclass or a Linear its parent may use directly"
                   if isinstance(m, nn.Linear) else f"{type(m).__name__} is not condensed")
            found.kept.append((name or "<model>", type(m).__name__, why))


def _make_report(found: _Found) -> CondenseReport:
    """The :class:`CondenseReport` of what was condensed and kept."""
    report = CondenseReport(kept=found.kept)
    for chain in found.chains:
        report.condensed += _report(chain)
    if not report.condensed and not report.kept:
        report.notes.append(NO_MASK)
    return report


def _warn(report: CondenseReport) -> None:
    """A :class:`CondenseWarning` for layers kept dense-masked and for each note."""
    if report.kept:
        kept = ", ".join(f"{n} ({t})" for n, t, _ in report.kept)
        warnings.warn(f"condense: kept dense-masked (not condensed): {kept}", CondenseWarning,
                      stacklevel=3)
    for note in report.notes:
        warnings.warn(f"condense: {note}", CondenseWarning, stacklevel=3)


def _attach_state(target: nn.Module, model: nn.Module, found: _Found,
                  report: CondenseReport) -> None:
    """Give the copy its source, chains, report and ``refresh``."""
    src_t, dst_t = _tensors(model), _tensors(target)
    # tensors of condensed layers are re-gathered by their chains, never copied (an
    # ablated neuron's bias shrinks the condensed bias: its name matches, its shape not)
    inside = tuple(f"{n}." for n in found.done)
    copied = [n for n, t in dst_t.items()
              if n in src_t and src_t[n].shape == t.shape and not n.startswith(inside)]
    target._condense_state = _CondenseState(model, found.chains, copied)
    target.condense_report = report
    if not hasattr(target, "refresh"):
        target.refresh = _Refresh(target)


def _freeze(target: nn.Module) -> nn.Module:
    """Eval mode, no parameter requires grad."""
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def condense(model: nn.Module, *, kernel: str = "auto", warn: bool = True) -> nn.Module:
    """An inference copy of ``model`` whose masked linear layers are condensed.

    Works on any ``nn.Module``: ``nn.Sequential`` MLPs, SB3 policies (the
    ``mlp_extractor`` networks, ``action_net``/``value_net``, DQN's ``q_net``, actor
    and critic MLPs) and models that contain such parts; everything else is copied as
    is. Masks are ``weight_mask`` buffers (``SparseTopology``, ``torch.nn.utils.prune``)
    or parametrizations holding a ``mask`` (``torch.ao.pruning``). The copy's outputs
    equal ``model``'s (float tolerance). Returns a copy of the same class, in eval mode
    without gradients, with

    * ``copy.refresh()`` (also :func:`refresh`): update it after training;
    * ``copy.condense_report``: a :class:`CondenseReport` of what was condensed and
      which masked layers were kept dense-masked (also warned about).

    Args:
        model: the (masked) model; it is not modified.
        kernel: ``"auto"`` or a kernel name forced on every condensed layer.
        warn: warn (:class:`CondenseWarning`) about masked layers kept dense-masked and
            about a model without any masked layer.
    """
    _check_arguments(model, kernel)
    if is_plain_linear(model):
        return condense_linear(model, kernel=kernel)
    target = _inference_copy(model)
    src_mods = dict(model.named_modules())
    found = _Found()
    _condense_sequentials(target, src_mods, kernel, found)
    _condense_standalone(target, src_mods, kernel, found)
    for parent, attr, layer in found.swaps:
        setattr(parent, attr, layer)
    report = _make_report(found)
    if warn:
        _warn(report)
    _attach_state(target, model, found, report)
    return _freeze(target)

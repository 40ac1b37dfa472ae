"""Chains of masked source ``nn.Linear`` layers and the condensed layers built from them:
which rows and columns survive, constants folded forward, values re-gathered on refresh.

The layer class is passed in (``layer_type``), so that this module does not import
:mod:`~sparse_agents.condensed.layers` (which imports it for ``from_linear``); the layers
are built and changed through its public methods (``for_structure``, ``bind``,
``set_values``, ``restructure``, ``keep_alive``).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparse_agents.condensed.masks import bias_of, has_mask, mask_of, weight_of
from sparse_agents.topology import MASK_BUFFER as MASK

__all__ = ["INT16_LIMIT", "Chain", "LinkPlan", "MaskedView", "condense_one", "dead_ref",
           "index_dtype"]

INT16_LIMIT = 32768


def index_dtype(in_features: int) -> torch.dtype:
    """``int16`` when every column index fits (``in_features < 32768``), else ``int32``."""
    return torch.int16 if in_features < INT16_LIMIT else torch.int32


def dead_ref() -> None:
    """Stands in for a weak reference whose target is gone (after unpickling)."""
    return None


# ---------------------------------------------------------------------------- planning
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
class LinkPlan:
    """How one source layer of a chain is condensed."""

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


def _alive_and_kept(masks: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: rows with an active weight on a live input (*alive*), and alive rows
    that a later layer reads (*kept*; every alive row of the last layer)."""
    alive: list[Tensor] = []
    prev = None
    for m in masks:
        a = (m if prev is None else m[:, prev]).any(1)
        alive.append(a)
        prev = a
    keep = list(alive)
    for layer in range(len(masks) - 2, -1, -1):
        used = masks[layer + 1][keep[layer + 1]].any(0)
        keep[layer] = alive[layer] & used
    return alive, keep


def plan_chain(masks: list[Tensor]) -> list[LinkPlan]:
    """The :class:`LinkPlan` of every layer of a chain with these (bool) masks."""
    alive, keep = _alive_and_kept(masks)
    plans = []
    for layer, m in enumerate(masks):
        rows = keep[layer].nonzero().squeeze(1)
        last = layer == len(masks) - 1
        cols = None if layer == 0 else keep[layer - 1].nonzero().squeeze(1)
        mk = m[rows] if cols is None else m[rows][:, cols]
        r, c, pos, lengths, valid = _ell(mk)
        src_c = c if cols is None else cols[c]
        flat = torch.zeros(valid.shape, dtype=torch.long, device=m.device)
        flat[r, pos] = rows[r] * m.shape[1] + src_c
        indices = torch.zeros(valid.shape, dtype=torch.long, device=m.device)
        indices[r, pos] = c
        in_width = m.shape[1] if cols is None else cols.numel()
        plans.append(LinkPlan(
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


# ---------------------------------------------------------------------------- chain
class Chain:
    """Sources (weak references to the training model's Linears), the activations
    between them, and the condensed layers built from them.

    ``layer_type``: :class:`~sparse_agents.condensed.layers.CondensedLinear` (its
    ``for_structure`` picks the constant or padded layout)."""

    def __init__(self, sources: list[nn.Linear], acts: list[list[nn.Module]],
                 names: list[str], *, layer_type: type[nn.Module],
                 kernel: str = "auto") -> None:
        self._sources = [weakref.ref(s) for s in sources]
        self.acts = acts
        self.names = names
        self.kernel = kernel
        self.layer_type = layer_type
        self.layers: list[nn.Module] = []
        self._snap: list[Tensor] = []
        self._plans: list[LinkPlan] = []

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
        self._sources = [dead_ref for _ in self._sources]

    @property
    def plans(self) -> list[LinkPlan]:
        """The plan of each layer, from the last build or structural refresh."""
        return self._plans

    def sources(self) -> list[nn.Linear]:
        out = [ref() for ref in self._sources]
        if any(s is None for s in out):
            raise RuntimeError("the source model of this condensed copy no longer exists "
                               "(garbage-collected or unpickled copy): nothing to refresh from")
        return out

    @torch.inference_mode(False)
    def build(self) -> list[nn.Module]:
        """Create the condensed layers (first time)."""
        sources = self.sources()
        masks = [mask_of(s) for s in sources]
        self._install(sources, masks, new=True)
        return self.layers

    @torch.inference_mode(False)
    def refresh(self, force: bool = False) -> bool:
        """Re-gather values; rebuild the structure if a mask changed (or ``force``).
        Returns whether the structure was rebuilt."""
        sources = self.sources()
        masks = [mask_of(s) for s in sources]
        changed = force or len(masks) != len(self._snap) or any(
            m.shape != s.shape or m.device != s.device or not torch.equal(m, s)
            for m, s in zip(masks, self._snap, strict=True))
        if changed:
            self._install(sources, masks, new=False)
        else:
            for layer, (values, bias, fill) in zip(self.layers, self._values(sources, masks),
                                                   strict=True):
                layer.set_values(values, bias, fill)
        return changed

    def _install(self, sources, masks, new: bool) -> None:
        with torch.no_grad():
            self._plans = plan_chain(masks)
            self._snap = [m.clone() for m in masks]
            vals = self._values(sources, masks)
        for i, (plan, (values, bias, fill)) in enumerate(zip(self._plans, vals, strict=True)):
            last = i == len(self._plans) - 1
            kwargs = dict(in_features=plan.in_width, out_features=plan.out_width,
                          lengths=plan.lengths, fill=fill if last else None)
            rows = plan.rows if last else None
            if new:
                layer = self.layer_type.for_structure(values, plan.indices, bias, rows,
                                                      kernel=self.kernel, **kwargs)
                layer.bind(self, i, self.names[i], plan.rows)
                layer.contiguous_output = last
                self.layers.append(layer)
            else:
                self.layers[i].restructure(values, plan.indices, bias, rows,
                                           source_rows=plan.rows, **kwargs)

    def _values(self, sources, masks) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """(values, bias, fill) per layer, with constants folded forward."""
        out = []
        carried = None  # constant outputs of the previous layer's const rows
        with torch.no_grad():
            for i, (src, m, plan) in enumerate(zip(sources, masks, self._plans, strict=True)):
                w = weight_of(src)
                b = bias_of(src)
                if b is None:
                    b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
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


# ---------------------------------------------------------------------------- one layer
class MaskedView(nn.Module):
    """A Linear seen through an explicit mask (for ``from_linear(linear, mask)``)."""

    def __init__(self, linear: nn.Linear, mask: Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "_linear", linear)
        self.register_buffer(MASK, mask)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @property
    def weight(self) -> Tensor:
        return weight_of(self._linear)

    @property
    def bias(self) -> Tensor | None:
        return bias_of(self._linear)


def condense_one(linear: nn.Linear, mask: Tensor | None, *, layer_type: type[nn.Module],
                 kernel: str = "auto") -> nn.Module:
    """Condense one ``nn.Linear`` through ``mask``, its own mask, or its weight's nonzeros."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    shape = tuple(linear.weight.shape)
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != shape:
            raise ValueError(f"mask must have the weight's shape {shape}, "
                             f"got {tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
        linear = MaskedView(linear, mask.to(device=linear.weight.device, dtype=torch.bool))
    elif not has_mask(linear):
        linear = MaskedView(linear, linear.weight.detach() != 0)
    else:
        mask_of(linear)  # validate
    chain = Chain([linear], [[]], ["linear"], layer_type=layer_type, kernel=kernel)
    layer = chain.build()[0]
    if isinstance(linear, MaskedView):  # only weakly referenced by the chain: keep it
        layer.keep_alive(linear)
    return layer

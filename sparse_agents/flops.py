"""Forward and training FLOPs of a sparse model, counting the work a condensed model does.

>>> from sparse_agents.flops import flops, training_flops_per_step
>>> report = flops(model, (64,))          # one forward of a zero input, batch 1
>>> report.sparse, report.dense, report.ratio
>>> training_flops_per_step(model, (64,), "rigl", delta_t=100)

Counting rules (see docs/metrics.md):

* Only ``nn.Linear`` and ``nn.Conv1d/2d/3d`` calls are counted (activations,
  normalisation, pooling and attention arithmetic are ignored), as in Evci et al.
  (RigL, appendix "FLOPs"). A multiply-add is 2 FLOPs.
* A layer's work per output position (per sample for a Linear, per output pixel for a
  Conv) is ``2 * active weights + alive rows`` (the bias adds; no bias: no adds). A row
  (output neuron / channel) with no active weight does no work: a condensed model
  folds its constant output ``act(bias)`` away.
* Active weights: the ``weight_mask`` buffer (or a ``torch.ao.pruning``
  parametrization); a layer without a mask is dense. Under :class:`TaskMasks`
  (``weight_owner`` buffers), the weights the current view computes with: the mask
  plus the owned weights, less those the view hides (e.g. later tasks' weights while
  evaluating an earlier task, or every other task's without transfer). Avalanche's
  PackNet layers (a ``wrappee`` Linear/Conv with a ``visible_mask``) count their
  visible weights.
* Constant inputs: when a Linear reads the output of another Linear directly or through
  element-wise activations (``sparse_agents.condensed.ELEMENTWISE``, seen through
  forward hooks), its weights on the producer's dead rows read a constant, which a
  condensed model folds into the bias: they are not counted (and a row whose only
  inputs are constants is dead in turn). Convolutions are not folded (zero padding
  makes a constant channel non-constant at the borders).
* Rows whose output no later layer reads are still counted (a condensed chain drops
  them too; they are rare), so the count is an upper bound on the condensed model's.

Training FLOPs per step follow Evci et al.: forward ``F_s``, backward ``2 F_s`` (sparse
gradients); updaters that grow by the dense gradient (``spec.needs_grad``: RigL, SRigL)
compute it at every update step (``2 F_s + F_d`` for that backward), so on average
``(3 F_s delta_t + 2 F_s + F_d) / (delta_t + 1)``; static, SET and random growth
``3 F_s``; the dense baseline ``3 F_d``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sparse_agents.condensed.convert import ELEMENTWISE
from sparse_agents.condensed.masks import mask_of
from sparse_agents.task_masks import FREE, OWNER_BUFFER, task_records
from sparse_agents.topology import MASKABLE
from sparse_agents.updaters import get_updater

__all__ = ["FlopsReport", "LayerFlops", "active_masks", "flops", "training_flops",
           "training_flops_per_step"]

Forward = Callable[[nn.Module, Any], Any]


@dataclass(frozen=True)
class LayerFlops:
    """One counted layer (its calls summed).

    Attributes:
        name: module name in the model.
        kind: ``"linear"`` or ``"conv"``.
        calls: how many times the forward called it.
        positions: output positions summed over calls (1 per call for a Linear on one
            sample; output pixels for a Conv).
        weights: weights of the layer.
        active: weights counted (active, not reading a constant input).
        rows: output neurons / channels.
        alive: rows that do work (the most over calls).
        dense: FLOPs of the dense layer (every weight, every bias add).
        sparse: FLOPs counted for the sparse layer.
    """

    name: str
    kind: str
    calls: int
    positions: int
    weights: int
    active: int
    rows: int
    alive: int
    dense: int
    sparse: int


@dataclass(frozen=True)
class FlopsReport:
    """Forward FLOPs of one call of the model: ``dense`` (the same model with every
    weight active), ``sparse`` and per-layer rows."""

    dense: int
    sparse: int
    layers: tuple[LayerFlops, ...]

    @property
    def ratio(self) -> float:
        """``sparse / dense`` (1.0 for a model without counted layers)."""
        return self.sparse / self.dense if self.dense else 1.0

    def training_per_step(self, updater: str, delta_t: int) -> float:
        """Training FLOPs per step and sample (see :func:`training_flops`)."""
        return training_flops(self.sparse, self.dense, updater, delta_t)

    def to_dict(self) -> dict[str, Any]:
        """``dense``, ``sparse``, ``ratio`` and ``layers`` (a list of dicts)."""
        return {"dense": self.dense, "sparse": self.sparse, "ratio": self.ratio,
                "layers": [asdict(x) for x in self.layers]}

    def __str__(self) -> str:
        lines = [f"{'layer':30s} {'calls':>5s} {'active':>9s} {'alive':>11s} "
                 f"{'dense':>12s} {'sparse':>12s}"]
        for x in self.layers:
            lines.append(f"{x.name[-30:]:30s} {x.calls:5d} {x.active:9d} "
                         f"{x.alive:5d}/{x.rows:<5d} {x.dense:12d} {x.sparse:12d}")
        lines.append(f"total: sparse {self.sparse} / dense {self.dense} FLOPs "
                     f"(ratio {self.ratio:.4f})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- masks
def _counted(module: nn.Module) -> tuple[nn.Module, Tensor | None] | None:
    """``(layer holding the weight, explicit mask or None)`` if ``module`` is counted:
    a Linear/Conv, or a PackNet-style wrapper (``wrappee`` + ``visible_mask``)."""
    wrappee = getattr(module, "wrappee", None)
    visible = getattr(module, "visible_mask", None)
    if isinstance(wrappee, MASKABLE) and isinstance(visible, Tensor):
        return wrappee, visible.bool()
    if isinstance(module, MASKABLE) and isinstance(getattr(module, "weight", None), Tensor):
        return module, None
    return None


def _hidden_views(model: nn.Module) -> dict[str, Tensor]:
    """Parameter name (as ``TaskMasks`` named it) -> visible mask of every weight the
    current ``TaskMasks`` view hides entries of."""
    out: dict[str, Tensor] = {}
    for record in task_records(model):
        out.update(record.visible)
    return out


def _visible_for(name: str, views: Mapping[str, Tensor], shape: torch.Size) -> Tensor | None:
    """The view's visible mask of module ``name``'s weight: the key equal to its
    parameter name, or (model wrapped or a sub-model passed) one ending the other."""
    key = f"{name}.weight" if name else "weight"
    if key in views:
        return views[key]
    hits = [v for k, v in views.items()
            if (key.endswith("." + k) or k.endswith("." + key)) and v.shape == shape]
    return hits[0] if len(hits) == 1 else None


def _active(name: str, layer: nn.Module, explicit: Tensor | None,
            views: Mapping[str, Tensor]) -> Tensor:
    """The weights ``layer`` (module ``name``) computes with in the current view."""
    if explicit is not None:
        return explicit
    mask = mask_of(layer)
    owner = getattr(layer, OWNER_BUFFER, None)
    if isinstance(owner, Tensor):
        mask = mask | (owner != FREE)
        visible = _visible_for(name, views, layer.weight.shape)
        if visible is not None:
            mask = mask & visible.to(mask.device)
    return mask


@torch.no_grad()
def active_masks(model: nn.Module) -> dict[str, Tensor]:
    """Module name -> bool mask of the weights its forward computes with, for every
    Linear/Conv of ``model`` (and PackNet wrapper); all True for an unmasked layer.
    Under ``TaskMasks`` this is the current view's (see the module docstring)."""
    views = _hidden_views(model)
    wrapped = set()
    out: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        found = _counted(module)
        if found is None or id(module) in wrapped:
            continue
        layer, explicit = found
        if layer is not module:
            wrapped.add(id(layer))
        out[name] = _active(name, layer, explicit, views)
    return out


# ---------------------------------------------------------------------------- forward
@dataclass
class _Call:
    name: str
    layer: nn.Module
    kind: str
    positions: int
    source: int | None  # index of the Linear call whose output this call reads


def _default_forward(model: nn.Module, x: Any) -> Any:
    return model(x)


def _dummy(model: nn.Module, input_shape: Sequence[int]) -> Tensor:
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), torch.zeros(()))
    dtype = ref.dtype if ref.dtype.is_floating_point else torch.get_default_dtype()
    return torch.zeros((1, *(int(s) for s in input_shape)), dtype=dtype, device=ref.device)


def _trace(model: nn.Module, inputs: Any, forward: Forward) -> tuple[list[_Call], dict]:
    """Run ``forward(model, inputs)`` once in eval mode without gradients, with hooks
    on the counted layers and on element-wise activations; restore every module's
    training flag. Returns the calls in order and ``{name: counted module}``."""
    names = {}
    counted: dict[str, tuple[nn.Module, Tensor | None]] = {}
    hooked: dict[str, nn.Module] = {}
    wrapped = set()
    for name, module in model.named_modules():
        found = _counted(module)
        if found is not None and id(module) not in wrapped:
            counted[name] = found
            hooked[name] = module
            if found[0] is not module:
                wrapped.add(id(found[0]))
        names[id(module)] = name
    calls: list[_Call] = []
    keep: list[Any] = []  # outputs stay alive so that their ids are not reused
    produced: dict[int, int] = {}  # id(tensor) -> index of the Linear call it comes from

    def layer_hook(module, args, output) -> None:
        name = names[id(module)]
        layer, _ = counted[name]
        if not isinstance(output, Tensor):
            return
        keep.append(output)
        linear = isinstance(layer, nn.Linear)
        rows = layer.weight.shape[0]
        positions = output.numel() // rows if rows else 0
        source = None
        x = args[0] if args else None
        if linear and isinstance(x, Tensor):
            src = produced.get(id(x))
            if src is not None and calls[src].layer.weight.shape[0] == layer.weight.shape[1]:
                source = src
        calls.append(_Call(name, layer, "linear" if linear else "conv", positions, source))
        if linear:
            produced[id(output)] = len(calls) - 1

    def act_hook(module, args, output) -> None:
        x = args[0] if args else None
        if isinstance(x, Tensor) and isinstance(output, Tensor) and id(x) in produced:
            keep.append(output)
            produced[id(output)] = produced[id(x)]

    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for module in model.modules():
            if names[id(module)] in counted and id(module) not in wrapped:
                handles.append(module.register_forward_hook(layer_hook))
            elif isinstance(module, ELEMENTWISE):
                handles.append(module.register_forward_hook(act_hook))
        model.eval()
        with torch.no_grad():
            forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return calls, hooked


def flops(model: nn.Module, input_shape: Sequence[int] | None = None, *,
          inputs: Any = None, forward: Forward | None = None) -> FlopsReport:
    """Forward FLOPs of ``model`` on one sample, counting active weights only.

    Runs one forward (eval mode, no gradients, training flags restored) with hooks, on
    ``torch.zeros(1, *input_shape)`` (in the model's dtype and device), or on
    ``inputs`` when given (then the count is for that whole call).

    Args:
        model: any module; its Linear/Conv calls are counted (see the module docstring).
        input_shape: the shape of one sample, without the batch dimension.
        inputs: the forward's input instead (e.g. an observation dict).
        forward: ``forward(model, inputs)`` instead of ``model(inputs)`` (e.g. for a
            multi-task model: ``lambda m, x: m(x, task_label)``).

    Returns:
        a :class:`FlopsReport`: ``dense``, ``sparse``, ``ratio``, ``layers``.
    """
    if inputs is None:
        if input_shape is None:
            raise ValueError("flops needs input_shape (one sample's shape) or inputs")
        if isinstance(input_shape, numbers.Integral):
            input_shape = (int(input_shape),)
        inputs = _dummy(model, input_shape)
    calls, hooked = _trace(model, inputs, forward or _default_forward)
    # masks as they are after the forward (a PackNet forward selects its task's mask)
    views = _hidden_views(model)
    called = {call.name for call in calls}
    masks = {name: _active(name, *_counted(module), views) for name, module in hooked.items()
             if name in called}
    totals: dict[str, dict[str, int]] = {}
    dead_rows: list[Tensor] = []  # per call: rows with a constant output
    for call in calls:
        layer = call.layer
        mask = masks[call.name].reshape(layer.weight.shape[0], -1)
        rows, weights = mask.shape[0], mask.numel()
        if call.source is not None:
            constant = dead_rows[call.source].to(mask.device)
            mask = mask & ~constant.unsqueeze(0)
        fan_in = mask.sum(dim=1, dtype=torch.int64)  # (bool reductions are slow on CPU)
        alive = fan_in > 0
        dead_rows.append(~alive)
        n_alive = int(alive.sum(dtype=torch.int64))
        active = int(fan_in.sum())
        bias = getattr(layer, "bias", None) is not None
        dense = call.positions * (2 * weights + (rows if bias else 0))
        sparse = call.positions * (2 * active + (n_alive if bias else 0))
        t = totals.setdefault(call.name, {"kind": call.kind, "calls": 0, "positions": 0,
                                          "weights": weights, "active": 0, "rows": rows,
                                          "alive": 0, "dense": 0, "sparse": 0})
        t["calls"] += 1
        t["positions"] += call.positions
        t["active"] = max(t["active"], active)
        t["alive"] = max(t["alive"], n_alive)
        t["dense"] += dense
        t["sparse"] += sparse
    layers = tuple(LayerFlops(name=name, **t) for name, t in totals.items())
    return FlopsReport(dense=sum(x.dense for x in layers), sparse=sum(x.sparse for x in layers),
                       layers=layers)


# ---------------------------------------------------------------------------- training
def training_flops(sparse: float, dense: float, updater: str, delta_t: int) -> float:
    """Training FLOPs per step (and sample) from forward FLOPs, as Evci et al. count
    them: ``3 F_s`` for updaters without gradient-based growth, ``(3 F_s delta_t +
    2 F_s + F_d) / (delta_t + 1)`` for RigL-style growth (``spec.needs_grad``), and
    ``3 F_d`` for ``updater="dense"``."""
    spec = get_updater(updater, dense=True)
    if isinstance(delta_t, bool) or not isinstance(delta_t, numbers.Integral) or delta_t < 1:
        raise ValueError(f"delta_t must be an integer >= 1, got {delta_t!r}")
    if spec is None:
        return 3.0 * dense
    if not spec.needs_grad:
        return 3.0 * sparse
    return (3.0 * sparse * delta_t + 2.0 * sparse + dense) / (delta_t + 1)


def training_flops_per_step(model: nn.Module, input_shape: Sequence[int] | None = None,
                            updater: str = "srigl", delta_t: int = 100, *, inputs: Any = None,
                            forward: Forward | None = None) -> float:
    """Average training FLOPs per optimizer step and sample of ``model`` trained with
    ``updater`` every ``delta_t`` steps (multiply by the batch size for a step's);
    forward counted by :func:`flops` (same arguments)."""
    get_updater(updater, dense=True)
    report = flops(model, input_shape, inputs=inputs, forward=forward)
    return training_flops(report.sparse, report.dense, updater, delta_t)

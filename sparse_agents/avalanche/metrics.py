"""Avalanche metrics of a sparse model: density, ITOP rate, alive neurons, sparse FLOPs
and (per-task masks) each task's capacity, for :class:`EvaluationPlugin`.

>>> evaluator = EvaluationPlugin(accuracy_metrics(experience=True),
...                              *sparsity_metrics(), loggers=[InteractiveLogger()])

Every metric reads the strategy's model: masks are the ``weight_mask`` buffers, task
owners the ``weight_owner`` buffers (``FREE = -1``, else an index into the task list),
so they work with :class:`DSTPlugin`, :class:`TaskMaskPlugin` or masks installed by
other means. The ITOP rate needs the topology's record of ever-active weights: it is
read from a plugin of the strategy that has a ``topology`` (or ``task_masks.topology``)
and skipped without one. Values describe the forward as it runs when they are
emitted: after each training epoch the training view, after each evaluation
experience that experience's task view (under task masks, the weights that task
computes with). Names follow Avalanche's (``MAC_Epoch``, ``Top1_Acc_Exp``)::

    Density_Epoch/train_phase/train_stream/Task000
    Density_Exp/eval_phase/test_stream/Task001/Exp001
    ITOP_Epoch/...                       (share of weights ever active)
    AliveNeurons_Epoch/.../<layer>       (rows with an active weight, per masked layer)
    FLOPs_Epoch/...                      (sparse forward FLOPs per sample)
    FLOPs_Epoch/.../dense, .../ratio     (the dense model's, and sparse / dense)
    Capacity_Epoch/.../task<id>, .../free  (share of the masked weights; sums to 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sparse_agents.flops import active_masks
from sparse_agents.flops import flops as count_flops
from sparse_agents.task_masks import FREE, OWNER_BUFFER, task_records
from sparse_agents.topology import MASK_BUFFER, SparseTopology

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", module="qpsolvers.*")
    from avalanche.evaluation import PluginMetric
    from avalanche.evaluation.metric_results import MetricValue
    from avalanche.evaluation.metric_utils import get_metric_name, phase_and_task
    from avalanche.models.utils import avalanche_forward

__all__ = ["QUANTITIES", "SparsityPluginMetric", "find_topology", "flops_metrics",
           "sparsity_metrics"]

#: quantity -> metric name prefix
QUANTITIES = {"density": "Density", "itop": "ITOP", "alive": "AliveNeurons", "flops": "FLOPs",
              "capacity": "Capacity"}
_SUFFIX = {"epoch": "Epoch", "experience": "Exp"}

Value = float | dict[str, float] | None


def find_topology(strategy) -> SparseTopology | None:
    """The topology of a plugin of ``strategy`` (``plugin.topology`` or
    ``plugin.task_masks.topology``), or ``None``."""
    for plugin in getattr(strategy, "plugins", None) or ():
        topo = getattr(plugin, "topology", None)
        if topo is None:
            topo = getattr(getattr(plugin, "task_masks", None), "topology", None)
        if isinstance(topo, SparseTopology):
            return topo
    return None


def _masked(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, MASK_BUFFER, None), Tensor)]


def _density(model: nn.Module, strategy) -> Value:
    masked = _masked(model)
    if not masked:
        return None
    active = active_masks(model)
    total = sum(m.weight.numel() for _, m in masked)
    return sum(int(active[n].sum(dtype=torch.int64)) for n, _ in masked) / total


def _alive(model: nn.Module, strategy) -> Value:
    masked = _masked(model)
    if not masked:
        return None
    active = active_masks(model)
    out = {}
    for name, module in masked:
        rows = active[name].reshape(module.weight.shape[0], -1)
        out[name] = float((rows.sum(dim=1, dtype=torch.int64) > 0).sum(dtype=torch.int64))
    return out


def _itop(model: nn.Module, strategy) -> Value:
    topo = find_topology(strategy)
    if topo is None or not topo.layers:
        return None
    ever = sum(int(x.ever_active.sum(dtype=torch.int64)) for x in topo.layers)
    return ever / sum(x.ever_active.numel() for x in topo.layers)


def _task_list(model: nn.Module) -> tuple[list[int], int | None]:
    records = task_records(model)
    if not records:
        return [], None
    return list(records[0].task_ids), records[0].in_progress


def _capacity(model: nn.Module, strategy) -> Value:
    owned = [(m, getattr(m, OWNER_BUFFER)) for _, m in model.named_modules()
             if isinstance(getattr(m, OWNER_BUFFER, None), Tensor)]
    if not owned:
        return None
    ids, training = _task_list(model)
    total = sum(o.numel() for _, o in owned)
    counts: dict[int, int] = {}
    free = in_training = 0
    for module, owner in owned:
        codes, n = torch.unique(owner, return_counts=True)
        for code, count in zip(codes.tolist(), n.tolist(), strict=True):
            if code != FREE:
                counts[code] = counts.get(code, 0) + count
        mask = getattr(module, MASK_BUFFER, None)
        unowned = owner == FREE
        claimed = int((unowned & mask).sum(dtype=torch.int64)) if mask is not None else 0
        in_training += claimed
        free += int(unowned.sum(dtype=torch.int64)) - claimed
    out = {}
    for idx in sorted(counts):
        label = f"task{ids[idx]}" if 0 <= idx < len(ids) else f"index{idx}"
        out[label] = counts[idx] / total
    if in_training or training is not None:
        label = f"task{training}" if training is not None else "training"
        out[label] = out.get(label, 0.0) + in_training / total
    out["free"] = free / total
    return out


class SparsityPluginMetric(PluginMetric[Any]):
    """One sparsity quantity of the strategy's model, emitted after every training
    epoch (``emit_at="epoch"``) or every evaluation experience (``"experience"``).

    Args:
        quantity: a key of :data:`QUANTITIES`.
        emit_at: ``"epoch"`` or ``"experience"``.
        input_shape: one sample's shape for the FLOPs forward (default: that of the
            strategy's current mini-batch).
    """

    def __init__(self, quantity: str, emit_at: str = "experience",
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {tuple(QUANTITIES)}, got {quantity!r}")
        if emit_at not in _SUFFIX:
            raise ValueError(f"emit_at must be 'epoch' or 'experience', got {emit_at!r}")
        self.quantity = quantity
        self.emit_at = emit_at
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._value: Value = None

    def __str__(self) -> str:
        return f"{QUANTITIES[self.quantity]}_{_SUFFIX[self.emit_at]}"

    def result(self) -> Value:
        return self._value

    def reset(self) -> None:
        self._value = None

    # ------------------------------------------------------------------ computing
    def _flops(self, model: nn.Module, strategy) -> Value:
        shape = self.input_shape
        if shape is None:
            x = getattr(strategy, "mb_x", None)
            if not isinstance(x, Tensor) or x.dim() < 1:
                return None
            shape = tuple(x.shape[1:])
        _, task = phase_and_task(strategy)
        label = 0 if task is None else int(task)

        def forward(m: nn.Module, x: Tensor):
            labels = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
            return avalanche_forward(m, x, labels)

        report = count_flops(model, shape, forward=forward)
        return {"": float(report.sparse), "dense": float(report.dense), "ratio": report.ratio}

    def compute(self, strategy) -> Value:
        """The quantity now (``None``: nothing to report, e.g. no masks yet)."""
        model = strategy.model
        if self.quantity == "flops":
            return self._flops(model, strategy)
        return {"density": _density, "itop": _itop, "alive": _alive,
                "capacity": _capacity}[self.quantity](model, strategy)

    def _emit(self, strategy) -> list[MetricValue] | None:
        self._value = self.compute(strategy)
        if self._value is None:
            return None
        base = get_metric_name(self, strategy, add_experience=self.emit_at == "experience",
                               add_task=True)
        x = strategy.clock.train_iterations
        if isinstance(self._value, dict):
            return [MetricValue(self, f"{base}/{k}" if k else base, v, x)
                    for k, v in self._value.items()]
        return [MetricValue(self, base, self._value, x)]

    # ------------------------------------------------------------------ callbacks
    def before_training_epoch(self, strategy) -> None:
        if self.emit_at == "epoch":
            self.reset()

    def after_training_epoch(self, strategy):
        if self.emit_at == "epoch":
            return self._emit(strategy)
        return None

    def before_eval_exp(self, strategy) -> None:
        if self.emit_at == "experience":
            self.reset()

    def after_eval_exp(self, strategy):
        if self.emit_at == "experience":
            return self._emit(strategy)
        return None


def sparsity_metrics(density: bool = True, itop: bool = True, alive: bool = True,
                     flops: bool = True, capacity: bool = True, epoch: bool = True,
                     experience: bool = True,
                     input_shape: Sequence[int] | None = None) -> list[PluginMetric]:
    """Plugin metrics for :class:`EvaluationPlugin`, like Avalanche's own helpers.

    Args:
        density: share of the masked layers' weights the forward computes with.
        itop: share of the masked weights ever active (needs a plugin with a topology).
        alive: per masked layer, output neurons with an active weight.
        flops: sparse forward FLOPs per sample (:func:`sparse_agents.flops`), with the
            dense count and the ratio.
        capacity: under per-task masks, each task's owned share and the free share.
        epoch: emit after every training epoch (``*_Epoch`` names).
        experience: emit after every evaluation experience (``*_Exp`` names).
        input_shape: one sample's shape for the FLOPs forward (default: from the
            current mini-batch).
    """
    chosen = [q for q, on in (("density", density), ("itop", itop), ("alive", alive),
                              ("flops", flops), ("capacity", capacity)) if on]
    when = [w for w, on in (("epoch", epoch), ("experience", experience)) if on]
    return [SparsityPluginMetric(q, w, input_shape) for w in when for q in chosen]


def flops_metrics(epoch: bool = True, experience: bool = True,
                  input_shape: Sequence[int] | None = None) -> list[PluginMetric]:
    """Only the sparse forward FLOPs metrics (``FLOPs_Epoch``, ``FLOPs_Exp``): see
    :func:`sparsity_metrics`."""
    return sparsity_metrics(density=False, itop=False, alive=False, flops=True,
                            capacity=False, epoch=epoch, experience=experience,
                            input_shape=input_shape)

"""Per-task ownership of sparse weights, framework-free: each masked weight is free or
owned by the task that claimed it; earlier tasks are frozen bit-exactly and everything
else is per-task state. See docs/task_masks.md."""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparse_agents.config import SparseConfig
from sparse_agents.distributions import check_sparsity, kept_counts, layer_densities
from sparse_agents.topology import (
    MASK_BUFFER,
    MaskedLayer,
    SparseTopology,
    find_maskable,
    select_layers,
)
from sparse_agents.updaters import initial_mask

__all__ = ["FREE", "OWNER_BUFFER", "STATE_MODULE", "TaskMasks", "TaskRecord",
           "density_report", "task_densities", "task_records"]

#: owner code of a weight no task has claimed
FREE = -1
#: name of the int16 owner buffer registered on every masked module
OWNER_BUFFER = "weight_owner"
#: name of the child module holding the task list and per-task state
STATE_MODULE = "task_masks"
OVERFLOW = ("raise", "shrink")
#: what a task claims at its start: its budget, or every free weight (PackNet)
CLAIMS = ("budget", "free")


def task_densities(
    shapes: Iterable[Sequence[int]],
    sparsity: float,
    distribution: str = "erk",
    n_tasks: int | None = None,
    power: float = 1.0,
) -> list[float]:
    """Per-task density of each layer: global density ``1 - sparsity`` per task.

    With ``n_tasks``, every layer is capped at ``1 / n_tasks`` so that ``n_tasks``
    tasks fit: the capped allocation is ``layer_densities`` at global density
    ``(1 - sparsity) * n_tasks``, scaled by ``1 / n_tasks``.
    """
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    s = check_sparsity(sparsity)
    if n_tasks is None:
        return layer_densities(shapes, s, distribution, power=power)
    n_tasks = _check_n_tasks(n_tasks)
    need = (1.0 - s) * n_tasks
    if need > 1.0 + 1e-9:
        raise ValueError(
            f"sparsity={s} gives each task density {1 - s:.4g}, so n_tasks={n_tasks} tasks "
            f"need {need:.4g} of every layer: sparsity must be in "
            f"[{1 - 1 / n_tasks:.4g}, 1) for {n_tasks} tasks"
        )
    scaled = layer_densities(shapes, max(0.0, 1.0 - need), distribution, power=power)
    return [d / n_tasks for d in scaled]


def _check_options(overflow: str, transfer: bool, n_tasks: int | None,
                   config: SparseConfig) -> int | None:
    """Validate ``TaskMasks``' own options and what it needs of the topology's."""
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    if not isinstance(transfer, bool):
        raise ValueError(f"transfer must be True or False, got {transfer!r}")
    if config.compute == "condensed":
        raise ValueError("compute='condensed' is not supported with per-task masks: the "
                         "frozen weights of earlier tasks take part in every forward, so "
                         "the layers train masked; use compute='auto' or 'masked'")
    if config.budgets is not None or config.masks is not None:
        raise ValueError("TaskMasks sets the topology's budgets and masks itself (one task's "
                         "share, all masks empty until a task starts): leave them unset")
    return None if n_tasks is None else _check_n_tasks(n_tasks)


def _check_n_tasks(n_tasks: int) -> int:
    if isinstance(n_tasks, bool) or int(n_tasks) != n_tasks or n_tasks < 1:
        raise ValueError(f"n_tasks must be None or an integer >= 1, got {n_tasks!r}")
    return int(n_tasks)


def _check_task_id(task_id: object) -> int:
    if isinstance(task_id, Tensor) and task_id.numel() == 1:
        task_id = task_id.item()
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ValueError(f"task_id must be an int, got {task_id!r}")
    return int(task_id)


class _TaskState(nn.Module):
    """Child module of the model: task list, per-task state and the selected view.

    Saved (as extra state): ``task_ids``, ``snapshots``, the task in progress and the
    state of ``generator`` (the topology's, which draws each new task's mask: a model
    loaded between tasks draws the next mask an uninterrupted one draws); the view
    fields describe what is installed in the model right now.
    """

    def __init__(self, transfer: bool, generator: torch.Generator) -> None:
        super().__init__()
        self.transfer = bool(transfer)
        self.generator = generator
        self.task_ids: list[int] = []
        self.snapshots: list[dict[str, Tensor]] = []
        self.in_progress: int | None = None  # the task training (its mask: weight_mask)
        self.view: int | None = None  # index of the selected task (None: base view)
        self.visible: dict[str, Tensor] = {}  # weights with hidden entries: visible mask
        self.hidden: dict[str, Tensor] = {}  # ... and their full values
        self.live: dict[str, Tensor] | None = None  # live per-task state, while replaced
        self.loads = 0

    def get_extra_state(self) -> dict:
        return {"version": 2, "transfer": self.transfer, "task_ids": list(self.task_ids),
                "snapshots": [dict(s) for s in self.snapshots],
                "in_progress": self.in_progress, "generator": self.generator.get_state()}

    def set_extra_state(self, state: Mapping) -> None:
        if not isinstance(state, Mapping) or "task_ids" not in state:
            raise ValueError("task_masks extra state has no 'task_ids': not a TaskMasks state")
        if len(state["snapshots"]) != len(state["task_ids"]):
            raise ValueError("task_masks extra state: one snapshot per task id expected")
        if bool(state.get("transfer", self.transfer)) != self.transfer:
            raise ValueError(f"checkpoint was saved with transfer={state.get('transfer')}, "
                             f"this TaskMasks has transfer={self.transfer}")
        self.task_ids = [int(t) for t in state["task_ids"]]
        self.snapshots = [dict(s) for s in state["snapshots"]]
        training = state.get("in_progress")
        self.in_progress = None if training is None else int(training)
        if "generator" in state:  # version 1 states have none: the generator goes on
            self.generator.set_state(state["generator"])
        # the loaded weights and state are the full ones: nothing is hidden any more
        self.view, self.visible, self.hidden, self.live = None, {}, {}, None
        self.loads += 1

    def forward(self, *args, **kwargs):  # pragma: no cover - not a layer
        raise RuntimeError("task_masks holds per-task state; it is not a layer")


class _FullStateHook:
    """``state_dict`` post-hook: write full weights and live state while a view is set."""

    def __init__(self, state: _TaskState) -> None:
        self.state = state

    def __call__(self, module, state_dict, prefix, local_metadata) -> None:
        st = self.state
        for name, vis in st.visible.items():
            key = prefix + name
            if key in state_dict:
                state_dict[key] = torch.where(vis, state_dict[key].detach(),
                                              st.hidden[name]).clone()
        for name, value in (st.live or {}).items():
            if prefix + name in state_dict:
                state_dict[prefix + name] = value.clone()


def _no_owner() -> None:
    """Stands in for the weak reference of an unpickled :class:`_LoadHook`."""
    return None


class _LoadHook:
    """``load_state_dict`` post-hook of the model: its :class:`TaskMasks` follows the
    loaded checkpoint (held weakly, so that the model neither keeps nor copies it)."""

    def __init__(self, owner: TaskMasks) -> None:
        self.owner = weakref.ref(owner)

    def __call__(self, module, incompatible_keys) -> None:
        owner = self.owner()
        if owner is not None:
            owner._sync()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.owner = _no_owner


@dataclass(frozen=True)
class TaskRecord:
    """What one :class:`TaskMasks` keeps on its model, read from the model alone (for
    code that has the model but not the ``TaskMasks``); a copy.

    Attributes:
        task_ids: the finished tasks, in training order (owner code ``i`` is
            ``task_ids[i]``).
        in_progress: the task training (or, after a load, the one training when the
            checkpoint was saved), else ``None``.
        visible: parameter name -> bool mask of the entries the current view shows,
            for every masked weight whose view hides some.
    """

    task_ids: tuple[int, ...]
    in_progress: int | None
    visible: dict[str, Tensor]


def task_records(model: nn.Module) -> list[TaskRecord]:
    """One :class:`TaskRecord` per :class:`TaskMasks` on ``model`` (module order; empty
    when there is none)."""
    return [TaskRecord(tuple(m.task_ids), m.in_progress,
                       {name: vis.clone() for name, vis in m.visible.items()})
            for m in model.modules() if isinstance(m, _TaskState)]


class TaskMasks:
    """Per-task masks over ``model``'s Linear/Conv weights (see the module docstring).

    Args:
        model: the module whose weights tasks share; its masked layers get
            ``weight_mask`` and ``weight_owner`` buffers, the first one a ``task_masks``
            child module holding the task list and per-task state.
        sparsity: per-task sparsity in [0, 1): each task claims ``1 - sparsity``.
        updater: DST inside each task: ``"static"``, ``"set"``, ``"rigl"``, ``"srigl"``.
        distribution: ``"uniform"``, ``"er"`` or ``"erk"`` layer-wise allocation.
        transfer: forward of task t also uses earlier tasks' frozen weights.
        seed: seed of the mask generator (initial masks, tie breaks, SET growth).
        n_tasks: tasks the model must hold (caps each layer at ``1 / n_tasks``).
        overflow: ``"raise"`` (default) or ``"shrink"`` when the free pool is short.
        dense_layers: maskable layers left unmasked (names, regexes, indices); they
            are per-task state like biases.
        config: the topology's options as one :class:`~sparse_agents.SparseConfig`
            (``sparsity``, ``updater``, ``distribution``, ``seed``, ``dense_layers`` and
            ``power`` included), instead of the keywords; ``budgets`` and ``masks``
            are TaskMasks' own, and the layers train masked (``compute`` ``"auto"`` or
            ``"masked"``).
        topology_kwargs: the other options of :class:`SparseTopology` (``delta_t``,
            ``t_end``, ``drop_fraction``, ``schedule``, ``gamma_sal``,
            ``grad_masking``, ...). The schedule restarts at every task.
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float = 0.9,
        updater: str = "srigl",
        distribution: str = "erk",
        transfer: bool = True,
        seed: int = 0,
        *,
        n_tasks: int | None = None,
        overflow: str = "raise",
        dense_layers: Iterable[str | int] = (),
        power: float = 1.0,
        config: SparseConfig | None = None,
        **topology_kwargs,
    ) -> None:
        config = SparseConfig.resolve(
            config, "TaskMasks", sparsity=sparsity, updater=updater, distribution=distribution,
            seed=seed, dense_layers=dense_layers, power=power, **topology_kwargs)
        n_tasks = _check_options(overflow, transfer, n_tasks, config)
        #: the topology options (the topology's own config adds budgets and masks)
        self.config = config
        self.model = model
        self.sparsity = config.sparsity
        self.updater = config.updater
        self.distribution = config.distribution
        self.transfer = transfer
        self.n_tasks = n_tasks
        self.overflow = overflow
        # per-task budgets first, so that bad arguments leave the model untouched
        candidates = find_maskable(model)
        dense_idx = select_layers(config.dense_layers, [n for n, _ in candidates],
                                  "dense_layers")
        sparse = [(f"{n}.weight", m) for i, (n, m) in enumerate(candidates)
                  if i not in dense_idx]
        if not sparse:
            raise ValueError("dense_layers covers every maskable layer: nothing left to mask")
        sparse_names = [name for name, _ in sparse]
        budgets = self._task_budgets([tuple(m.weight.shape) for _, m in sparse], sparse_names,
                                     config.power)
        # the initialisation new weights start from
        self._init: dict[str, Tensor] = {name: m.weight.detach().clone() for name, m in sparse}
        # one topology for every task: per-task budgets, no weight owned yet (all masks
        # empty, so every masked weight starts at 0)
        empty = {name: torch.zeros(self._init[name].shape, dtype=torch.bool)
                 for name in sparse_names}
        self.topology = SparseTopology.from_config(model, None, config.replace(
            budgets=dict(zip(sparse_names, budgets, strict=True)), masks=empty,
            compute="masked"))
        self.layers: list[MaskedLayer] = self.topology.layers
        for layer in self.layers:
            layer.module.register_buffer(
                OWNER_BUFFER, torch.full(layer.weight.shape, FREE, dtype=torch.int16,
                                         device=layer.weight.device))
        self.budgets: dict[str, int] = {x.name: x.budget for x in self.layers}
        self.state = _TaskState(transfer, self.topology.generator)
        # on the first masked layer, whose forward never iterates its children (a child
        # of the model itself would break nn.Sequential)
        self.layers[0].module.add_module(STATE_MODULE, self.state)
        model.register_state_dict_post_hook(_FullStateHook(self.state))
        model.register_load_state_dict_post_hook(_LoadHook(self))
        self._training: int | None = None
        self._pending: int | None = None  # loaded in progress, waiting for resume_task
        self._unseen: int | None = None  # an untrained id selected with allow_unseen
        self._loads = 0

    def _task_budgets(self, shapes: list[tuple[int, ...]], names: list[str],
                      power: float) -> list[int]:
        """Weights one task claims per layer: ``1 - sparsity`` spread by ``distribution``,
        each layer capped at ``1 / n_tasks`` when that many tasks must fit."""
        n_tasks = self.n_tasks
        fits = n_tasks is None or (1.0 - self.sparsity) * n_tasks <= 1.0 + 1e-9
        # overflow="shrink" with more tasks than fit: plain allocation, later tasks
        # get what is left
        cap = n_tasks if fits or self.overflow == "raise" else None
        densities = task_densities(shapes, self.sparsity, self.distribution, cap, power)
        budgets = kept_counts(shapes, densities)
        if cap is None:
            return budgets
        numels = [math.prod(shape) for shape in shapes]
        for name, numel in zip(names, numels, strict=True):
            if numel < cap:
                raise ValueError(f"layer {name!r} has {numel} weights, fewer than "
                                 f"n_tasks={cap}")
        return [min(b, numel // cap) for b, numel in zip(budgets, numels, strict=True)]

    # ------------------------------------------------------------------ properties
    @property
    def task_ids(self) -> list[int]:
        """Task ids in training order: the finished ones, then the one training."""
        ids = list(self.state.task_ids)
        return ids if self._training is None else [*ids, self._training]

    @property
    def finished_tasks(self) -> list[int]:
        """Ids of the tasks whose weights are frozen, in training order."""
        return list(self.state.task_ids)

    @property
    def training_task(self) -> int | None:
        """The task being trained (between ``start_task`` and ``end_task``), or None."""
        return self._training

    @property
    def pending_task(self) -> int | None:
        """The task that was training when the loaded checkpoint was saved, until
        :meth:`resume_task` (None otherwise)."""
        return self._pending

    @property
    def active_task(self) -> int | None:
        """The task selected by ``set_task``/``use_task`` (None: the base view)."""
        view = self.state.view
        if view is None:
            return self._unseen
        return self.state.task_ids[view]

    @property
    def owners(self) -> dict[str, Tensor]:
        """Parameter name -> int16 owner codes (-1 free, else index into ``task_ids``),
        the training task's current mask included."""
        out = {}
        for layer in self.layers:
            owner = self._owner(layer).clone()
            if self._training is not None:
                owner[layer.mask] = len(self.state.task_ids)
            out[layer.name] = owner
        return out

    def initial_weights(self) -> dict[str, Tensor]:
        """Parameter name -> the values new weights of a task start from (the model's
        initialisation when ``TaskMasks`` was built)."""
        return dict(self._init)

    def follow_model(self) -> None:
        """Move the tensors ``TaskMasks`` and its topology hold to the weights' devices
        and dtypes (done at every task start; after ``model.to()`` nothing else is needed)."""
        self.topology.follow_model()
        for layer in self.layers:
            w = layer.weight
            init = self._init[layer.name]
            if init.device != w.device or init.dtype != w.dtype:
                self._init[layer.name] = init.to(w.device, w.dtype)

    def free_capacity(self) -> dict[str, int]:
        """Parameter name -> number of weights no task owns (the training one included)."""
        return {name: int((o == FREE).sum()) for name, o in self.owners.items()}

    def owned(self, task_id: int) -> dict[str, Tensor]:
        """Parameter name -> bool mask of the weights ``task_id`` owns."""
        idx = self._index(task_id, allow_training=True)
        return {name: o == idx for name, o in self.owners.items()}

    def forward_masks(self, task_id: int) -> dict[str, Tensor]:
        """Parameter name -> bool mask of the weights the forward of ``task_id`` uses."""
        idx = self._index(task_id, allow_training=True)
        out = {}
        for name, o in self.owners.items():
            out[name] = (o >= 0) & (o <= idx) if self.transfer else o == idx
        return out

    # ------------------------------------------------------------------ tasks
    def start_task(self, task_id: int, optimizer: torch.optim.Optimizer,
                   claim: str = "budget") -> SparseTopology:
        """Claim task ``task_id``'s budget among free weights and hook ``optimizer``.

        ``claim="free"`` claims every free weight instead (PackNet: the task trains
        dense in the free capacity; :meth:`prune_task` then keeps its budget). Returns
        the :class:`SparseTopology` (the same object for every task) whose trainable
        mask is the new task's; its step counter and schedule restart.
        """
        if claim not in CLAIMS:
            raise ValueError(f"claim must be one of {CLAIMS}, got {claim!r}")
        task_id = self.check_start(task_id, optimizer)
        self.follow_model()
        self.set_task(None)
        self._install(None)  # every owned weight in place while the new mask is drawn
        budgets = self._claimable(task_id)
        if claim == "free":
            budgets = {x.name: int((self._owner(x) == FREE).sum()) for x in self.layers}
        with torch.no_grad():
            for layer in self.layers:
                owner = self._owner(layer)
                free = owner == FREE
                new = initial_mask(self.topology.spec, layer.weight.shape,
                                   budgets[layer.name], self.topology.generator, free=free,
                                   device=layer.weight.device)
                init = self._init[layer.name]
                zero = torch.zeros((), dtype=layer.weight.dtype, device=layer.weight.device)
                layer.weight.copy_(torch.where(new, init, torch.where(free, zero, layer.weight)))
                self.topology.assign(layer.name, new, budgets[layer.name])
        return self._hook(task_id, optimizer)

    def check_start(self, task_id: int, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Raise the ``ValueError`` that :meth:`start_task` would raise for ``task_id``
        (and ``optimizer``, when given), changing nothing; returns the checked id. Lets
        an owner of several ``TaskMasks`` start a task in all of them or in none."""
        self._sync()
        task_id = _check_task_id(task_id)
        if self._training is not None:
            raise ValueError(f"task {self._training} is still training: call end_task() "
                             "before start_task()")
        if self._pending is not None:
            raise ValueError(f"task {self._pending} was training when the checkpoint was "
                             "saved: call resume_task(optimizer) (and end_task()) first")
        if task_id in self.state.task_ids:
            raise ValueError(f"task_id {task_id} was trained already (tasks so far: "
                             f"{self.state.task_ids}); each task needs a new id")
        if optimizer is not None:
            self._check_optimizer(optimizer)
        self._claimable(task_id)
        return task_id

    def resume_task(self, optimizer: torch.optim.Optimizer) -> SparseTopology:
        """Go on training the task that was in progress when the loaded checkpoint was
        saved (its mask is the loaded ``weight_mask``). The topology's step restarts at
        0; load ``topology.state_dict()`` afterwards to restore step and RNG exactly."""
        self._sync()
        if self._pending is None:
            raise ValueError("no task to resume: the loaded checkpoint had no task in "
                             "progress (use start_task)")
        self._check_optimizer(optimizer)
        for layer in self.layers:
            if bool((layer.mask & (self._owner(layer) != FREE)).any()):
                raise ValueError(f"loaded mask of {layer.name!r} overlaps finished tasks' "
                                 "weights: checkpoint is inconsistent")
        task_id, self._pending = self._pending, None
        self.set_task(None)
        self._install(None)
        for layer in self.layers:
            free = int((self._owner(layer) == FREE).sum())
            self.topology.assign(layer.name, layer.mask, min(self.budgets[layer.name], free))
        return self._hook(task_id, optimizer)

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [x.name for x in self.layers if id(x.weight) not in trained]
        if missing:
            raise ValueError(f"optimizer does not train the masked weights {missing}")

    def _hook(self, task_id: int, optimizer: torch.optim.Optimizer) -> SparseTopology:
        """Make ``task_id`` the training task: view, frozen weights, optimizer hooks."""
        topo = self.topology
        self._training = task_id
        self.state.in_progress = task_id
        self._install(self._base_visible())
        for layer in self.layers:
            others = self._owner(layer) != FREE
            if bool(others.any()):
                topo.freeze(layer.name, others, allowed=~others)
            else:
                topo.freeze(layer.name, None, allowed=None)
        topo.restart()
        topo.attach(optimizer)
        return topo

    @torch.no_grad()
    def prune_task(self) -> dict[str, int]:
        """PackNet's pruning (Mallya & Lazebnik, CVPR 2018): the training task keeps its
        largest-magnitude weights, at most its budget per layer, and releases the rest to
        the free pool (zeroed, with their optimizer state); ties go to the lower index.
        Train on afterwards to recover, then :meth:`end_task`. Returns the kept weights
        per layer."""
        self._sync()
        if self._training is None:
            raise ValueError("no task is training: call start_task() first")
        self.set_task(None)
        kept = {}
        for layer in self.layers:
            mask = layer.mask
            k = min(self.budgets[layer.name], int(mask.sum()))
            flat = torch.where(mask, layer.weight.detach().abs(),
                               torch.full_like(layer.weight, -1.0)).flatten()
            order = torch.argsort(flat, descending=True, stable=True)[:k]
            new = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
            new[order] = True
            self.topology.assign(layer.name, new.view_as(mask), k)
            kept[layer.name] = k
        self.topology.remask()  # released weights and their optimizer state to zero
        return kept

    def end_task(self) -> None:
        """Freeze the training task: its mask becomes its owned weights, and its
        per-task state (biases, norms, dense layers, ...) is stored."""
        self._sync()
        if self._training is None:
            raise ValueError("no task is training: call start_task() first")
        self.set_task(None)
        idx = len(self.state.task_ids)
        with torch.no_grad():
            for layer in self.layers:
                owner = self._owner(layer)
                if bool((owner[layer.mask] != FREE).any()):
                    raise RuntimeError(f"layer {layer.name!r}: the training mask overlaps "
                                       "weights owned by another task")
                owner[layer.mask] = idx
        self.topology.detach()
        for layer in self.layers:
            self.topology.freeze(layer.name, None)
        self.state.snapshots.append(self._snapshot())
        self.state.task_ids.append(self._training)
        self._training = None
        self.state.in_progress = None
        self._install(self._base_visible())

    def set_task(self, task_id: int | None, allow_unseen: bool = False) -> None:
        """Install the forward mask and per-task state of ``task_id``.

        ``None`` (or the training task's id) returns to the base view: the training
        task's forward and live state or, between tasks, the last finished task's.
        An id never trained is a ``KeyError``, unless ``allow_unseen``: then it gets the
        forward a new task would start from (every finished task's weights with
        transfer, none without; the current per-task state), e.g. for Avalanche's
        evaluation of tasks not trained yet.
        """
        self._sync()
        self._unseen = None
        if task_id is None or (self._training is not None
                               and _check_task_id(task_id) == self._training):
            self._install(self._base_visible())
            self._install_private(None)
            self.state.view = None
            return
        task_id = _check_task_id(task_id)
        if allow_unseen and task_id not in self.state.task_ids:
            self._install({x.name: (self._owner(x) != FREE) if self.transfer
                           else torch.zeros_like(x.mask) for x in self.layers})
            self._install_private(None)
            self.state.view = None
            self._unseen = task_id
            return
        idx = self._index(task_id)
        self._install(self._eval_visible(idx))
        self._install_private(idx)
        self.state.view = idx

    @contextmanager
    def use_task(self, task_id: int | None, allow_unseen: bool = False) -> Iterator[TaskMasks]:
        """Context manager: ``set_task(task_id)``, then back to the previous view."""
        previous = self.active_task
        self.set_task(task_id, allow_unseen)
        try:
            yield self
        finally:
            self.set_task(previous, allow_unseen=True)

    # ------------------------------------------------------------------ metrics
    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """The topology's metrics (the last or training task's mask) plus ``used`` /
        ``free`` fractions, ``n_tasks`` and ``task_density/<id>`` per task."""
        out = {k: float(v) for k, v in self.topology.metrics().items()}
        owners = self.owners
        total = sum(o.numel() for o in owners.values())
        free = sum(int((o == FREE).sum()) for o in owners.values())
        out["used"] = (total - free) / total
        out["free"] = free / total
        ids = self.task_ids
        out["n_tasks"] = float(len(ids))
        for idx, tid in enumerate(ids):
            out[f"task_density/{tid}"] = sum(int((o == idx).sum()) for o in owners.values()) / total
        return out

    # ------------------------------------------------------------------ internals
    def _sync(self) -> None:
        """After a ``load_state_dict``, the in-progress task (if any) is dropped. Run by
        the model's load hook; the task methods run it too (a submodule's load holding
        the task state bypasses that hook), property reads never."""
        if self.state.loads != self._loads:
            self._loads = self.state.loads
            self._unseen = None
            if self._training is not None:
                self.topology.detach()
                for layer in self.layers:
                    self.topology.freeze(layer.name, None)
                self._training = None
            self._pending = self.state.in_progress
            n = len(self.state.task_ids)
            for layer in self.layers:
                owner = self._owner(layer)
                if bool((owner < FREE).any() or (owner >= n).any()):
                    raise ValueError(f"loaded owners of {layer.name!r} name tasks outside "
                                     f"[0, {n}): checkpoint and task list disagree")

    @staticmethod
    def _owner(layer: MaskedLayer) -> Tensor:
        return getattr(layer.module, OWNER_BUFFER)

    def _index(self, task_id: int, allow_training: bool = False) -> int:
        task_id = _check_task_id(task_id)
        ids = self.state.task_ids
        if task_id in ids:
            return ids.index(task_id)
        if allow_training and self._training is not None and task_id == self._training:
            return len(ids)
        known = ids + ([self._training] if self._training is not None else [])
        raise KeyError(f"task id {task_id} has no mask: known task ids are {known}")

    def _claimable(self, task_id: int) -> dict[str, int]:
        """Per-layer budget of the next task, checked against the free pool."""
        free = {x.name: int((self._owner(x) == FREE).sum()) for x in self.layers}
        short = [x for x in self.layers if self.budgets[x.name] > free[x.name]]
        if not short:
            return dict(self.budgets)
        if self.overflow == "raise" or any(free[x.name] == 0 for x in short):
            capacity = ", ".join(
                f"{x.name} {free[x.name]}/{x.weight.numel()} "
                f"({free[x.name] / x.weight.numel():.1%})" for x in self.layers)
            worst = short[0]
            raise ValueError(
                f"task {task_id} (task number {len(self.state.task_ids) + 1}) cannot get its "
                f"budget: layer {worst.name!r} needs {self.budgets[worst.name]} weights but "
                f"only {free[worst.name]} are free. Remaining free capacity: {capacity}. "
                f"Raise sparsity (per-task density {1 - self.sparsity:.4g}) so that "
                f"(1 - sparsity) * tasks <= 1, set n_tasks, or pass overflow='shrink'"
                + (" (it is: the layer is full)" if self.overflow == "shrink" else "")
            )
        return {name: min(b, free[name]) for name, b in self.budgets.items()}

    def _base_visible(self) -> dict[str, Tensor] | None:
        """Visible weights of the base view (``None``: all): the training task's
        forward, or between tasks the last finished task's. With transfer both see
        every owned weight (later tasks do not exist yet)."""
        if self.transfer:
            return None
        if self._training is not None:
            return {x.name: self._owner(x) == FREE for x in self.layers}
        if not self.state.task_ids:
            return None
        return self._eval_visible(len(self.state.task_ids) - 1)

    def _eval_visible(self, idx: int) -> dict[str, Tensor]:
        out = {}
        for layer in self.layers:
            owner = self._owner(layer)
            out[layer.name] = (owner >= 0) & (owner <= idx) if self.transfer else owner == idx
        return out

    @torch.no_grad()
    def _install(self, visible: Mapping[str, Tensor] | None) -> None:
        """Zero (and keep aside) the weights outside ``visible``; restore the rest."""
        st = self.state
        for layer in self.layers:
            name, w = layer.name, layer.weight
            full = None
            if name in st.visible:
                full = torch.where(st.visible[name], w, st.hidden[name])
            vis = None if visible is None else visible[name]
            if vis is None or bool(vis.all()):
                if full is not None:
                    w.copy_(full)
                st.visible.pop(name, None)
                st.hidden.pop(name, None)
            else:
                if full is None:
                    full = w.detach().clone()
                w.copy_(torch.where(vis, full, torch.zeros((), dtype=w.dtype, device=w.device)))
                st.visible[name] = vis
                st.hidden[name] = full

    def _private_tensors(self) -> dict[str, Tensor]:
        """Every parameter and buffer of the model that is not a masked weight, a mask
        or an owner buffer: the per-task state."""
        masked = {x.name for x in self.layers}
        out = {n: p for n, p in self.model.named_parameters() if n not in masked}
        for n, b in self.model.named_buffers():
            if n.rsplit(".", 1)[-1] not in (MASK_BUFFER, OWNER_BUFFER):
                out[n] = b
        return out

    def _snapshot(self) -> dict[str, Tensor]:
        previous = self.state.snapshots[-1] if self.state.snapshots else {}
        snap = {}
        for name, t in self._private_tensors().items():
            value = t.detach()
            old = previous.get(name)
            if (old is not None and old.shape == value.shape and old.dtype == value.dtype
                    and torch.equal(old, value.to(old.device))):
                snap[name] = old  # unchanged: share the stored tensor
            else:
                snap[name] = value.clone()
        return snap

    @torch.no_grad()
    def _install_private(self, idx: int | None) -> None:
        st = self.state
        tensors = self._private_tensors()
        if idx is None:
            for name, value in (st.live or {}).items():
                if name in tensors:
                    tensors[name].copy_(value)
            st.live = None
            return
        snap = st.snapshots[idx]
        if st.live is None:
            st.live = {}
        for name, value in snap.items():
            t = tensors.get(name)
            if t is None:
                continue
            if t.shape != value.shape:
                raise ValueError(f"per-task state {name!r} has shape {tuple(t.shape)} now but "
                                 f"{tuple(value.shape)} in task {st.task_ids[idx]}'s copy")
            if name not in st.live:
                st.live[name] = t.detach().clone()
            t.copy_(value)

    def __repr__(self) -> str:
        return (f"TaskMasks(updater={self.updater!r}, sparsity={self.sparsity}, "
                f"transfer={self.transfer}, tasks={self.task_ids}, "
                f"training={self._training})")


def density_report(tm: TaskMasks) -> dict[str, dict[str, float]]:
    """Per task id: fraction of each layer it owns (for docs and debugging)."""
    out: dict[str, dict[str, float]] = {}
    owners = tm.owners
    for idx, tid in enumerate(tm.task_ids):
        out[str(tid)] = {name: float((o == idx).float().mean()) for name, o in owners.items()}
    return out


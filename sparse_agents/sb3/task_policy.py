"""``TaskMaskActorCriticPolicy``: a sparse actor-critic policy (PPO, A2C) with per-task
masks (:class:`sparse_agents.TaskMasks`); the rules are in docs/continual_rl.md."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sparse_agents.sb3.mixin import (
    SparseRuntime,
    default_heads,
    input_patterns,
    topology_config,
)
from sparse_agents.sb3.policies import SparseActorCriticPolicy
from sparse_agents.task_masks import TaskMasks
from sparse_agents.topology import find_maskable

__all__ = ["TASK_MASK_DEFAULTS", "TaskMaskActorCriticPolicy"]

#: the options :class:`TaskMaskActorCriticPolicy` adds to the sparse policy options
TASK_MASK_DEFAULTS: dict[str, Any] = {
    "transfer": True,
    "n_tasks": None,
    "per_task_heads": False,
    "overflow": "raise",
}


class TaskMaskActorCriticPolicy(SparseActorCriticPolicy):
    """A sparse actor-critic policy (PPO, A2C) with per-task masks.

    Takes every option of :class:`SparseActorCriticPolicy` (``sparsity`` is the
    *per-task* sparsity: each task claims ``1 - sparsity`` of the weights, spread over
    the layers by ``distribution``), plus:

    Args:
        transfer: task ``t``'s forward also uses the frozen weights of earlier tasks.
        n_tasks: tasks the network must hold; caps each layer's per-task density at
            ``1 / n_tasks`` so that they all fit (``None``: no cap; a task that does not
            fit raises ``ValueError`` naming the free capacity).
        per_task_heads: keep ``action_net`` and ``value_net`` dense and wholly per task
            (default: masked, owned per task like the other layers).
        overflow: ``"raise"`` or ``"shrink"`` when a task's budget does not fit.

    ``dense_input`` is off by default here: a dense layer is shared by every task, so
    training a later task would change the outputs of earlier ones.

    Switch tasks with :meth:`start_task` / :meth:`end_task` (training) and
    :meth:`set_task` / :meth:`use_task` (evaluation). ``model.save``/``Algo.load``
    keep owners, masks and every finished task's state (a task still training when
    saved is dropped on load).
    """

    #: per-task masks: no shared dense input layer unless asked for
    sparse_defaults = {"dense_input": False, "sparse_init": None}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        opts = {k: kwargs.pop(k, v) for k, v in TASK_MASK_DEFAULTS.items()}
        if opts["per_task_heads"] not in (True, False):
            raise ValueError(
                f"per_task_heads must be True or False, got {opts['per_task_heads']!r}")
        if kwargs.get("condensed_rollout"):
            raise ValueError("condensed_rollout must be False with per-task masks")
        if kwargs.get("sparse_init") is not None:
            raise ValueError("sparse_init must be None with per-task masks: each task's mask "
                             "is assigned when the task starts, not drawn at build")
        self._task_options = opts
        self.task_masks = None
        super().__init__(*args, **kwargs)

    def _make_runtime(self) -> SparseRuntime:
        # TaskMasks owns the one topology of the per-task masks (SparsePolicyMixin's
        # _build does the rest: fused Adam by default, lr_scale)
        opts = self._sparse_options
        topts = self._task_options
        trained = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        names = [n for n, m in find_maskable(self) if id(m.weight) in trained]
        heads = default_heads(self, names)
        dense = list(opts["dense_layers"])
        dense += input_patterns(self, names, dense, opts)
        output_layers = opts["output_layers"]
        if topts["per_task_heads"]:
            dense += heads
            if output_layers is None:
                output_layers = ()
        elif output_layers is None:
            output_layers = heads
        config = topology_config(opts).replace(dense_layers=tuple(dense),
                                               output_layers=output_layers)
        self.task_masks = TaskMasks(self, transfer=topts["transfer"], n_tasks=topts["n_tasks"],
                                    overflow=topts["overflow"], config=config)
        # the mixin's runtime (t_end from learn(), sparse/ metrics) over that topology
        return SparseRuntime(self, opts, topologies={"policy": self.task_masks.topology})

    def _keep_state(self, runtime: SparseRuntime) -> None:
        """No ``sparse_state``: TaskMasks' own state (owners, masks, per-task state) is
        what a checkpoint needs; ``condensed_rollout`` is refused at construction."""

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(copy.deepcopy(self._task_options))
        return data

    # ------------------------------------------------------------------ tasks
    def start_task(self, task_id: int, reset_optimizer: bool = True) -> None:
        """Claim task ``task_id``'s weights and train them from now on (its topology's
        schedule restarts; ``reset_optimizer`` clears the optimizer's state)."""
        if reset_optimizer:
            self.optimizer.state.clear()
        self.task_masks.start_task(task_id, self.optimizer)
        self._sparse.restart_schedule()  # the next learn() places a fresh t_end

    def end_task(self) -> None:
        """Freeze the training task's weights and store its per-task state."""
        self.task_masks.end_task()

    def set_task(self, task_id: int | None) -> None:
        """Act as task ``task_id`` (its forward mask and state); ``None``: the training
        task, or between tasks the last finished one. Unknown ids raise ``KeyError``."""
        self.task_masks.set_task(task_id)

    @contextmanager
    def use_task(self, task_id: int | None) -> Iterator[TaskMaskActorCriticPolicy]:
        """Context manager: act as ``task_id`` inside, then back to the previous task."""
        with self.task_masks.use_task(task_id):
            yield self

    @property
    def task_ids(self) -> list[int]:
        """Task ids in training order (finished ones, then the one training)."""
        return self.task_masks.task_ids

    @property
    def active_task(self) -> int | None:
        """The task selected by ``set_task``/``use_task`` (``None``: the base view)."""
        return self.task_masks.active_task

    @property
    def training_task(self) -> int | None:
        """The task being trained, or ``None``."""
        return self.task_masks.training_task



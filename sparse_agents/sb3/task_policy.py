"""Per-task masks (:class:`sparse_agents.TaskMasks`) in sparse SB3 policies:
:class:`TaskMaskPolicyMixin`, the task API shared by every such policy (one ``TaskMasks``
per optimizer, trained in lockstep), and ``TaskMaskActorCriticPolicy`` (PPO, A2C); the
off-policy ones are in :mod:`sparse_agents.sb3.task_offpolicy`. The rules are in
docs/continual_rl.md."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from torch import nn

from sparse_agents.sb3.mixin import (
    SparseRuntime,
    default_heads,
    input_patterns,
    policy_optimizers,
    topology_config,
)
from sparse_agents.sb3.policies import SparseActorCriticPolicy
from sparse_agents.task_masks import CLAIMS, TaskMasks
from sparse_agents.topology import find_maskable, match_layer

__all__ = ["TASK_MASK_DEFAULTS", "TaskFollower", "TaskMaskActorCriticPolicy",
           "TaskMaskPolicyMixin", "check_task_options"]

#: the options a per-task-mask policy adds to the sparse policy options
TASK_MASK_DEFAULTS: dict[str, Any] = {
    "transfer": True,
    "n_tasks": None,
    "per_task_heads": False,
    "overflow": "raise",
}


def check_task_options(opts: Mapping[str, Any], sparse_kwargs: Mapping[str, Any]) -> None:
    """The checks a per-task-mask policy makes before SB3 builds anything (``transfer``,
    ``n_tasks`` and ``overflow`` are checked by :class:`TaskMasks`)."""
    if opts["per_task_heads"] not in (True, False):
        raise ValueError(
            f"per_task_heads must be True or False, got {opts['per_task_heads']!r}")
    if sparse_kwargs.get("condensed_rollout"):
        raise ValueError("condensed_rollout must be False with per-task masks")
    if sparse_kwargs.get("sparse_init") is not None:
        raise ValueError("sparse_init must be None with per-task masks: each task's mask "
                         "is assigned when the task starts, not drawn at build")


class TaskFollower(Protocol):
    """Something that must follow a policy's task masks (a target network)."""

    def sync(self) -> None:
        """Called after a task started or ended."""

    def follow(self) -> None:
        """Called after the selected task changed."""


def _matches(pattern: str | int, prefix: str, names: Sequence[str]) -> list[str]:
    """The layers of one module (``names``, policy path ``prefix``) that a policy-level
    layer pattern matches, as escaped module-level names (integers index ``names``)."""
    return [re.escape(n) for i, n in enumerate(names) if match_layer(pattern, i, prefix + n)]


def _localise(patterns: Sequence[str | int], groups: Mapping[str, tuple[str, list[str]]],
              what: str) -> dict[str, list[str | int]]:
    """Each group's share of policy-level layer ``patterns``, as patterns of the group's
    module (``groups``: key -> (module path prefix, layer names in the module)); a
    pattern that matches nothing is a ``ValueError`` naming ``what``."""
    out: dict[str, list[str | int]] = {key: [] for key in groups}
    for pattern in patterns:
        hit = False
        for key, (prefix, names) in groups.items():
            found = _matches(pattern, prefix, names)
            out[key] += found
            hit = hit or bool(found)
        if not hit:
            every = [prefix + n for prefix, names in groups.values() for n in names]
            raise ValueError(f"{what} pattern {pattern!r} matches no maskable layer; "
                             f"layers are {every}")
    return out


class TaskMaskPolicyMixin:
    """Per-task masks for a sparse SB3 policy (mix in before the sparse policy class).

    Each optimizer's module (class attribute :attr:`task_mask_modules`) gets its own
    :class:`TaskMasks` (own owners, budgets and topology); the task methods drive them
    in lockstep, and :meth:`_make_followers` may add objects (target networks) that
    follow them. Options (``policy_kwargs``), besides the sparse policy's (``sparsity``
    is the *per-task* sparsity):

    Args:
        transfer: task ``t``'s forward also uses the frozen weights of earlier tasks.
        n_tasks: tasks the network must hold; caps each layer's per-task density at
            ``1 / n_tasks`` so that they all fit (``None``: no cap; a task that does not
            fit raises ``ValueError`` naming the free capacity).
        per_task_heads: keep the heads (:func:`~sparse_agents.sb3.mixin.default_heads`)
            dense and wholly per task (default: masked, owned per task like the other
            layers).
        overflow: ``"raise"`` or ``"shrink"`` when a task's budget does not fit.

    Layer patterns (``dense_layers``, ``output_layers``, ``gamma_sal`` keys) name layers
    as in the policy (``q_net.q_net.0``, ``critic.qf0.4``), like the other sparse
    policies. ``dense_input`` is off by default: a dense layer is shared by every task,
    so training a later task would change the outputs of earlier ones.
    """

    #: per-task masks: no shared dense input layer unless asked for
    sparse_defaults = {"dense_input": False, "sparse_init": None}
    #: optimizer key (as in :func:`~sparse_agents.sb3.mixin.policy_optimizers`) -> path
    #: of the module whose weights it trains ("": the policy itself)
    task_mask_modules: dict[str, str] = {"policy": ""}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        opts = {k: kwargs.pop(k, v) for k, v in TASK_MASK_DEFAULTS.items()}
        check_task_options(opts, kwargs)
        self._task_options = opts
        self._task_masks: dict[str, TaskMasks] = {}
        self._followers: list[TaskFollower] = []
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ build
    def _make_runtime(self) -> SparseRuntime:
        # one TaskMasks per optimizer owns that optimizer's topology (SparsePolicyMixin's
        # _build does the rest: fused Adam by default, lr_scale)
        opts = self._sparse_options
        topts = self._task_options
        optimizers = dict(policy_optimizers(self))
        modules = {key: self.get_submodule(path) for key, path in
                   self.task_mask_modules.items()}
        self._check_separate(modules)
        groups = {key: (f"{path}." if path else "", [n for n, _ in find_maskable(modules[key])])
                  for key, path in self.task_mask_modules.items()}
        local = any(m is not self for m in modules.values())
        dense_of = _localise(opts["dense_layers"], groups, "dense_layers") if local else None
        outputs_of = (None if opts["output_layers"] is None or not local else
                      _localise(opts["output_layers"], groups, "output_layers"))
        gamma = opts["gamma_sal"]
        gamma_of = None
        if local and isinstance(gamma, Mapping):
            _localise(list(gamma), groups, "gamma_sal")  # every pattern matches somewhere
            gamma_of = {key: {n: value for pattern, value in gamma.items()
                              for n in _matches(pattern, *groups[key])} for key in groups}
        base = topology_config(opts)
        for i, (key, module) in enumerate(modules.items()):
            trained = {id(p) for g in optimizers[key].param_groups for p in g["params"]}
            names = [n for n, m in find_maskable(module) if id(m.weight) in trained]
            heads = default_heads(module, names)
            dense = list(opts["dense_layers"] if dense_of is None else dense_of[key])
            dense += input_patterns(module, names, dense, opts)
            output_layers = opts["output_layers"] if outputs_of is None else outputs_of[key]
            if topts["per_task_heads"]:
                dense += heads
                if output_layers is None:
                    output_layers = ()
            elif output_layers is None:
                output_layers = heads
            config = base.replace(dense_layers=tuple(dense), output_layers=output_layers,
                                  seed=base.seed + i,
                                  gamma_sal=gamma if gamma_of is None else gamma_of[key])
            self._task_masks[key] = TaskMasks(
                module, transfer=topts["transfer"], n_tasks=topts["n_tasks"],
                overflow=topts["overflow"], config=config)
        self._followers = list(self._make_followers())
        # the mixin's runtime (t_end from learn(), sparse/ metrics) over those topologies
        return SparseRuntime(self, opts, topologies={
            key: tm.topology for key, tm in self._task_masks.items()})

    def _check_separate(self, modules: Mapping[str, nn.Module]) -> None:
        """Two ``TaskMasks`` must not share a parameter (each would keep it as its own
        per-task state)."""
        seen: dict[int, str] = {}
        for key, module in modules.items():
            for name, p in module.named_parameters():
                if id(p) in seen and seen[id(p)] != key:
                    raise ValueError(
                        f"{type(self).__name__}: parameter {name!r} is trained under two "
                        f"task-mask modules ({seen[id(p)]!r} and {key!r}), e.g. a shared "
                        "features extractor with weights: not supported with per-task "
                        "masks (use share_features_extractor=False)")
                seen[id(p)] = key

    def _make_followers(self) -> list[TaskFollower]:
        """Objects that follow the task masks (the off-policy policies' targets)."""
        return []

    def _keep_state(self, runtime: SparseRuntime) -> None:
        """No ``sparse_state``: TaskMasks' own state (owners, masks, per-task state) is
        what a checkpoint needs; ``condensed_rollout`` is refused at construction."""

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(copy.deepcopy(self._task_options))
        return data

    # ------------------------------------------------------------------ masks
    @property
    def task_masks(self) -> TaskMasks:
        """The policy's :class:`TaskMasks` (SAC has two: use
        ``task_masks_by_optimizer``)."""
        if len(self._task_masks) != 1:
            raise AttributeError(f"{type(self).__name__} has one TaskMasks per optimizer "
                                 f"{sorted(self._task_masks)}: use task_masks_by_optimizer")
        return next(iter(self._task_masks.values()))

    @property
    def task_masks_by_optimizer(self) -> dict[str, TaskMasks]:
        """Optimizer key (``"policy"``; SAC: ``"actor"``, ``"critic"``) -> its
        :class:`TaskMasks`."""
        return dict(self._task_masks)

    def task_mask_metrics(self) -> dict[str, float]:
        """:meth:`TaskMasks.metrics`; with several, prefixed ``<optimizer key>/``."""
        if len(self._task_masks) == 1:
            return self.task_masks.metrics()
        return {f"{key}/{k}": v for key, tm in self._task_masks.items()
                for k, v in tm.metrics().items()}

    # ------------------------------------------------------------------ tasks
    def start_task(self, task_id: int, reset_optimizer: bool = True,
                   claim: str = "budget") -> None:
        """Claim task ``task_id``'s weights and train them from now on (its topology's
        schedule restarts; ``reset_optimizer`` clears the optimizers' state; ``claim``
        ``"free"``: every free weight, for PackNet's :meth:`prune_task`). Checked in
        every ``TaskMasks`` first: on error nothing changes."""
        if claim not in CLAIMS:
            raise ValueError(f"claim must be one of {CLAIMS}, got {claim!r}")
        optimizers = dict(policy_optimizers(self))
        for key, tm in self._task_masks.items():
            task_id = tm.check_start(task_id, optimizers[key])
        for key, tm in self._task_masks.items():
            if reset_optimizer:
                optimizers[key].state.clear()
            tm.start_task(task_id, optimizers[key], claim)
        for follower in self._followers:
            follower.sync()
        self._sparse.restart_schedule()  # the next learn() places a fresh t_end

    def resume_task(self) -> None:
        """Go on training the task that was in progress when the loaded checkpoint was
        saved (its masks are the loaded ones; the optimizers keep their loaded state, the
        topologies' schedule restarts). Until then ``start_task`` is refused."""
        optimizers = dict(policy_optimizers(self))
        if all(tm.pending_task is None for tm in self._task_masks.values()):
            raise ValueError("no task to resume: the loaded checkpoint had no task in "
                             "progress (use start_task)")
        for key, tm in self._task_masks.items():
            tm.resume_task(optimizers[key])
        for follower in self._followers:
            follower.follow()
        self._sparse.restart_schedule()

    def prune_task(self) -> None:
        """PackNet: keep the training task's largest weights, its budget per layer, in
        every network (:meth:`TaskMasks.prune_task`); train on, then :meth:`end_task`."""
        for tm in self._task_masks.values():
            tm.prune_task()
        for follower in self._followers:
            follower.sync()

    def end_task(self) -> None:
        """Freeze the training task's weights and store its per-task state."""
        for tm in self._task_masks.values():
            tm.end_task()
        for follower in self._followers:
            follower.sync()

    def set_task(self, task_id: int | None) -> None:
        """Act as task ``task_id`` (its forward mask and state); ``None``: the training
        task, or between tasks the last finished one. Unknown ids raise ``KeyError``."""
        self._select(task_id, allow_unseen=False)

    def _select(self, task_id: int | None, allow_unseen: bool) -> None:
        for tm in self._task_masks.values():
            tm.set_task(task_id, allow_unseen)
        for follower in self._followers:
            follower.follow()

    @contextmanager
    def use_task(self, task_id: int | None) -> Iterator[TaskMaskPolicyMixin]:
        """Context manager: act as ``task_id`` inside, then back to the previous task."""
        previous = self.active_task
        self.set_task(task_id)
        try:
            yield self
        finally:
            self._select(previous, allow_unseen=True)

    @property
    def task_ids(self) -> list[int]:
        """Task ids in training order (finished ones, then the one training)."""
        return next(iter(self._task_masks.values())).task_ids

    @property
    def active_task(self) -> int | None:
        """The task selected by ``set_task``/``use_task`` (``None``: the base view)."""
        return next(iter(self._task_masks.values())).active_task

    @property
    def training_task(self) -> int | None:
        """The task being trained, or ``None``."""
        return next(iter(self._task_masks.values())).training_task


class TaskMaskActorCriticPolicy(TaskMaskPolicyMixin, SparseActorCriticPolicy):
    """A sparse actor-critic policy (PPO, A2C) with per-task masks.

    Takes every option of :class:`SparseActorCriticPolicy` (``sparsity`` is the
    *per-task* sparsity: each task claims ``1 - sparsity`` of the weights, spread over
    the layers by ``distribution``), plus those of :class:`TaskMaskPolicyMixin`
    (``transfer``, ``n_tasks``, ``per_task_heads``: ``action_net`` and ``value_net``
    dense and wholly per task, ``overflow``). One ``TaskMasks`` over the whole policy
    (``policy.task_masks``): everything that is not a masked weight is per-task state.

    Switch tasks with :meth:`start_task` / :meth:`end_task` (training) and
    :meth:`set_task` / :meth:`use_task` (evaluation). ``model.save``/``Algo.load``
    keep owners, masks and every finished task's state (a task still training when
    saved is dropped on load).
    """

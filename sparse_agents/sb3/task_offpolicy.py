"""Per-task masks for SB3's off-policy agents: ``TaskMaskDQNPolicy`` (DQN) and
``TaskMaskSACPolicy`` (SAC), with the task API of ``TaskMaskActorCriticPolicy``.

* Each optimizer's network has its own :class:`~sparse_agents.TaskMasks`: DQN's
  ``q_net``; SAC's ``actor`` and ``critic`` (own owners, budgets, topology, per-task
  state; tasks start and end in both at once).
* The target network (``q_net_target``, ``critic_target``) follows its online
  network's task masks through a :class:`TaskTarget`: it is set to the online network
  when a task starts or ends (as SB3 does when it builds them); while a task trains,
  every target weight outside the training task's mask equals the online weight
  (earlier tasks' frozen weights, zeros), restored before every target forward, so
  polyak averaging cannot make the frozen weights drift; selecting a finished task
  gives the target that task's online weights and state.
* The replay buffer belongs to the algorithm: :func:`start_task` (this module) starts
  a task on a model and empties its buffer unless ``keep_buffer``.

See docs/continual_rl.md.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import Tensor, nn

from sparse_agents.sb3.policies import SparseDQNPolicy, SparseSACPolicy
from sparse_agents.sb3.task_policy import TaskFollower, TaskMaskPolicyMixin
from sparse_agents.task_masks import OWNER_BUFFER, TaskMasks
from sparse_agents.topology import MASK_BUFFER

__all__ = ["TaskExploration", "TaskMaskDQNPolicy", "TaskMaskOffPolicyMixin",
           "TaskMaskSACPolicy", "TaskTarget", "clear_replay_buffer", "start_task"]


def _gone() -> None:
    """Stands in for the weak reference of an unpickled or copied :class:`_TargetHook`."""
    return None


class _TargetHook:
    """A hook of the target module calling its :class:`TaskTarget` (held weakly: a copy
    of the module neither keeps nor copies it, and its hooks do nothing)."""

    def __init__(self, follower: TaskTarget, kind: str) -> None:
        self.follower = weakref.ref(follower)
        self.kind = kind

    def __call__(self, module: nn.Module, *args: Any) -> None:
        follower = self.follower()
        if follower is None:
            return
        if self.kind == "state":  # state_dict post-hook: (state_dict, prefix, metadata)
            follower.write_live(args[0], args[1])
        elif self.kind == "load":
            follower.forget()
        else:  # forward pre-hook, state_dict pre-hook
            follower.follow()

    def __getstate__(self) -> dict:
        return {"kind": self.kind}

    def __setstate__(self, state: dict) -> None:
        self.kind = state["kind"]
        self.follower = _gone


class TaskTarget(TaskFollower):
    """Keeps ``target`` (a copy of ``online``, e.g. ``q_net_target``) consistent with the
    per-task masks ``task_masks`` keeps on ``online``.

    * :meth:`sync` (at every task start and end): target := online, every parameter
      and buffer.
    * Base view (a task training, or between tasks): before every target forward (and
      ``state_dict``), every masked weight outside the training task's mask is set to
      the online weight there: earlier tasks' frozen weights (bit-exact, however
      SB3's polyak update with ``tau < 1`` rounded them), zeros for free weights, for
      weights a DST update dropped and for weights the view hides; the training task's
      own weights, biases and per-task layers keep their lagged target values. Every
      forward, because SB3 updates the target through ``.data``, which no version
      counter sees: one ``torch.where`` per masked layer, about a polyak update's
      cost. Between tasks the target equals the online network.
    * A finished (or unseen) task selected on the online network: the target's own
      state is kept aside and the target gets the online network's weights and state
      of that task, so its outputs for a finished task are that task's online outputs,
      fixed forever; back to the base view, its own state returns. ``state_dict``
      writes the own state then.
    """

    def __init__(self, task_masks: TaskMasks, online: nn.Module, target: nn.Module) -> None:
        self.task_masks = task_masks
        self.online = online
        self.target = target
        mine = dict(target.named_parameters())
        theirs = dict(online.named_parameters())
        if list(mine) != list(theirs) or any(mine[n].shape != theirs[n].shape for n in mine):
            raise ValueError(f"target network {type(target).__name__} does not match its "
                             "online network parameter for parameter")
        buffers = dict(target.named_buffers())
        skip = (MASK_BUFFER, OWNER_BUFFER)
        online_buffers = {n: b for n, b in online.named_buffers()
                          if n.rpartition(".")[2] not in skip and n in buffers}
        #: (online tensor, target tensor): every parameter, then the shared buffers
        self.pairs: list[tuple[Tensor, Tensor]] = (
            [(theirs[n], mine[n]) for n in theirs]
            + [(b, buffers[n]) for n, b in online_buffers.items()])
        #: target-relative name -> tensor: the target's own state
        self.tensors: dict[str, Tensor] = {**mine, **{n: buffers[n] for n in online_buffers}}
        self.masked = [(layer, mine[layer.name]) for layer in task_masks.layers]
        self._live: dict[str, Tensor] | None = None  # own state, while a task is selected
        self._view: int | None = None  # the task mirrored (None: base view)
        target.register_forward_pre_hook(_TargetHook(self, "forward"))
        target.register_state_dict_pre_hook(_TargetHook(self, "follow"))
        target.register_state_dict_post_hook(_TargetHook(self, "state"))
        target.register_load_state_dict_post_hook(_TargetHook(self, "load"))

    @torch.no_grad()
    def sync(self) -> None:
        """Target := online (called when a task starts or ends: base view)."""
        for src, dst in self.pairs:
            dst.copy_(src)
        self._live, self._view = None, None

    @torch.no_grad()
    def follow(self) -> None:
        """Follow the online network's selected task (see the class docstring)."""
        view = self.task_masks.active_task
        if view is None:
            if self._live is not None:
                for name, value in self._live.items():
                    self.tensors[name].copy_(value)
                self._live, self._view = None, None
            self._restore_outside_mask()
            return
        if self._live is None:
            self._live = {name: t.detach().clone() for name, t in self.tensors.items()}
        elif view == self._view:
            return
        for src, dst in self.pairs:
            dst.copy_(src)
        self._view = view

    def _restore_outside_mask(self) -> None:
        training = self.task_masks.training_task is not None
        for layer, w in self.masked:
            if training:
                w.copy_(torch.where(layer.mask, w, layer.weight))
            else:
                w.copy_(layer.weight)

    def write_live(self, state_dict: dict, prefix: str) -> None:
        """``state_dict`` post-hook: the target's own state while a task is selected."""
        for name, value in (self._live or {}).items():
            if prefix + name in state_dict:
                state_dict[prefix + name] = value.clone()

    def forget(self) -> None:
        """After a load: the loaded values are the target's own."""
        self._live, self._view = None, None


class TaskMaskOffPolicyMixin(TaskMaskPolicyMixin):
    """:class:`TaskMaskPolicyMixin` whose target networks (class attribute
    :attr:`task_mask_targets`) follow their online network's task masks
    (:class:`TaskTarget`)."""

    #: path of an online module with task masks -> path of its target network
    task_mask_targets: dict[str, str] = {}

    def _make_followers(self) -> list[TaskFollower]:
        masks = {path: self.task_masks_by_optimizer[key]
                 for key, path in self.task_mask_modules.items()}
        return [TaskTarget(masks[online], self.get_submodule(online),
                           self.get_submodule(target))
                for online, target in self.task_mask_targets.items()]


class TaskMaskDQNPolicy(TaskMaskOffPolicyMixin, SparseDQNPolicy):
    """A sparse DQN policy (``MlpPolicy``) with per-task masks on ``q_net``.

    Takes every option of :class:`~sparse_agents.sb3.SparseDQNPolicy` (``sparsity``
    is the *per-task* sparsity) plus ``transfer``, ``n_tasks``, ``per_task_heads``
    (the last Linear of ``q_net``, and so of ``q_net_target``, dense and wholly per
    task) and ``overflow``, as :class:`TaskMaskPolicyMixin` describes. ``q_net_target``
    follows ``q_net``'s task masks (:class:`TaskTarget`). Task API: :meth:`start_task`,
    :meth:`end_task`, :meth:`set_task`, :meth:`use_task`; :func:`start_task` also
    empties the replay buffer and restarts the exploration schedule.
    """

    task_mask_modules = {"policy": "q_net"}
    task_mask_targets = {"q_net": "q_net_target"}


class TaskMaskSACPolicy(TaskMaskOffPolicyMixin, SparseSACPolicy):
    """A sparse SAC policy (``MlpPolicy``) with per-task masks on the actor and the
    critic, one :class:`~sparse_agents.TaskMasks` each (``task_masks_by_optimizer``:
    ``"actor"``, ``"critic"``; topologies likewise), started and ended together.

    Takes every option of :class:`~sparse_agents.sb3.SparseSACPolicy` (``sparsity`` is
    the *per-task* sparsity of each network) plus ``transfer``, ``n_tasks``,
    ``per_task_heads`` (the actor's ``mu`` and ``log_std`` and the last Linear of each
    ``qf<i>``, dense and wholly per task) and ``overflow``. ``critic_target`` follows
    the critic's task masks (:class:`TaskTarget`). A features extractor with weights
    shared by actor and critic is refused.
    """

    task_mask_modules = {"actor": "actor", "critic": "critic"}
    task_mask_targets = {"critic": "critic_target"}


class TaskExploration:
    """DQN's exploration schedule restarted at a task: ``base`` evaluated on the progress
    made since the first call (SB3 calls the schedule with the progress remaining of the
    current ``learn()``, 1 -> 0; the first call is after the task's first step). With
    ``learn(..., reset_num_timesteps=False)`` the task's ``learn()`` goes through the
    whole schedule too; with SB3's default ``True`` this is SB3's own restart."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.start: float | None = None

    def __call__(self, progress_remaining: float) -> float:
        if self.start is None:
            self.start = float(progress_remaining)
        relative = progress_remaining / self.start if self.start > 0 else 0.0
        return self.base(min(1.0, relative))


def clear_replay_buffer(model: BaseAlgorithm, keep_buffer: bool = False) -> None:
    """Empty ``model.replay_buffer`` (SB3's ``reset()``) unless ``keep_buffer``: a new
    task learns from its own transitions only. Nothing for an on-policy model."""
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None and not keep_buffer:
        buffer.reset()


def start_task(model: BaseAlgorithm, task_id: int, *, keep_buffer: bool = False,
               reset_optimizer: bool = True, restart_exploration: bool = True,
               claim: str = "budget") -> None:
    """Start task ``task_id`` on ``model``, an SB3 algorithm whose policy has per-task
    masks: ``model.policy.start_task(task_id, reset_optimizer)``, then

    * ``keep_buffer=False``: empty ``model.replay_buffer`` (SB3's ``reset()``), so that
      the new task learns from its own transitions only;
    * ``restart_exploration`` (DQN and others with an ``exploration_schedule``): the
      epsilon schedule starts again from ``exploration_initial_eps``
      (:class:`TaskExploration`).

    ``claim="free"``: the task claims every free weight (PackNet; prune with
    ``model.policy.prune_task()`` before ``end_task``). SAC's entropy coefficient is the
    algorithm's and carries over. Errors (unknown
    policy, task id trained already, no capacity) leave the model unchanged.
    """
    for name, value in (("keep_buffer", keep_buffer), ("reset_optimizer", reset_optimizer),
                        ("restart_exploration", restart_exploration)):
        if value not in (True, False):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    policy = getattr(model, "policy", None)
    if not isinstance(policy, TaskMaskPolicyMixin):
        raise ValueError("model.policy must be a policy with per-task masks "
                         "(TaskMaskDQNPolicy, TaskMaskSACPolicy, TaskMaskActorCriticPolicy), "
                         f"got {type(policy).__name__}")
    policy.start_task(task_id, reset_optimizer=reset_optimizer, claim=claim)
    clear_replay_buffer(model, keep_buffer)
    schedule = getattr(model, "exploration_schedule", None)
    if restart_exploration and schedule is not None:
        base = schedule.base if isinstance(schedule, TaskExploration) else schedule
        model.exploration_schedule = TaskExploration(base)
        model.exploration_rate = base(1.0)

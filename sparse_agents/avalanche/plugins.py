"""Avalanche plugins: DST on any strategy (:class:`DSTPlugin`) and per-task masks with
DST inside each task (:class:`TaskMaskPlugin`). Thin adapters: the algorithms live in
:class:`sparse_agents.SparseTopology` and :class:`sparse_agents.TaskMasks`.

Rules both plugins follow:

* **Set-up** happens at the first ``before_training_exp``, after Avalanche's model
  adaptation and optimizer set-up, on the strategy's own model and optimizer.
* **Replaced models**: some strategies put a new model object in ``strategy.model``
  (``GDumb`` re-initialises it at every experience). :class:`DSTPlugin` then sets up
  again on the new model (a new topology, same options); :class:`TaskMaskPlugin`
  raises ``ValueError``, since the trained tasks' weights and masks stay on the old
  model. Weights rewritten in place after the set-up (``FromScratchTraining`` resets
  them to their initial values) are masked again at the start of every epoch.
* **Optimizers**: Avalanche edits the optimizer in place between experiences (new
  heads appended, state optionally reset) and some plugins (``PackNetPlugin``)
  replace it. The plugins re-attach to ``strategy.optimizer`` at every experience and
  check before every update that it is still the hooked one, re-attaching (and zeroing
  the state of inactive weights) if it changed.
* **Heads**: Linear/Conv layers inside Avalanche's dynamic classifiers
  (``MultiHeadClassifier``, ``IncrementalClassifier``) are kept dense, because
  Avalanche adds and replaces them as tasks and classes arrive. Every other
  Linear/Conv layer the optimizer trains is masked, and ``sparsity`` is that of the
  masked layers (heads do not count in the budget). With :class:`TaskMaskPlugin` the
  heads, like biases and normalisation layers, are per-task state.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from sparse_agents.config import SparseConfig
from sparse_agents.topology import SparseTopology, find_maskable

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", module="qpsolvers.*")
    from avalanche.core import SupervisedPlugin
    from avalanche.models import IncrementalClassifier, MultiHeadClassifier

from sparse_agents.task_masks import TaskMasks  # noqa: E402

__all__ = ["DSTPlugin", "TaskMaskPlugin", "head_layers"]

HEAD_TYPES = (MultiHeadClassifier, IncrementalClassifier)


def head_layers(model: nn.Module) -> list[str]:
    """Regexes matching the maskable layers inside Avalanche dynamic classifiers (and
    any layer added there later)."""
    if isinstance(model, HEAD_TYPES):
        return [r".*"]  # the model is itself a head: nothing to mask
    heads = [name for name, m in model.named_modules() if isinstance(m, HEAD_TYPES) and name]
    patterns = [re.escape(h) + r"\..*" for h in heads]
    names = [n for n, _ in find_maskable(model)]
    return [p for p in patterns if any(re.fullmatch(p, n) for n in names)]


def _task_label(experience) -> int:
    labels = list(getattr(experience, "task_labels", None) or [])
    if len(labels) != 1:
        raise ValueError(f"TaskMaskPlugin needs one task label per experience, got {labels}: "
                         "use a task-incremental stream (continual.streams)")
    return int(labels[0])


def _shared_labels_error(what: str) -> ValueError:
    return ValueError(
        f"TaskMaskPlugin: {what}, as on a class-incremental stream; class-incremental "
        "streams need task labels for per-task masks (one new task label per training "
        "experience): use DSTPlugin, or a task-incremental stream (e.g. "
        "split_digits(task_incremental=True))")


def _check_task_incremental(experience) -> None:
    """Refuse a stream whose experiences repeat task labels, before any training (from
    the experience's origin stream when it is a finite sequence; otherwise a repeated
    label is refused when its experience comes)."""
    try:
        stream = experience.origin_stream
        stream = [stream[i] for i in range(len(stream))]
    except (AttributeError, TypeError, ValueError, IndexError):
        return
    seen: set[int] = set()
    shared: set[int] = set()
    for exp in stream:
        for label in getattr(exp, "task_labels", None) or []:
            (shared if int(label) in seen else seen).add(int(label))
    if shared:
        raise _shared_labels_error(f"experiences of this stream share task labels "
                                   f"{sorted(shared)}")


class DSTPlugin(SupervisedPlugin):
    """Dynamic sparse training of the strategy's model across experiences (a strategy
    that replaces its model, such as GDumb, gets a new topology on the new model).

    Args:
        sparsity, updater, distribution: as :class:`SparseTopology`.
        restart_schedule: reset the step counter at every experience, so the drop
            schedule (``t_end``, cosine decay) restarts per experience (default True).
        dense_layers: more layers to keep dense (names, regexes, indices); heads of
            Avalanche dynamic classifiers are always dense.
        config: every topology option as one :class:`~sparse_agents.SparseConfig`,
            instead of the keywords (its ``exclude_layers`` get the heads added).
        topology_kwargs: ``delta_t``, ``t_end``, ``drop_fraction``, ``schedule``,
            ``gamma_sal``, ``seed``, ``grad_masking``, ...
    """

    def __init__(self, sparsity: float = 0.9, updater: str = "srigl",
                 distribution: str = "erk", *, restart_schedule: bool = True,
                 dense_layers: Iterable[str | int] = (), config: SparseConfig | None = None,
                 **topology_kwargs) -> None:
        super().__init__()
        #: the topology options (every new topology is built from them)
        self.config = SparseConfig.resolve(
            config, "DSTPlugin", sparsity=sparsity, updater=updater, distribution=distribution,
            dense_layers=dense_layers, **topology_kwargs)
        self.restart_schedule = bool(restart_schedule)
        self.topology: SparseTopology | None = None
        self.history: list[dict[str, float]] = []
        self._model: nn.Module | None = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        model = strategy.model
        if self.topology is not None and model is not self._model:
            self.topology.detach()  # a new model (GDumb): set up again on it
            self.topology = None
        if self.topology is None:
            cfg = self.config
            self.topology = SparseTopology.from_config(model, strategy.optimizer, cfg.replace(
                exclude_layers=(*cfg.exclude_layers, *head_layers(model))))
            self._model = model
            return
        if self.restart_schedule:
            self.topology.restart(reset_updates=False)
        self.topology.attach(strategy.optimizer)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if self.topology is not None:  # weights rewritten in place since the set-up
            self.topology.remask()

    def before_update(self, strategy, **kwargs) -> None:
        if self.topology is not None and strategy.optimizer is not self.topology.optimizer:
            self.topology.attach(strategy.optimizer)

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self.topology is not None:
            self.history.append(self.topology.metrics())


class TaskMaskPlugin(SupervisedPlugin):
    """Per-task masks with DST inside each task (see :mod:`sparse_agents.task_masks`).

    Each experience must carry one task label, new for training: a stream whose
    experiences share labels (class-incremental) is refused with ``ValueError`` at the
    first experience. Training experience with task label ``t`` claims
    ``1 - sparsity`` of the weights (spread by ``distribution``) among the free ones;
    evaluation selects the mask and per-task state of the experience's (and each
    mini-batch's) task label; a label never trained raises ``KeyError``. ``ValueError``
    also for a mini-batch mixing task labels (replay in the batch, DER's appended
    samples, ER-ACE/ER-AML's ``mb_buffer_tid``) and for a strategy that replaces its
    model (GDumb).

    Args:
        sparsity, updater, distribution, transfer, n_tasks, overflow, seed: as
            :class:`TaskMasks` (``n_tasks=None`` takes the length of the experience's
            origin stream when Avalanche provides it).
        unseen: evaluating a task never trained: ``"raise"`` (default, ``KeyError``)
            or ``"next"``: the forward a new task would start from (every trained
            task's weights with transfer), as Avalanche's periodic evaluation
            (``eval_every >= 0`` evaluates before training) and forward-transfer
            metrics need. Before the first experience the model is still dense.
        dense_layers: more layers to keep dense (per-task state); heads of Avalanche
            dynamic classifiers are always dense.
        config: every topology option as one :class:`~sparse_agents.SparseConfig`
            (``seed`` included), instead of the keywords (its ``dense_layers`` get the
            heads added).
        topology_kwargs: ``delta_t``, ``t_end``, ``drop_fraction``, ``gamma_sal``, ...
    """

    def __init__(self, sparsity: float = 0.9, updater: str = "srigl",
                 distribution: str = "erk", transfer: bool = True, *,
                 n_tasks: int | None = None, overflow: str = "raise", seed: int = 0,
                 unseen: str = "raise", dense_layers: Iterable[str | int] = (),
                 config: SparseConfig | None = None, **topology_kwargs) -> None:
        super().__init__()
        if unseen not in ("raise", "next"):
            raise ValueError(f"unseen must be 'raise' or 'next', got {unseen!r}")
        self.unseen = unseen
        #: the topology options of the task masks
        self.config = SparseConfig.resolve(
            config, "TaskMaskPlugin", sparsity=sparsity, updater=updater,
            distribution=distribution, seed=seed, dense_layers=dense_layers,
            **topology_kwargs)
        self.transfer = transfer
        self.n_tasks = n_tasks
        self.overflow = overflow
        self.task_masks: TaskMasks | None = None
        self.history: list[dict[str, float]] = []

    @property
    def topology(self) -> SparseTopology | None:
        return None if self.task_masks is None else self.task_masks.topology

    def _n_tasks(self, experience) -> int | None:
        if self.n_tasks is not None:
            return self.n_tasks
        try:
            return len(experience.origin_stream)
        except (AttributeError, TypeError, ValueError):
            return None

    def _check_model(self, strategy) -> None:
        if self.task_masks is not None and strategy.model is not self.task_masks.model:
            raise ValueError(
                "TaskMaskPlugin: the strategy replaced its model (strategy.model is a new "
                "object since the plugin set up, as GDumb does at every experience); the "
                f"weights and masks of trained tasks {self.task_masks.task_ids} stay on the "
                "old model: use a strategy that keeps its model (Naive, EWC, "
                "SynapticIntelligence, MAS, LwF), or DSTPlugin")

    def before_training_exp(self, strategy, **kwargs) -> None:
        task = _task_label(strategy.experience)
        model = strategy.model
        if self.task_masks is None:
            _check_task_incremental(strategy.experience)
            cfg = self.config
            self.task_masks = TaskMasks(
                model, transfer=self.transfer, n_tasks=self._n_tasks(strategy.experience),
                overflow=self.overflow, config=cfg.replace(
                    dense_layers=(*head_layers(model), *cfg.dense_layers)))
        self._check_model(strategy)
        if self.task_masks.training_task is not None:
            self.task_masks.end_task()
        if task in self.task_masks.finished_tasks:
            raise _shared_labels_error(f"task label {task} was trained already")
        self.task_masks.start_task(task, strategy.optimizer)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if self.topology is not None:  # weights rewritten in place since the set-up
            self.topology.remask()

    def _check_batch(self, strategy) -> None:
        tm = self.task_masks
        if tm is None or tm.training_task is None:
            return
        ids = strategy.mb_task_id.reshape(-1)
        replay = getattr(strategy, "mb_buffer_tid", None)  # ER_ACE, ER_AML: replay batch
        if torch.is_tensor(replay):
            ids = torch.cat([ids, replay.reshape(-1).to(ids.device)])
        if bool((ids != tm.training_task).any()):
            raise ValueError(
                f"TaskMaskPlugin trains task {tm.training_task} but the mini-batch holds task "
                f"labels {sorted(set(ids.tolist()))}: per-task masks train one task at a time "
                "(replay of other tasks is not supported)")

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._check_batch(strategy)

    def after_forward(self, strategy, **kwargs) -> None:
        self._check_batch(strategy)  # again: DER appends replay samples to the mini-batch

    def before_update(self, strategy, **kwargs) -> None:
        topo = self.topology
        if topo is not None and strategy.optimizer is not topo.optimizer:
            topo.attach(strategy.optimizer)

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self.task_masks is not None and self.task_masks.training_task is not None:
            self.history.append(self.task_masks.metrics())
            self.task_masks.end_task()

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._check_model(strategy)
        if self.task_masks is None:
            if self.unseen == "next":
                return  # nothing trained yet: the dense initial model
            raise KeyError("TaskMaskPlugin: no task is trained yet, so no task has a mask "
                           "(pass unseen='next' to evaluate before training)")
        labels = list(getattr(strategy.experience, "task_labels", None) or [])
        if len(labels) == 1:
            self.task_masks.set_task(int(labels[0]), allow_unseen=self.unseen == "next")

    def before_eval_forward(self, strategy, **kwargs) -> None:
        tm = self.task_masks
        if tm is None:
            return
        ids = strategy.mb_task_id
        first = int(ids[0])
        if bool((ids != first).any()):
            raise ValueError(f"TaskMaskPlugin: a mini-batch mixes task labels "
                             f"{sorted(set(ids.tolist()))}; evaluate one task per batch")
        selected = tm.active_task
        if selected is None:
            selected = tm.training_task
        if first != selected:
            tm.set_task(first, allow_unseen=self.unseen == "next")

    def after_eval(self, strategy, **kwargs) -> None:
        if self.task_masks is not None:
            self.task_masks.set_task(None)

"""One continual-learning run: a stream, a strategy, a sparsity method -> metrics.

:func:`run_experiment` trains a model task after task and evaluates every seen task
after each one (the accuracy matrix), then reports average accuracy, forgetting and
BWT (:mod:`continual.metrics`). Each task is also evaluated just before training it
and compared with the freshly built (dense, randomly initialised) model's accuracy on
it (``fwt_baseline``), which gives forward transfer (``fwt``).

Models: a backbone from :mod:`continual.backbones` (``backbone=``; default an MLP
``in-256-256``, a small CNN for CIFAR) with one dense head per task label on
task-incremental streams (Avalanche ``MultiHeadClassifier``), one shared head on
class-incremental ones. Heads are never masked (see :mod:`sparse_agents.avalanche.plugins`).

Engines (``engine=`` keyword):

* ``"torch"``: a plain PyTorch loop (shuffled mini-batches, the strategy's optimizer
  kept across tasks, one head per task), with :class:`SparseTopology` (DST) or
  :class:`TaskMasks` hooked on the optimizer. It is what Avalanche's ``Naive`` does,
  without Avalanche's 4-5 s import, so only ``strategy="naive"`` runs on it.
* ``"avalanche"``: Avalanche strategies (``Naive``, ``EWC``, ``Replay``; ``packnet`` is
  ``Naive`` + ``PackNetPlugin`` on a ``PackNetModel``) with :class:`DSTPlugin` or
  :class:`TaskMaskPlugin`, and Avalanche's ``EvaluationPlugin`` (accuracy and
  forgetting metrics).
* ``"auto"`` (default): ``torch`` for naive, ``avalanche`` otherwise.

Sparsity methods: ``updater="dense"`` trains dense; otherwise ``task_masks=True`` gives
each task its own ``1 - sparsity`` of the weights (``n_tasks`` caps the layer densities
so every task fits) and ``task_masks=False`` runs DST over the whole stream (the
schedule restarts per task). ``packnet`` uses its own pruning: ``sparsity`` sets the
share each task keeps, ``updater`` and ``task_masks`` do not apply.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from continual import backbones
from continual.metrics import accuracy_matrix_from_avalanche, fwt, summarize
from continual.streams import StreamData, TaskData, load_stream
from sparse_agents.config import SparseConfig
from sparse_agents.experiments.results import write_matrix_outputs
from sparse_agents.task_masks import TaskMasks
from sparse_agents.topology import SparseTopology
from sparse_agents.updaters import DENSE, get_updater, updater_names

__all__ = ["STRATEGIES", "build_backbone", "run_experiment",
           "write_outputs"]

STRATEGIES = ("naive", "ewc", "replay", "packnet")
ENGINES = ("auto", "torch", "avalanche")
OPTIMIZERS = ("adam", "adamw", "sgd")
HEADS = r"heads\..*"
EVAL_BATCH = 2048

Progress = Callable[[int, int, str], None]


# ---------------------------------------------------------------------- models
def build_backbone(input_shape: tuple[int, ...], hidden: int = 256) -> nn.Module:
    """``in-hidden-hidden`` ReLU MLP for flat inputs, a 2-conv CNN for images (the
    default of :func:`continual.backbones.build_backbone`)."""
    return backbones.build_backbone(None, input_shape, hidden=hidden)[0]


def build_model(data: StreamData, backbone: str | None, hidden: int,
                width: float) -> nn.Module:
    """Backbone plus heads: one per task label (task-incremental) or one shared."""
    body, features = backbones.build_backbone(backbone, data.input_shape, hidden=hidden,
                                              width=width)
    if data.task_incremental:
        return MultiHeadNet(body, features, {t.task_label: t.n_classes for t in data.tasks})
    return SingleHeadNet(body, features, data.n_classes)


class MultiHeadNet(nn.Module):
    """Backbone plus one head per task label (``heads.<label>``), chosen per call."""

    def __init__(self, backbone: nn.Module, hidden: int, heads: dict[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({str(t): nn.Linear(hidden, n) for t, n in heads.items()})

    def forward(self, x: Tensor, task: int) -> Tensor:
        return self.heads[str(int(task))](self.backbone(x))


class SingleHeadNet(nn.Module):
    """Backbone plus one shared head."""

    def __init__(self, backbone: nn.Module, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def _optimizer(params, name: str, lr: float, weight_decay: float,
               momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


# ---------------------------------------------------------------------- checks
def _check_args(stream_data: StreamData, strategy: str, updater: str, task_masks: bool,
                epochs: int, engine: str, optimizer: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    get_updater(updater, dense=True)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if strategy == "packnet":
        if epochs < 2:
            raise ValueError("epochs must be >= 2 for packnet (it fine-tunes after pruning)")
        if not stream_data.task_incremental:
            raise ValueError("packnet needs task labels: use a task-incremental stream, "
                             f"not {stream_data.name!r}")
        return
    if task_masks:
        if updater == DENSE:
            raise ValueError("updater='dense' has no masks: pass task_masks=False, or an "
                             f"updater in {updater_names()}")
        if not stream_data.task_incremental:
            raise ValueError(f"task_masks=True needs task labels at test time; "
                             f"{stream_data.name!r} is class-incremental: use task_masks=False")
        if strategy == "replay":
            raise ValueError("task_masks=True trains one task at a time: strategy='replay' "
                             "mixes tasks in a mini-batch; use naive or ewc")


def _schedule(config: SparseConfig, given: dict, stream_data: StreamData, epochs: int,
              batch_size: int) -> SparseConfig:
    """``config`` with the DST schedule per task: ``delta_t`` ~ steps/8 and ``t_end`` 0.75
    of a task's steps, unless ``given``."""
    n = min(len(t.y_train) for t in stream_data.tasks)
    steps = epochs * math.ceil(n / batch_size)
    delta_t = given.get("delta_t")
    delta_t = max(1, steps // 8) if delta_t is None else int(delta_t)
    t_end = given.get("t_end")
    t_end = max(delta_t + 1, int(0.75 * steps)) if t_end is None else int(t_end)
    return config.replace(delta_t=delta_t, t_end=t_end)


def _mask_metrics(source: TaskMasks | SparseTopology | None) -> dict[str, float]:
    """Topology metrics (``{}`` when dense) plus ``masked_density``: the active share of
    the masked layers alone (``density`` also counts layers kept dense, such as the
    heads under task masks)."""
    if source is None:
        return {}
    out = {k: float(v) for k, v in source.metrics().items()}
    layers = source.layers
    out["masked_density"] = (sum(int(x.mask.sum()) for x in layers)
                             / sum(x.mask.numel() for x in layers))
    return out


# ---------------------------------------------------------------------- torch engine
@torch.no_grad()
def _accuracy(model: nn.Module, task: TaskData, multi_head: bool, batch: int = 2048) -> float:
    """Top-1 accuracy on ``task``'s test data, on the model's device."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(task.y_test), batch):
        x = task.x_test[i:i + batch].to(device)
        out = model(x, task.task_label) if multi_head else model(x)
        correct += int((out.argmax(1).cpu() == task.y_test[i:i + batch]).sum())
    return correct / max(1, len(task.y_test))


def _run_torch(data: StreamData, *, config: SparseConfig | None, task_masks: bool,
               epochs: int, seed: int, batch_size: int, hidden: int, backbone: str | None,
               width: float, opt_args: dict, transfer: bool, overflow: str,
               progress: Progress | None, device: str) -> tuple[np.ndarray, dict, np.ndarray]:
    """``R``, mask metrics and ``nxt``: ``nxt[j]`` the accuracy on task ``j`` just before
    training it (after task ``j - 1``; NaN for ``j = 0``). ``config``: the topology
    options (``None``: dense)."""
    torch.manual_seed(seed)
    model = build_model(data, backbone, hidden, width).to(device)
    multi = data.task_incremental
    dense_heads = [HEADS] if multi else [r"head"]
    tm: TaskMasks | None = None
    topo: SparseTopology | None = None
    if config is not None and task_masks:
        tm = TaskMasks(model, transfer=transfer, n_tasks=data.n_tasks, overflow=overflow,
                       config=config.replace(dense_layers=(*config.dense_layers, *dense_heads)))
    opt = _optimizer(model.parameters(), **opt_args)
    if config is not None and not task_masks:
        topo = SparseTopology.from_config(model, opt, config.replace(
            exclude_layers=(*config.exclude_layers, *dense_heads)))
    gen = torch.Generator().manual_seed(seed)
    T = data.n_tasks
    R = np.full((T, T), np.nan)
    nxt = np.full(T, np.nan)
    total = sum(epochs * math.ceil(len(t.y_train) / batch_size) for t in data.tasks)
    done = 0
    for i, task in enumerate(data.tasks):
        if tm is not None:
            tm.start_task(task.task_label, opt)
        elif topo is not None:
            topo.restart(reset_updates=False)
        model.train()
        n = len(task.y_train)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, batch_size):
                idx = order[s:s + batch_size]
                x, y = task.x_train[idx].to(device), task.y_train[idx].to(device)
                out = model(x, task.task_label) if multi else model(x)
                loss = nn.functional.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if progress is not None:
                    progress(done, total, f"task {i + 1}/{T}")
        if tm is not None:
            tm.end_task()
        model.eval()
        for j in range(i + 1):
            other = data.tasks[j]
            if tm is not None:
                with tm.use_task(other.task_label):
                    R[i, j] = _accuracy(model, other, multi)
            else:
                R[i, j] = _accuracy(model, other, multi)
        if i + 1 < T:
            following = data.tasks[i + 1]
            if tm is not None:
                with tm.use_task(following.task_label, allow_unseen=True):
                    nxt[i + 1] = _accuracy(model, following, multi)
            else:
                nxt[i + 1] = _accuracy(model, following, multi)
    return R, _mask_metrics(tm if tm is not None else topo), nxt


@torch.no_grad()
def random_init_accuracies(data: StreamData, backbone: str | None, hidden: int, width: float,
                           seed: int) -> list[float]:
    """FWT's baseline: accuracy on every task of the model built under ``seed``, dense and
    untrained (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(data, backbone, hidden, width).eval()
        return [_accuracy(model, t, data.task_incremental) for t in data.tasks]


# ---------------------------------------------------------------------- avalanche engine
def _packnet_proportions(sparsity: float, n_tasks: int) -> list[float]:
    """Prune proportion per task so that each task keeps ``1 - sparsity`` of the layer:
    task k keeps ``d / (1 - k d)`` of what is still free."""
    d = 1.0 - sparsity
    out = []
    for k in range(n_tasks):
        remaining = 1.0 - k * d
        out.append(0.0 if remaining <= d else 1.0 - d / remaining)
    return out


def _import_avalanche() -> None:
    """Import what the Avalanche engine uses, silencing qpsolvers' warning (once)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*QP solver.*")
        warnings.filterwarnings("ignore", module="qpsolvers.*")
        import avalanche.training  # noqa: F401

        import sparse_agents.avalanche.plugins  # noqa: F401


@functools.cache
def _multi_head_class() -> type:
    from avalanche.models import MultiHeadClassifier, MultiTaskModule

    class AvalancheMultiHead(MultiTaskModule):
        """Backbone plus Avalanche's ``MultiHeadClassifier``: a head per task label,
        added by the model adaptation when the label first comes."""

        def __init__(self, backbone: nn.Module, features: int, n_classes: int) -> None:
            super().__init__()
            self.backbone = backbone
            self.classifier = MultiHeadClassifier(features, n_classes, masking=False)

        def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
            return self.classifier(self.backbone(x), task_label)

    return AvalancheMultiHead


def _avalanche_model(data: StreamData, strategy: str, backbone: str | None, hidden: int,
                     width: float, epochs: int, sparsity: float) -> tuple[nn.Module, list]:
    """The model the engine trains and the plugins it needs (PackNet's)."""
    from avalanche.models.packnet import PackNetModel, PackNetPlugin

    body, features = backbones.build_backbone(backbone, data.input_shape, hidden=hidden,
                                              width=width)
    if strategy == "packnet":
        model = PackNetModel(SingleHeadNet(body, features, data.n_classes))
        return model, [PackNetPlugin(post_prune_epochs=max(1, epochs // 2),
                                     prune_proportion=_packnet_proportions(sparsity,
                                                                           data.n_tasks))]
    if data.task_incremental:
        return _multi_head_class()(body, features, data.tasks[0].n_classes), []
    return SingleHeadNet(body, features, data.n_classes), []


def _sparse_plugin(data: StreamData, strategy: str, config: SparseConfig | None,
                   task_masks: bool, transfer: bool, overflow: str):
    """:class:`TaskMaskPlugin`, :class:`DSTPlugin` or None (dense, packnet)."""
    from sparse_agents.avalanche.plugins import DSTPlugin, TaskMaskPlugin

    if strategy == "packnet" or config is None:
        return None
    if task_masks:
        return TaskMaskPlugin(transfer=transfer, n_tasks=data.n_tasks, overflow=overflow,
                              config=config)
    dense = () if data.task_incremental else ("head",)
    return DSTPlugin(config=config.replace(dense_layers=(*config.dense_layers, *dense)))


def _progress_plugin(progress: Progress, total: int, n_tasks: int):
    from avalanche.core import SupervisedPlugin

    class _Progress(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def after_training_iteration(self, strategy, **_) -> None:
            self.done += 1
            progress(self.done, total,
                     f"task {strategy.clock.train_exp_counter + 1}/{n_tasks}")

    return _Progress()


def _avalanche_strategy(strategy: str, model: nn.Module, opt: torch.optim.Optimizer,
                        plugins: list, epochs: int, batch_size: int, kw: dict,
                        device: str = "cpu"):
    """Avalanche's ``Naive`` (naive, packnet), ``EWC`` or ``Replay`` on ``device``, with an
    ``EvaluationPlugin`` of accuracy and forgetting (no loggers)."""
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training import EWC, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                     forgetting_metrics(experience=True, stream=True),
                                     loggers=[])
    common = dict(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(),
                  train_mb_size=batch_size, train_epochs=epochs, eval_mb_size=EVAL_BATCH,
                  device=device, plugins=plugins, evaluator=evaluator)
    if strategy == "ewc":
        return EWC(ewc_lambda=float(kw["ewc_lambda"]), **common)
    if strategy == "replay":
        return Replay(mem_size=int(kw["mem_size"]), **common)
    return Naive(**common)


@torch.no_grad()
def _avalanche_accuracy(model: nn.Module, task: TaskData) -> float:
    """Top-1 accuracy on ``task``'s test data as Avalanche's eval computes it (the
    model's forward with the mini-batch's task labels, eval mode, batches of
    ``EVAL_BATCH``)."""
    from avalanche.models.utils import avalanche_forward

    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(task.y_test), EVAL_BATCH):
        x, y = task.x_test[i:i + EVAL_BATCH].to(device), task.y_test[i:i + EVAL_BATCH]
        labels = torch.full((len(y),), task.task_label, dtype=torch.long, device=device)
        pred = torch.max(avalanche_forward(model, x, labels), 1)[1].cpu()
        correct += int((pred == y).sum())
    return correct / max(1, len(task.y_test))


def _adapted_accuracy(model: nn.Module, exps: list, task: TaskData) -> float:
    """Accuracy on ``task`` of ``model`` (a copy: it is changed) after Avalanche's model
    adaptation to the training experiences ``exps`` (the last one ``task``'s): a task
    label without a head gets a new one. Each adaptation runs under a forked RNG, the
    last one from the current state: ``task``'s head is the one its training starts
    from."""
    from avalanche.models.utils import avalanche_model_adaptation

    model.eval()  # a model in eval mode does not record the labels as trained
    with torch.random.fork_rng(devices=[]):
        for exp in exps[:-1]:  # heads of the earlier tasks, for the output width
            avalanche_model_adaptation(model, exp)
    with torch.random.fork_rng(devices=[]):
        avalanche_model_adaptation(model, exps[-1])
    return _avalanche_accuracy(model, task)


def _look_ahead(model: nn.Module, initial: nn.Module, masks: TaskMasks | None, bm,
                data: StreamData, j: int) -> tuple[float, float]:
    """Accuracy on task ``j`` (not trained yet) of the model as it stands and of the
    untrained ``initial`` one, both with the head training task ``j`` starts from and,
    with task masks, the view an unseen task gets. Both run on copies with the RNG
    forked: the model, masks, optimizer, plugins and the training RNG stay as they were."""
    task = data.tasks[j]
    view = (contextlib.nullcontext() if masks is None
            else masks.use_task(task.task_label, allow_unseen=True))
    with view:
        probe = copy.deepcopy(model)
    exps = [bm.train_stream[k] for k in range(j + 1)]
    return (_adapted_accuracy(probe, exps[-1:], task),
            _adapted_accuracy(copy.deepcopy(initial), exps, task))


def _train_avalanche(strat, bm, data: StreamData, initial: nn.Module,
                     sparse_plugin) -> tuple[list[dict], np.ndarray, list[float]]:
    """Train experience by experience; after each, Avalanche's eval of the seen tasks
    (``results``) and the look-ahead on the next task (``nxt``, NaN for task 0); and
    the untrained model's accuracy per task (``baseline``)."""
    T = data.n_tasks
    nxt = np.full(T, np.nan)
    baseline = [_adapted_accuracy(copy.deepcopy(initial), [bm.train_stream[0]],
                                  data.tasks[0])]
    results = []
    for i, exp in enumerate(bm.train_stream):
        strat.train(exp, eval_streams=[])
        results.append(strat.eval(bm.test_stream[: i + 1]))
        if i + 1 < T:
            masks = getattr(sparse_plugin, "task_masks", None)
            nxt[i + 1], base = _look_ahead(strat.model, initial, masks, bm, data, i + 1)
            baseline.append(base)
    return results, nxt, baseline


def _run_avalanche(data: StreamData, *, strategy: str, sparsity: float,
                   config: SparseConfig | None, task_masks: bool, epochs: int, seed: int,
                   batch_size: int, hidden: int, backbone: str | None, width: float,
                   opt_args: dict, transfer: bool, overflow: str,
                   progress: Progress | None, device: str,
                   kw: dict) -> tuple[np.ndarray, dict, np.ndarray, list[float], dict]:
    """``R``, mask metrics, ``nxt`` (as :func:`_run_torch`), the baseline (the engine's
    own untrained model per task, with the head each task's training starts from) and
    Avalanche's stream metrics. ``sparsity``: PackNet's."""
    _import_avalanche()
    from avalanche.training.determinism.rng_manager import RNGManager

    from continual.streams import to_benchmark

    RNGManager.set_random_seeds(seed)
    bm = to_benchmark(data)
    model, plugins = _avalanche_model(data, strategy, backbone, hidden, width, epochs,
                                      sparsity)
    initial = copy.deepcopy(model)
    opt = _optimizer(model.parameters(), **opt_args)
    sparse_plugin = _sparse_plugin(data, strategy, config, task_masks, transfer, overflow)
    if sparse_plugin is not None:
        plugins.append(sparse_plugin)
    if progress is not None:
        total = sum(epochs * math.ceil(len(t.y_train) / batch_size) for t in data.tasks)
        plugins.append(_progress_plugin(progress, total, data.n_tasks))
    strat = _avalanche_strategy(strategy, model, opt, plugins, epochs, batch_size, kw,
                                device)
    # Replay's storage policy calls a method Avalanche 0.6 itself deprecates, and its
    # decorator resets the warning filters: record, drop that one, re-emit the others
    with warnings.catch_warnings(record=True) as caught:
        results, nxt, baseline = _train_avalanche(strat, bm, data, initial, sparse_plugin)
    for w in caught:
        if "Call to deprecated function update" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    R = accuracy_matrix_from_avalanche(results, data.n_tasks)
    masks: dict = {}
    if sparse_plugin is not None:
        masks = _mask_metrics(sparse_plugin.task_masks if task_masks
                              else sparse_plugin.topology)
    last = results[-1]
    extra = {"avalanche_stream_forgetting": float(last.get(
        "StreamForgetting/eval_phase/test_stream", float("nan"))),
        "avalanche_stream_accuracy": float(last.get(
            "Top1_Acc_Stream/eval_phase/test_stream/Task000", float("nan")))}
    return R, masks, nxt, baseline, extra


# ---------------------------------------------------------------------- entry point
def run_experiment(
    stream: str,
    strategy: str = "naive",
    updater: str = "srigl",
    sparsity: float = 0.9,
    distribution: str = "erk",
    task_masks: bool = True,
    epochs: int = 2,
    seed: int = 0,
    n_tasks: int | None = None,
    out: str | Path | None = None,
    **kw,
) -> dict:
    """Train ``stream`` task by task and evaluate every seen task after each one.

    Args:
        stream: a stream name from :mod:`continual.streams` (e.g. ``split-digits``).
        strategy: ``"naive"``, ``"ewc"``, ``"replay"`` or ``"packnet"``.
        updater: ``"dense"`` (no sparsity) or a DST updater (static/set/rigl/srigl).
        sparsity: in [0, 1); with task masks, the share each task does *not* claim.
        distribution: ``"uniform"``, ``"er"`` or ``"erk"``.
        task_masks: per-task masks (:class:`TaskMasks`) instead of DST over the stream.
        epochs: epochs per task (>= 1; >= 2 for packnet).
        seed: seeds data split, model, masks and mini-batch order.
        n_tasks: tasks in the stream (default per stream, e.g. 5).
        out: folder for ``accuracy_matrix.csv``, ``summary.json`` and ``heatmap.png``.
        kw: ``engine`` (auto/torch/avalanche), ``device`` ("cpu"; e.g. "cuda"),
            ``lr`` (1e-3), ``batch_size`` (32),
            ``backbone`` (a :data:`continual.backbones.BACKBONES` name; default ``mlp``
            for flat inputs, ``cnn`` for images), ``width`` (1.0, the channel multiplier
            of ``mobilenetv2``/``slimresnet18``), ``hidden`` (256), ``optimizer``
            (adam/adamw/sgd), ``weight_decay`` (0),
            ``momentum`` (0.9, sgd), ``transfer`` (True), ``overflow`` ("raise" or
            "shrink", task masks), every other option of
            :class:`~sparse_agents.SparseConfig` (e.g. ``delta_t``, default about a
            task's steps / 8, ``t_end``, default 0.75 of a task's steps,
            ``drop_fraction``: the prune fraction, ``schedule``: its decay, e.g.
            ``"cosine"``, ``gamma_sal``), ``ewc_lambda`` (100), ``mem_size`` (200),
            ``data_root``, ``max_train_per_task``, ``shuffle_classes``, ``progress``
            (a callable ``(done, total, text)``).

    Returns:
        ``avg_accuracy``, ``forgetting``, ``bwt``, ``fwt`` (mean over tasks j >= 1 of
        ``next_task_accuracies[j] - fwt_baseline[j]``), ``fwt_baseline`` (the untrained
        model's accuracy per task), ``next_task_accuracies`` (accuracy on task j after
        training task j - 1, just before training it; None for task 0; with task
        masks, the view an unseen task gets), ``accuracy_matrix`` (rows: after
        training task i; columns: task j; None where not evaluated), ``masks``
        (topology metrics, ``{}`` when dense), the configuration and ``wall_time``.
        On Avalanche's engine the model's heads come with their tasks, so task j is
        evaluated (and the baseline too) with the head training task j then starts
        from, on copies of the model: training is bit-identical without it.
    """
    start = time.perf_counter()
    kw = dict(kw)
    given = SparseConfig.pick(kw)  # the topology options: one config
    for key in given:
        del kw[key]
    config = SparseConfig.from_dict({"sparsity": sparsity, "distribution": distribution,
                                     "seed": int(seed), **given})
    sparsity = config.sparsity
    engine = kw.pop("engine", "auto")
    device = str(kw.pop("device", "cpu"))
    progress = kw.pop("progress", None)
    batch_size = int(kw.pop("batch_size", 32))
    hidden = int(kw.pop("hidden", 256))
    transfer = kw.pop("transfer", True)
    overflow = kw.pop("overflow", "raise")
    backbone = kw.pop("backbone", None)
    width = float(kw.pop("width", 1.0))
    if backbone is not None and backbone not in backbones.BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(backbones.BACKBONES)}, "
                         f"got {backbone!r}")
    if batch_size < 1 or hidden < 1:
        raise ValueError(f"batch_size and hidden must be >= 1, got {batch_size}, {hidden}")
    opt_args = {"name": kw.pop("optimizer", "adam"), "lr": float(kw.pop("lr", 1e-3)),
                "weight_decay": float(kw.pop("weight_decay", 0.0)),
                "momentum": float(kw.pop("momentum", 0.9))}
    data = load_stream(stream, n_tasks, seed, root=kw.pop("data_root", None),
                       max_train_per_task=kw.pop("max_train_per_task", None),
                       shuffle_classes=bool(kw.pop("shuffle_classes", False)))
    task_masks = bool(task_masks)
    _check_args(data, strategy, updater, task_masks, epochs, engine, opt_args["name"])
    if strategy == "packnet":
        task_masks = False
    config = _schedule(config, given, data, epochs, batch_size)
    # the schedule and the options given, as the result records them
    dst = {"delta_t": config.delta_t, "t_end": config.t_end,
           **{k: v for k, v in given.items() if k not in ("delta_t", "t_end")}}
    strategy_args = {"ewc_lambda": float(kw.pop("ewc_lambda", 100.0)),
                     "mem_size": int(kw.pop("mem_size", 200))}
    if kw:
        raise ValueError(f"unknown keyword arguments {sorted(kw)}; see run_experiment's "
                         "docstring for the accepted ones")
    if engine == "auto":
        engine = "torch" if strategy == "naive" else "avalanche"
    if engine == "torch" and strategy != "naive":
        raise ValueError(f"engine='torch' runs strategy='naive' only, got {strategy!r}: "
                         "use engine='avalanche'")
    common = dict(config=None if updater == DENSE else config.replace(updater=updater),
                  task_masks=task_masks, epochs=int(epochs), seed=int(seed),
                  batch_size=batch_size, hidden=hidden, backbone=backbone, width=width,
                  opt_args=opt_args, transfer=transfer, overflow=overflow,
                  progress=progress, device=device)
    extra: dict = {}
    if engine == "torch":
        baseline = random_init_accuracies(data, backbone, hidden, width, int(seed))
        R, masks, nxt = _run_torch(data, **common)
    else:
        R, masks, nxt, baseline, extra = _run_avalanche(data, strategy=strategy,
                                                        sparsity=sparsity,
                                                        kw=strategy_args, **common)
    ahead = R.copy()
    for j in range(1, data.n_tasks):
        ahead[j - 1, j] = nxt[j]
    forward = fwt(ahead, baseline)
    result = {
        **summarize(R), "fwt": forward, "fwt_baseline": baseline,
        "next_task_accuracies": [None if np.isnan(v) else float(v) for v in nxt],
        "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in R],
        "final_accuracies": [float(v) for v in R[-1]],
        "masks": masks,
        "stream": data.name, "strategy": strategy,
        "updater": "packnet" if strategy == "packnet" else updater,
        "sparsity": sparsity, "distribution": distribution, "task_masks": task_masks,
        "transfer": bool(transfer), "overflow": overflow, "epochs": int(epochs), "seed": int(seed),
        "n_tasks": data.n_tasks, "engine": engine, "device": device,
        "backbone": backbone or backbones.default_backbone(data.input_shape),
        "width": width, **dst, **extra,
        "wall_time": time.perf_counter() - start,
    }
    if out is not None:
        write_outputs(result, out)
    return result


def write_outputs(result: dict, out: str | Path) -> dict[str, Path]:
    """Write ``accuracy_matrix.csv``, ``summary.json`` and ``heatmap.png`` into ``out``."""
    masks = " task-masks" if result.get("task_masks") else ""
    title = (f"{result.get('stream')} {result.get('strategy')} {result.get('updater')}"
             f"{masks} s={result.get('sparsity')}: avg {result['avg_accuracy']:.3f}, "
             f"forgetting {result['forgetting']:.3f}")
    return write_matrix_outputs(out, result["accuracy_matrix"], result,
                                csv_name="accuracy_matrix.csv", png_name="heatmap.png",
                                value="accuracy", title=title, digits=6, value_range=(0.0, 1.0))

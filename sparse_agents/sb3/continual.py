"""Continual RL for SB3: one agent learns a task stream, task after task.

With per-task masks (:class:`TaskMaskActorCriticPolicy`, built on
:class:`continual.task_masks.TaskMasks`), every masked weight of the policy has an
owner. While task ``t`` trains, its forward uses its own weights plus the frozen
weights of earlier tasks (``transfer=True``); only its own weights get gradients and
optimizer state, and DST (any updater) drops among them and grows among free weights.
Everything else -- every bias, PPO's ``log_std``, layers kept dense -- is per-task
state: task ``t`` starts from task ``t-1``'s values and selecting a task restores its
own. So the actions and values of a finished task are bit-identical whatever later
tasks do.

Heads rule: the action and value heads (``action_net``, ``value_net``) are masked like
every other layer: each task owns a slice of their weights (its budget), reads the
frozen slices of earlier tasks and has its own bias (shared-but-frozen weights,
per-task bias). With ``per_task_heads=True`` the heads are dense and wholly per task
(copied from the previous task when a task starts, frozen afterwards).

>>> from sparse_agents.sb3.continual import train_stream
>>> result = train_stream("cartpole-physics", algo="ppo", updater="srigl", sparsity=0.9,
...                       steps_per_task=50_000, seed=0)
>>> result.returns          # after task i, mean return on task j (NaN for j > i)
>>> result.save("runs/ppo_srigl")   # return_matrix.csv, summary.json, return_matrix.png

``updater="dense"`` is the dense fine-tuning baseline (SB3's own ``MlpPolicy``);
``task_masks=False`` with a sparse updater fine-tunes one sparse network (DST keeps
running, no isolation). Supported algorithms: PPO and A2C.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from sparse_agents.sb3.mixin import SparseRuntime, default_heads, short_layer_names
from sparse_agents.sb3.policies import SparseActorCriticPolicy
from sparse_agents.topology import find_maskable
from sparse_agents.updaters import UPDATERS

__all__ = [
    "ALGOS",
    "DENSE_INPUT",
    "TASK_MASK_DEFAULTS",
    "StreamResult",
    "TaskMaskActorCriticPolicy",
    "default_hyperparameters",
    "evaluate_tasks",
    "train_stream",
]

#: supported algorithms
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C}

#: the options :class:`TaskMaskActorCriticPolicy` adds to the sparse policy options
TASK_MASK_DEFAULTS: dict[str, Any] = {
    "transfer": True,
    "n_tasks": None,
    "per_task_heads": False,
    "overflow": "raise",
}

#: the first layers of SB3's policy and value MLPs (``dense_input=True``)
DENSE_INPUT = (r"mlp_extractor\.policy_net\.0", r"mlp_extractor\.value_net\.0")

#: per (algorithm, environment family) hyperparameters (rl-baselines3-zoo's, constant
#: learning rate); ``n_envs`` goes to the vectorised environment
_HYPERPARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "cartpole"): dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8,
                              gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3),
    ("a2c", "cartpole"): dict(n_envs=8, ent_coef=0.0),
    ("ppo", "acrobot"): dict(n_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99,
                             n_epochs=4, ent_coef=0.0),
    ("a2c", "acrobot"): dict(n_envs=16, ent_coef=0.0),
    ("ppo", "pendulum"): dict(n_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9,
                              n_epochs=10, ent_coef=0.0, learning_rate=1e-3),
    ("a2c", "pendulum"): dict(n_envs=8, n_steps=8, gae_lambda=0.9, gamma=0.9,
                              ent_coef=0.0, max_grad_norm=0.5, learning_rate=7e-4),
}


def default_hyperparameters(algo: str, stream: str) -> dict[str, Any]:
    """The default ``algo`` keyword arguments (and ``n_envs``) for a stream: tuned ones
    for the CartPole, Acrobot and Pendulum families, SB3's defaults (4 envs) otherwise."""
    family = stream.split("-", 1)[0]
    return dict(_HYPERPARAMETERS.get((algo, family), {"n_envs": 4}))


# ---------------------------------------------------------------------- the policy
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

    Switch tasks with :meth:`start_task` / :meth:`end_task` (training) and
    :meth:`set_task` / :meth:`use_task` (evaluation). ``model.save``/``Algo.load``
    keep owners, masks and every finished task's state (a task still training when
    saved is dropped on load).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        opts = {k: kwargs.pop(k, v) for k, v in TASK_MASK_DEFAULTS.items()}
        if opts["per_task_heads"] not in (True, False):
            raise ValueError(
                f"per_task_heads must be True or False, got {opts['per_task_heads']!r}")
        if kwargs.get("condensed_rollout"):
            raise ValueError("condensed_rollout must be False with per-task masks")
        self._task_options = opts
        self.task_masks = None
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule) -> None:
        from continual.task_masks import TaskMasks

        # the networks and the optimizer, without SparsePolicyMixin's own topology:
        # TaskMasks owns the one topology of the per-task masks
        ActorCriticPolicy._build(self, lr_schedule)
        opts = self._sparse_options
        topts = self._task_options
        trained = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        names = [n for n, m in find_maskable(self) if id(m.weight) in trained]
        heads = default_heads(self, names)
        dense = list(opts["dense_layers"])
        output_layers = opts["output_layers"]
        if topts["per_task_heads"]:
            dense += heads
            if output_layers is None:
                output_layers = ()
        elif output_layers is None:
            output_layers = heads
        extra = dict(opts["topology_kwargs"] or {})
        self.task_masks = TaskMasks(
            self, sparsity=opts["sparsity"], updater=opts["updater"],
            distribution=opts["distribution"], transfer=topts["transfer"], seed=opts["seed"],
            n_tasks=topts["n_tasks"], overflow=topts["overflow"], dense_layers=dense,
            delta_t=opts["delta_t"], t_end=opts["t_end"], drop_fraction=opts["drop_fraction"],
            schedule=opts["schedule"], gamma_sal=opts["gamma_sal"],
            output_layers=output_layers, grad_masking="backward", **extra)
        # the mixin's runtime (t_end from learn(), sparse/ metrics) over that topology;
        # no ``sparse_state``: TaskMasks' own state (owners, masks, per-task state)
        # is what a checkpoint needs
        runtime = SparseRuntime(self, opts)
        runtime.topologies["policy"] = self.task_masks.topology
        runtime._short = short_layer_names(
            layer.module_name for layer in self.task_masks.topology.layers)
        self._sparse = runtime

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
        self._sparse._learn_key = None  # the next learn() places a fresh t_end

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


# ---------------------------------------------------------------------- results
@dataclass
class StreamResult:
    """Outcome of :func:`train_stream`.

    ``returns[i, j]``: mean evaluation return on task ``j`` after training tasks
    ``0..i`` (NaN for ``j > i``). ``forgetting`` / ``bwt`` follow
    :mod:`continual.metrics` (Chaudhry et al.; Lopez-Paz & Ranzato) on returns.
    """

    config: dict[str, Any]
    descriptions: list[str]
    returns: np.ndarray
    return_stds: np.ndarray
    train_seconds: list[float]
    density: dict[str, float] = field(default_factory=dict)
    model: BaseAlgorithm | None = field(default=None, repr=False)

    @property
    def final_returns(self) -> list[float]:
        """Return on every task after the last one."""
        return [float(x) for x in self.returns[-1]]

    @property
    def task_forgetting(self) -> list[float]:
        """Per earlier task: best return before the last task minus final return."""
        r, t = self.returns, self.returns.shape[0]
        return [float(np.max(r[j: t - 1, j]) - r[t - 1, j]) for j in range(t - 1)]

    def summary(self) -> dict[str, Any]:
        from continual.metrics import bwt, forgetting

        return {
            "config": self.config,
            "tasks": self.descriptions,
            "return_matrix": [[None if math.isnan(v) else float(v) for v in row]
                              for row in self.returns],
            "return_std_matrix": [[None if math.isnan(v) else float(v) for v in row]
                                  for row in self.return_stds],
            "final_returns": self.final_returns,
            "average_final_return": float(np.mean(self.final_returns)),
            "task_forgetting": self.task_forgetting,
            "forgetting": forgetting(self.returns),
            "bwt": bwt(self.returns),
            "train_seconds": self.train_seconds,
            "density": self.density,
        }

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``return_matrix.csv``, ``summary.json`` and ``return_matrix.png``."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        n = self.returns.shape[1]
        lines = ["after_task," + ",".join(f"task_{j}" for j in range(n))]
        for i, row in enumerate(self.returns):
            lines.append(f"{i}," + ",".join("" if math.isnan(v) else f"{v:.4f}" for v in row))
        paths = {"csv": folder / "return_matrix.csv", "json": folder / "summary.json",
                 "png": folder / "return_matrix.png"}
        paths["csv"].write_text("\n".join(lines) + "\n")
        paths["json"].write_text(json.dumps(self.summary(), indent=2))
        _plot(self, paths["png"])
        return paths


def _plot(result: StreamResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result.returns
    n = r.shape[0]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(4.0 + 1.4 * n, 1.5 + 0.6 * n + 1.0))
    finite = r[~np.isnan(r)]
    lo, hi = float(finite.min()), float(finite.max())
    im = ax.imshow(r, cmap="viridis", vmin=lo, vmax=hi)
    for i in range(n):
        for j in range(r.shape[1]):
            if not math.isnan(r[i, j]):
                light = hi > lo and (r[i, j] - lo) / (hi - lo) > 0.6
                ax.text(j, i, f"{r[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_xticks(range(r.shape[1]))
    ax.set_yticks(range(n))
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean return")
    for j in range(r.shape[1]):
        ax2.plot(range(j, n), r[j:, j], marker="o", label=f"task {j}")
    ax2.set_xlabel("after training task")
    ax2.set_ylabel("mean return")
    ax2.set_xticks(range(n))
    ax2.legend(fontsize=7)
    cfg = result.config
    name = "dense" if cfg["updater"] == "dense" else (
        f"{cfg['updater']} {cfg['sparsity']:.0%} "
        f"{'task masks' if cfg['task_masks'] else 'fine-tuned'}")
    fig.suptitle(f"{cfg['stream']}, {cfg['algo'].upper()} {name}, seed {cfg['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- training
def evaluate_tasks(model: BaseAlgorithm, make_env: Callable[[int], VecEnv],
                   task_ids: list[int], n_episodes: int = 10
                   ) -> dict[int, tuple[float, float]]:
    """Mean and std of the deterministic return on each task in ``task_ids``; with a
    task-mask policy each task is evaluated with its own masks and state."""
    out = {}
    policy = model.policy
    for j in task_ids:
        env = make_env(j)
        if isinstance(policy, TaskMaskActorCriticPolicy):
            with policy.use_task(j):
                mean, std = evaluate_policy(model, env, n_eval_episodes=n_episodes)
        else:
            mean, std = evaluate_policy(model, env, n_eval_episodes=n_episodes)
        env.close()
        out[j] = (float(mean), float(std))
    return out


def _check_args(algo: str, updater: str, sparsity: float, task_masks: bool | None,
                steps_per_task: int, eval_episodes: int) -> bool:
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {tuple(ALGOS)}, got {algo!r}")
    updaters = ("dense", *UPDATERS)
    if updater not in updaters:
        raise ValueError(f"updater must be one of {updaters}, got {updater!r}")
    if updater == "dense":
        if task_masks:
            raise ValueError("task_masks=True needs a sparse updater "
                             f"({tuple(UPDATERS)}); updater='dense' fine-tunes one network")
        task_masks = False
    elif task_masks is None:
        task_masks = True
    if not isinstance(sparsity, int | float) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if isinstance(steps_per_task, bool) or not isinstance(steps_per_task, int) or \
            steps_per_task < 1:
        raise ValueError(f"steps_per_task must be an integer >= 1, got {steps_per_task!r}")
    if isinstance(eval_episodes, bool) or not isinstance(eval_episodes, int) or \
            eval_episodes < 1:
        raise ValueError(f"eval_episodes must be an integer >= 1, got {eval_episodes!r}")
    return bool(task_masks)


def train_stream(
    stream: str,
    algo: str = "ppo",
    updater: str = "srigl",
    sparsity: float = 0.9,
    distribution: str = "erk",
    task_masks: bool | None = None,
    steps_per_task: int = 50_000,
    seed: int = 0,
    *,
    n_tasks: int | None = None,
    eval_episodes: int = 10,
    one_hot: bool = False,
    transfer: bool = True,
    per_task_heads: bool = False,
    dense_input: bool = False,
    reset_optimizer: bool = True,
    algo_kwargs: Mapping[str, Any] | None = None,
    policy_kwargs: Mapping[str, Any] | None = None,
    verbose: int = 0,
    on_task_end: Callable[[int, StreamResult], None] | None = None,
) -> StreamResult:
    """Train one SB3 agent through ``stream``'s tasks; evaluate after each task.

    Args:
        stream: a task stream name (``envs.list_streams()``).
        algo: ``"ppo"`` or ``"a2c"``.
        updater: ``"dense"`` (SB3's ``MlpPolicy``, fine-tuned through the stream) or a
            sparse updater: ``"static"``, ``"set"``, ``"rigl"``, ``"srigl"``.
        sparsity: sparsity in [0, 1); with task masks, per task.
        distribution: ``"erk"``, ``"er"`` or ``"uniform"``.
        task_masks: per-task masks (default: on for sparse updaters; must be off for
            ``"dense"``); off with a sparse updater fine-tunes one sparse network.
        steps_per_task: environment steps per task.
        seed: seeds the algorithm, the topology and the environments.
        n_tasks: train only the first ``n_tasks`` tasks (default: all).
        eval_episodes: deterministic evaluation episodes per task.
        one_hot: append the one-hot task id to observations.
        transfer, per_task_heads: see :class:`TaskMaskActorCriticPolicy`.
        dense_input: keep the first layer of the policy and value MLPs dense (with
            task masks: per task). SRigL's constant fan-in leaves a 4-input layer at
            density <= 0.25 one input per neuron, which PPO cannot learn CartPole with.
        reset_optimizer: clear the optimizer state when a task starts (every method).
        algo_kwargs: override :func:`default_hyperparameters` (``n_envs`` included).
        policy_kwargs: more policy options (``net_arch``, ``delta_t``, ...).
        verbose: SB3 verbosity.
        on_task_end: called after every task's evaluation with the partial result.
    """
    import envs

    spec = envs.get_stream(stream)
    task_masks = _check_args(algo, updater, sparsity, task_masks, steps_per_task,
                             eval_episodes)
    total = spec.n_tasks if n_tasks is None else n_tasks
    if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= spec.n_tasks:
        raise ValueError(f"n_tasks must be an integer in [1, {spec.n_tasks}] for stream "
                         f"{stream!r}, got {n_tasks!r}")
    hyper = default_hyperparameters(algo, stream)
    hyper.update(algo_kwargs or {})
    n_envs = int(hyper.pop("n_envs", 4))

    def make_env(task_id: int, n: int = n_envs, env_seed: int | None = None) -> VecEnv:
        base = seed * 10_000 + task_id * 100 if env_seed is None else env_seed
        return make_vec_env(lambda: spec.make(task_id, one_hot=one_hot), n_envs=n,
                            seed=base)

    def make_eval_env(task_id: int) -> VecEnv:
        return make_env(task_id, 1, env_seed=seed * 10_000 + task_id * 100 + 50)

    pkw: dict[str, Any] = dict(policy_kwargs or {})
    if updater == "dense":
        policy: Any = "MlpPolicy"
    else:
        pkw.update(sparsity=sparsity, updater=updater, distribution=distribution,
                   seed=seed)
        if dense_input:
            pkw["dense_layers"] = [*pkw.get("dense_layers", ()), *DENSE_INPUT]
        policy = SparseActorCriticPolicy
        if task_masks:
            policy = TaskMaskActorCriticPolicy
            pkw.update(transfer=transfer, n_tasks=total, per_task_heads=per_task_heads)
    model = ALGOS[algo](policy, make_env(0), seed=seed, verbose=verbose,
                        policy_kwargs=pkw or None, **hyper)

    config = {"stream": stream, "algo": algo, "updater": updater, "sparsity": sparsity,
              "distribution": distribution, "task_masks": task_masks,
              "steps_per_task": steps_per_task, "seed": seed, "n_tasks": total,
              "eval_episodes": eval_episodes, "one_hot": one_hot, "transfer": transfer,
              "per_task_heads": per_task_heads, "dense_input": dense_input,
              "reset_optimizer": reset_optimizer,
              "n_envs": n_envs, "algo_kwargs": hyper,
              "policy_kwargs": {k: v for k, v in pkw.items() if _jsonable(v)}}
    returns = np.full((total, total), np.nan)
    stds = np.full((total, total), np.nan)
    seconds: list[float] = []
    result = StreamResult(config, [spec.describe(t) for t in range(total)], returns, stds,
                          seconds, model=model)
    for t in range(total):
        start = time.perf_counter()
        if task_masks:
            model.policy.start_task(t, reset_optimizer=reset_optimizer)
        elif reset_optimizer:
            model.policy.optimizer.state.clear()
        model.set_env(make_env(t))
        model.learn(steps_per_task, reset_num_timesteps=True)
        if task_masks:
            model.policy.end_task()
        seconds.append(time.perf_counter() - start)
        for j, (mean, std) in evaluate_tasks(model, make_eval_env, list(range(t + 1)),
                                             eval_episodes).items():
            returns[t, j], stds[t, j] = mean, std
        if on_task_end is not None:
            on_task_end(t, result)
    result.density = _density(model.policy, task_masks)
    return result


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _density(policy: Any, task_masks: bool) -> dict[str, float]:
    """Used / free fractions and per-task densities (task masks), else the density."""
    if task_masks:
        m = policy.task_masks.metrics()
        return {k: float(v) for k, v in m.items()
                if k in ("used", "free") or k.startswith("task_density/")}
    if isinstance(policy, SparseActorCriticPolicy):
        return {"density": float(policy.topology.metrics()["density"])}
    return {"density": 1.0}

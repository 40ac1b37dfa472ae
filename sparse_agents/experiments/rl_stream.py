"""Continual RL for SB3: one agent learns a task stream, task after task, with per-task
masks (:class:`~sparse_agents.sb3.task_policy.TaskMaskActorCriticPolicy`), one sparse
network fine-tuned, or the dense baseline (``updater="dense"``). See docs/continual_rl.md.

>>> result = train_stream("cartpole-physics", algo="ppo", updater="srigl", sparsity=0.9)
>>> result.save("runs/ppo_srigl")   # return_matrix.csv, summary.json, return_matrix.png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

import envs
from continual.metrics import bwt, forgetting
from sparse_agents.distributions import check_sparsity
from sparse_agents.experiments.hyperparams import resolve_schedules, zoo_hyperparameters
from sparse_agents.experiments.results import matrix_rows, write_matrix_outputs
from sparse_agents.sb3.policies import SparseActorCriticPolicy
from sparse_agents.sb3.task_policy import TASK_MASK_DEFAULTS, TaskMaskActorCriticPolicy
from sparse_agents.updaters import DENSE, get_updater, updater_names

__all__ = [
    "ALGOS",
    "DENSE_INPUT",
    "STREAM_ENVS",
    "TASK_MASK_DEFAULTS",
    "StreamResult",
    "TaskMaskActorCriticPolicy",
    "default_hyperparameters",
    "evaluate_tasks",
    "train_stream",
]

#: supported algorithms
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C}

#: the first layers of SB3's policy and value MLPs (``dense_input=True``)
DENSE_INPUT = (r"mlp_extractor\.policy_net\.0", r"mlp_extractor\.value_net\.0")

#: stream family (the name's first word) -> the base task whose zoo hyperparameters it uses
STREAM_ENVS = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1", "pendulum": "Pendulum-v1"}


def default_hyperparameters(algo: str, stream: str) -> dict[str, Any]:
    """The ``algo`` keyword arguments (and ``n_envs``) for a stream: the zoo's for its
    base task (:data:`STREAM_ENVS`), with schedules held at their start value (each task
    is a new ``learn()``) and no ``VecNormalize`` (its statistics would be one more piece
    of state shared across tasks); SB3's defaults with 4 envs for other streams."""
    env_id = STREAM_ENVS.get(stream.split("-", 1)[0])
    hp = zoo_hyperparameters(algo, env_id) if env_id else {}
    hp.pop("normalize", None)
    hp.setdefault("n_envs", 4)
    return resolve_schedules(hp, constant=True)


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
        return {
            "config": self.config,
            "tasks": self.descriptions,
            "return_matrix": matrix_rows(self.returns),
            "return_std_matrix": matrix_rows(self.return_stds),
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
        cfg = self.config
        name = "dense" if cfg["updater"] == DENSE else (
            f"{cfg['updater']} {cfg['sparsity']:.0%} "
            f"{'task masks' if cfg['task_masks'] else 'fine-tuned'}")
        title = f"{cfg['stream']}, {cfg['algo'].upper()} {name}, seed {cfg['seed']}"
        return write_matrix_outputs(out, self.returns, self.summary(),
                                    csv_name="return_matrix.csv", png_name="return_matrix.png",
                                    value="mean return", title=title)


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


def _check_int(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_args(algo: str, updater: str, sparsity: float, task_masks: bool | None,
                steps_per_task: int, eval_episodes: int) -> bool:
    """Validate the arguments; returns whether per-task masks are used."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {tuple(ALGOS)}, got {algo!r}")
    spec = get_updater(updater, dense=True)
    if spec is None:
        if task_masks:
            raise ValueError(f"task_masks=True needs a sparse updater ({updater_names()}); "
                             "updater='dense' fine-tunes one network")
        task_masks = False
    elif task_masks is None:
        task_masks = True
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    check_sparsity(sparsity)
    _check_int(steps_per_task, "steps_per_task")
    _check_int(eval_episodes, "eval_episodes")
    return bool(task_masks)


@dataclass(frozen=True)
class _StreamEnvs:
    """Vectorised training and evaluation environments of a stream's tasks."""

    spec: Any
    n_envs: int
    seed: int
    one_hot: bool

    def train(self, task_id: int) -> VecEnv:
        return make_vec_env(lambda: self.spec.make(task_id, one_hot=self.one_hot),
                            n_envs=self.n_envs, seed=self.seed * 10_000 + task_id * 100)

    def evaluate(self, task_id: int) -> VecEnv:
        return make_vec_env(lambda: self.spec.make(task_id, one_hot=self.one_hot), n_envs=1,
                            seed=self.seed * 10_000 + task_id * 100 + 50)


def _policy(updater: str, task_masks: bool, pkw: dict[str, Any], *, sparsity: float,
            distribution: str, seed: int, dense_input: bool, transfer: bool, n_tasks: int,
            per_task_heads: bool) -> tuple[Any, dict[str, Any]]:
    """The policy class (or SB3 alias) and its keyword arguments."""
    if updater == DENSE:
        return "MlpPolicy", pkw
    pkw.update(sparsity=sparsity, updater=updater, distribution=distribution, seed=seed)
    if dense_input:
        pkw["dense_layers"] = [*pkw.get("dense_layers", ()), *DENSE_INPUT]
    if not task_masks:
        return SparseActorCriticPolicy, pkw
    pkw.update(transfer=transfer, n_tasks=n_tasks, per_task_heads=per_task_heads)
    return TaskMaskActorCriticPolicy, pkw


def _train_task(model: BaseAlgorithm, envs_: _StreamEnvs, task_id: int, steps: int,
                task_masks: bool, reset_optimizer: bool) -> float:
    """Train one task; returns its wall time in seconds."""
    start = time.perf_counter()
    if task_masks:
        model.policy.start_task(task_id, reset_optimizer=reset_optimizer)
    elif reset_optimizer:
        model.policy.optimizer.state.clear()
    model.set_env(envs_.train(task_id))
    model.learn(steps, reset_num_timesteps=True)
    if task_masks:
        model.policy.end_task()
    return time.perf_counter() - start


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
            registered sparse updater (``sparse_agents.updaters.updater_names()``).
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
            task masks: per task).
        reset_optimizer: clear the optimizer state when a task starts (every method).
        algo_kwargs: override :func:`default_hyperparameters` (``n_envs`` included).
        policy_kwargs: more policy options (``net_arch``, ``delta_t``, ...).
        verbose: SB3 verbosity.
        on_task_end: called after every task's evaluation with the partial result.
    """
    spec = envs.get_stream(stream)
    task_masks = _check_args(algo, updater, sparsity, task_masks, steps_per_task,
                             eval_episodes)
    total = spec.n_tasks if n_tasks is None else n_tasks
    if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= spec.n_tasks:
        raise ValueError(f"n_tasks must be an integer in [1, {spec.n_tasks}] for stream "
                         f"{stream!r}, got {n_tasks!r}")
    hyper = default_hyperparameters(algo, stream)
    hyper.update(algo_kwargs or {})
    envs_ = _StreamEnvs(spec, int(hyper.pop("n_envs", 4)), seed, one_hot)
    policy, pkw = _policy(updater, task_masks, dict(policy_kwargs or {}), sparsity=sparsity,
                          distribution=distribution, seed=seed, dense_input=dense_input,
                          transfer=transfer, n_tasks=total, per_task_heads=per_task_heads)
    model = ALGOS[algo](policy, envs_.train(0), seed=seed, verbose=verbose,
                        policy_kwargs=pkw or None, **hyper)
    config = {"stream": stream, "algo": algo, "updater": updater, "sparsity": sparsity,
              "distribution": distribution, "task_masks": task_masks,
              "steps_per_task": steps_per_task, "seed": seed, "n_tasks": total,
              "eval_episodes": eval_episodes, "one_hot": one_hot, "transfer": transfer,
              "per_task_heads": per_task_heads, "dense_input": dense_input,
              "reset_optimizer": reset_optimizer, "n_envs": envs_.n_envs,
              "algo_kwargs": hyper,
              "policy_kwargs": {k: v for k, v in pkw.items() if _jsonable(v)}}
    result = StreamResult(config, [spec.describe(t) for t in range(total)],
                          np.full((total, total), np.nan), np.full((total, total), np.nan),
                          [], model=model)
    for t in range(total):
        result.train_seconds.append(
            _train_task(model, envs_, t, steps_per_task, task_masks, reset_optimizer))
        for j, (mean, std) in evaluate_tasks(model, envs_.evaluate, list(range(t + 1)),
                                             eval_episodes).items():
            result.returns[t, j], result.return_stds[t, j] = mean, std
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

"""Continual RL for SB3: one agent learns a task stream, task after task, with per-task
masks (:class:`~sparse_agents.sb3.task_policy.TaskMaskActorCriticPolicy`, the DQN and SAC
ones of :mod:`sparse_agents.sb3.task_offpolicy`), one sparse network fine-tuned, the dense
baseline (``updater="dense"``), fine-tuning with an L2 or EWC penalty
(:mod:`sparse_agents.regularize`), or a new agent per task (``reset_per_task``: training
from scratch, the reference of forward transfer and plasticity). See docs/continual_rl.md.

>>> result = train_stream("cartpole-physics", algo="ppo", updater="srigl", sparsity=0.9)
>>> result.save("runs/ppo_srigl")   # return_matrix.csv, summary.json, return_matrix.png

With ``checkpoint=folder``, the run is saved after every task and a run started again
with the same folder and settings resumes after its last finished task, with the same
result as a run that was never stopped.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

import envs
from continual.metrics import bwt, forgetting
from sparse_agents.distributions import check_sparsity
from sparse_agents.dormant import DormantTracker
from sparse_agents.experiments.hyperparams import (
    POLICY_KEYS,
    hyperparameters,
    resolve_schedules,
    zoo_hyperparameters,
)
from sparse_agents.experiments.results import matrix_rows, write_atomic, write_matrix_outputs
from sparse_agents.experiments.rl import evaluation_callback
from sparse_agents.regularize import REGULARIZERS, Consolidation
from sparse_agents.sb3.extractors import MinAtarCNN
from sparse_agents.sb3.mixin import policy_optimizers
from sparse_agents.sb3.policies import (
    SparseActorCriticPolicy,
    SparseDQNPolicy,
    SparseSACPolicy,
)
from sparse_agents.sb3.task_offpolicy import (
    TaskMaskDQNPolicy,
    TaskMaskSACPolicy,
    clear_replay_buffer,
)
from sparse_agents.sb3.task_offpolicy import start_task as start_mask_task
from sparse_agents.sb3.task_policy import (
    TASK_MASK_DEFAULTS,
    TaskMaskActorCriticPolicy,
    TaskMaskPolicyMixin,
)
from sparse_agents.topology import find_maskable
from sparse_agents.updaters import DENSE, get_updater, updater_names

__all__ = [
    "ALGOS",
    "CHECKPOINT_INDEX",
    "checkpointed_tasks",
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
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}
#: the action space an algorithm needs (SB3's own restriction), where it has one
ACTION_SPACES: dict[str, type[gym.Space]] = {"dqn": gym.spaces.Discrete,
                                             "sac": gym.spaces.Box}
#: the index of a stream checkpoint folder: its last finished task, the folder holding
#: that task's state and the run's settings
CHECKPOINT_INDEX = "latest.json"
#: PackNet: the share of a task's steps that retrains its kept weights after pruning
PACKNET_RETRAIN = 0.2
#: algorithm -> (dense policy, sparse fine-tuned policy, per-task-mask policy)
POLICIES: dict[str, tuple[Any, type, type]] = {
    "ppo": ("MlpPolicy", SparseActorCriticPolicy, TaskMaskActorCriticPolicy),
    "a2c": ("MlpPolicy", SparseActorCriticPolicy, TaskMaskActorCriticPolicy),
    "dqn": ("MlpPolicy", SparseDQNPolicy, TaskMaskDQNPolicy),
    "sac": ("MlpPolicy", SparseSACPolicy, TaskMaskSACPolicy),
}

#: the first layers of SB3's policy and value MLPs (``dense_input=True``)
DENSE_INPUT = (r"mlp_extractor\.policy_net\.0", r"mlp_extractor\.value_net\.0")

#: stream family (the name's first word) -> the base task whose zoo hyperparameters it uses
STREAM_ENVS = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1", "pendulum": "Pendulum-v1"}
#: Continual World's SAC (Wolczyk et al. 2021, ``continualworld/sac``): four hidden layers
#: of 256, lr 1e-3, batch 128, buffer 1M, gamma 0.99, tau 0.005, one env; 1000 random
#: steps per task before learning (SB3's ``learning_starts``; CW: ``update_after``)
CW_SAC: dict[str, Any] = dict(net_arch=[256, 256, 256, 256], learning_rate=1e-3,
                              batch_size=128, buffer_size=1_000_000, gamma=0.99, tau=0.005,
                              learning_starts=1000, n_envs=1)


def default_hyperparameters(algo: str, stream: str) -> dict[str, Any]:
    """The ``algo`` keyword arguments (policy keys such as ``net_arch`` and ``n_envs``
    included) for a stream: the zoo's for its base task (:data:`STREAM_ENVS`); Young &
    Tian's DQN and :class:`~sparse_agents.sb3.MinAtarCNN` for the MinAtar streams (the
    epsilon anneal restarts with each task: ``exploration_steps`` of each task's
    budget); Continual World's SAC (:data:`CW_SAC`) for the Meta-World streams; SB3's
    defaults with 4 envs otherwise. Schedules are held at their start value (each task is
    a new ``learn()``) and there is no ``VecNormalize`` (its statistics would be one more
    piece of state shared across tasks)."""
    family = stream.split("-", 1)[0]
    if family == "minatar":
        hp = (hyperparameters("dqn", "MinAtar/Breakout-v1", "minatar", sparse=False)
              if algo == "dqn" else {"features_extractor_class": MinAtarCNN})
        hp.setdefault("n_envs", 1)
    elif family == "metaworld" and algo == "sac":
        hp = dict(CW_SAC)
    else:
        env_id = STREAM_ENVS.get(family)
        hp = zoo_hyperparameters(algo, env_id) if env_id else {}
    hp.pop("normalize", None)
    hp.setdefault("n_envs", 4 if algo in ("ppo", "a2c") else 1)
    return resolve_schedules(hp, constant=True)


# ---------------------------------------------------------------------- results
@dataclass
class StreamResult:
    """Outcome of :func:`train_stream`.

    ``returns[i, j]``: the stream's metric on task ``j`` after training tasks ``0..i``
    (NaN for ``j > i``): the mean evaluation return, or for a stream whose ``metric`` is
    ``"success"`` (Meta-World) the success rate. ``forgetting`` / ``bwt`` follow
    :mod:`continual.metrics` (Chaudhry et al.; Lopez-Paz & Ranzato) on that matrix.
    ``curves[t]``: ``(step, value)`` evaluations of task ``t`` while it trained
    (``curve_evals``); ``dormant[t]``: the policy's dormant-neuron fraction at the end
    of task ``t`` (:mod:`sparse_agents.dormant`, every Linear/Conv layer of the policy).
    """

    config: dict[str, Any]
    descriptions: list[str]
    returns: np.ndarray
    return_stds: np.ndarray
    train_seconds: list[float]
    density: dict[str, float] = field(default_factory=dict)
    model: BaseAlgorithm | None = field(default=None, repr=False)
    curves: list[list[tuple[int, float]]] = field(default_factory=list)
    dormant: list[float] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """``"return"`` or ``"success"``: what the matrix holds."""
        return self.config.get("metric", "return")

    @property
    def final_returns(self) -> list[float]:
        """The metric on every task after the last one."""
        return [float(x) for x in self.returns[-1]]

    @property
    def task_forgetting(self) -> list[float]:
        """Per earlier task: best value before the last task minus the final one."""
        r, t = self.returns, self.returns.shape[0]
        return [float(np.max(r[j: t - 1, j]) - r[t - 1, j]) for j in range(t - 1)]

    @property
    def curve_auc(self) -> list[float]:
        """Per task: the mean of its training-time evaluations (Continual World's area
        under the curve, divided by the task's length); NaN without ``curve_evals``."""
        return [float(np.mean([v for _, v in c])) if c else math.nan for c in self.curves]

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "tasks": self.descriptions,
            "metric": self.metric,
            "return_matrix": matrix_rows(self.returns),
            "return_std_matrix": matrix_rows(self.return_stds),
            "final_returns": self.final_returns,
            "average_final_return": float(np.mean(self.final_returns)),
            "task_forgetting": self.task_forgetting,
            "forgetting": forgetting(self.returns),
            "bwt": bwt(self.returns),
            "train_seconds": self.train_seconds,
            "density": self.density,
            "curves": [[list(row) for row in c] for c in self.curves],
            "curve_auc": self.curve_auc,
            "dormant_fraction": self.dormant,
        }

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``return_matrix.csv``, ``summary.json`` and ``return_matrix.png``."""
        cfg = self.config
        name = "dense" if cfg["updater"] == DENSE else (
            f"{cfg['updater']} {cfg['sparsity']:.0%} "
            f"{'task masks' if cfg['task_masks'] else 'fine-tuned'}")
        if cfg.get("reset_per_task"):
            name += ", reset per task"
        if cfg.get("regularizer"):
            name += f", {cfg['regularizer']}"
        title = f"{cfg['stream']}, {cfg['algo'].upper()} {name}, seed {cfg['seed']}"
        value = "success rate" if self.metric == "success" else "mean return"
        return write_matrix_outputs(out, self.returns, self.summary(),
                                    csv_name="return_matrix.csv", png_name="return_matrix.png",
                                    value=value, title=title)


# ---------------------------------------------------------------------- training
def _evaluate(model: BaseAlgorithm, env: VecEnv, episodes: int, success: bool
              ) -> tuple[float, float]:
    """Mean and std of the deterministic return, or of the episodes' success
    (``info["is_success"]`` at each episode's end)."""
    if not success:
        mean, std = evaluate_policy(model, env, n_eval_episodes=episodes)
        return float(mean), float(std)
    outcomes: list[float] = []

    def record(local: dict, _: dict) -> None:
        if local.get("done"):
            outcomes.append(float(bool(local["info"].get("is_success", False))))

    evaluate_policy(model, env, n_eval_episodes=episodes, callback=record)
    return float(np.mean(outcomes)), float(np.std(outcomes))


def evaluate_tasks(model: BaseAlgorithm, make_env: Callable[[int], VecEnv],
                   task_ids: list[int], n_episodes: int = 10, metric: str = "return"
                   ) -> dict[int, tuple[float, float]]:
    """Mean and std of the deterministic return (``metric="success"``: the success
    rate) on each task in ``task_ids``; with a task-mask policy each task is evaluated
    with its own masks and state."""
    out = {}
    policy = model.policy
    for j in task_ids:
        env = make_env(j)
        if isinstance(policy, TaskMaskPolicyMixin):
            with policy.use_task(j):
                out[j] = _evaluate(model, env, n_episodes, metric == "success")
        else:
            out[j] = _evaluate(model, env, n_episodes, metric == "success")
        env.close()
    return out


def _check_int(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_args(algo: str, updater: str, sparsity: float, task_masks: bool | None,
                steps_per_task: int, eval_episodes: int, reset_per_task: bool,
                regularizer: str | None, curve_evals: int) -> bool:
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
        task_masks = not reset_per_task and regularizer is None
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    check_sparsity(sparsity)
    _check_int(steps_per_task, "steps_per_task")
    _check_int(eval_episodes, "eval_episodes")
    _check_int(curve_evals, "curve_evals", low=0)
    if reset_per_task not in (True, False):
        raise ValueError(f"reset_per_task must be True or False, got {reset_per_task!r}")
    if regularizer is not None and regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer must be one of {REGULARIZERS} or None, got "
                         f"{regularizer!r}")
    if task_masks and (reset_per_task or regularizer is not None):
        raise ValueError("reset_per_task and regularizer are fine-tuning baselines: they "
                         "need task_masks=False (per-task masks isolate tasks already)")
    if reset_per_task and regularizer is not None:
        raise ValueError("reset_per_task trains every task from scratch: no regularizer")
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


def _policy(algo: str, updater: str, task_masks: bool, pkw: dict[str, Any], *,
            sparsity: float, distribution: str, seed: int, dense_input: bool,
            transfer: bool, n_tasks: int, per_task_heads: bool) -> tuple[Any, dict[str, Any]]:
    """The policy class (or SB3 alias) and its keyword arguments."""
    dense, sparse, masked = POLICIES[algo]
    if updater == DENSE:
        return dense, pkw
    pkw.update(sparsity=sparsity, updater=updater, distribution=distribution, seed=seed)
    if dense_input and algo in ("ppo", "a2c"):
        pkw["dense_layers"] = [*pkw.get("dense_layers", ()), *DENSE_INPUT]
    elif algo not in ("ppo", "a2c"):
        pkw["dense_input"] = dense_input
    if not task_masks:
        return sparse, pkw
    pkw.update(transfer=transfer, n_tasks=n_tasks, per_task_heads=per_task_heads)
    return masked, pkw


class _Agent:
    """The SB3 model of a stream run and what watches it: the dormant-neuron tracker on
    every Linear/Conv layer of its policy (ticked by its optimizers) and the
    consolidation penalty of a regularised run."""

    def __init__(self, build: Callable[[], BaseAlgorithm], regularizer: str | None,
                 reg_coef: float) -> None:
        self.model = build()
        policy = self.model.policy
        optimizers = [opt for _, opt in policy_optimizers(policy)]
        self.dormant = DormantTracker(find_maskable(policy))
        for opt in optimizers:
            opt.register_step_post_hook(lambda *_: self.dormant.tick())
        self.penalty = (Consolidation(optimizers, regularizer, reg_coef)
                        if regularizer else None)


def _rng_state() -> dict[str, Any]:
    """The global random states a run draws from (torch, NumPy, Python; CUDA if any)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Checkpoint:
    """A stream run's checkpoint folder. After task ``t``, ``task<t>/`` holds the model
    (SB3's zip, and its replay buffer with ``keep_buffer``), the result so far, the
    global random states and the action space's, and the dormant tracker's and
    penalty's state. Then :data:`CHECKPOINT_INDEX` names it (written atomically) and
    the previous task's folder is removed, so a run killed at any point resumes after
    its last finished task."""

    def __init__(self, folder: str | Path, config: Mapping[str, Any], keep_buffer: bool
                 ) -> None:
        self.folder = Path(folder)
        self.config = json.loads(json.dumps(config))  # as it reads back from the index
        self.keep_buffer = keep_buffer

    def last_task(self) -> int:
        """The last finished task (-1: none yet); refuses another run's checkpoint."""
        saved = _read_index(self.folder)
        if saved is None:
            return -1
        theirs = saved["config"]
        differ = [f"{k}: {theirs.get(k)!r} there, {self.config.get(k)!r} here"
                  for k in sorted(set(theirs) | set(self.config))
                  if theirs.get(k) != self.config.get(k)]
        if differ:
            raise ValueError(f"checkpoint {str(self.folder)!r} holds a run with other "
                             f"settings ({'; '.join(differ)}): pass another checkpoint "
                             "folder or remove this one")
        return int(saved["task"])

    def _task_folder(self) -> Path:
        return self.folder / _read_index(self.folder)["folder"]

    def load_model(self, cls: type[BaseAlgorithm]) -> BaseAlgorithm:
        """The model as it was after the last finished task."""
        folder = self._task_folder()
        model = cls.load(folder / "model.zip")
        if (folder / "replay_buffer.pkl").exists():
            model.load_replay_buffer(folder / "replay_buffer.pkl")
        return model

    def restore(self, agent: _Agent, result: StreamResult) -> None:
        """Fill ``result`` with the finished tasks and set the agent's watchers and the
        random states as they were after the last finished task."""
        state = torch.load(self._task_folder() / "state.pt", weights_only=False)
        done = state["result"]
        n = len(done["train_seconds"])
        result.returns[:n], result.return_stds[:n] = done["returns"], done["return_stds"]
        result.train_seconds[:] = done["train_seconds"]
        result.curves[:] = [[tuple(row) for row in c] for c in done["curves"]]
        result.dormant[:] = done["dormant"]
        # SB3's load re-seeds the action space (its random actions before learning_starts)
        agent.model.action_space.np_random.bit_generator.state = state["action_space"]
        agent.dormant.load_state_dict(state["dormant"])
        if agent.penalty is not None:
            agent.penalty.load_state_dict(state["penalty"])
        _set_rng_state(state["rng"])

    def save(self, t: int, agent: _Agent, result: StreamResult) -> None:
        """Checkpoint the run after task ``t``."""
        folder = self.folder / f"task{t}"
        if folder.exists():  # a run killed while writing it
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        agent.model.save(folder / "model.zip")
        if self.keep_buffer and getattr(agent.model, "replay_buffer", None) is not None:
            agent.model.save_replay_buffer(folder / "replay_buffer.pkl")
        n = t + 1
        torch.save({"result": {"returns": result.returns[:n].copy(),
                               "return_stds": result.return_stds[:n].copy(),
                               "train_seconds": list(result.train_seconds),
                               "curves": [list(c) for c in result.curves],
                               "dormant": list(result.dormant)},
                    "rng": _rng_state(), "dormant": agent.dormant.state_dict(),
                    "action_space": agent.model.action_space.np_random.bit_generator.state,
                    "penalty": agent.penalty.state_dict() if agent.penalty else None},
                   folder / "state.pt")
        write_atomic(self.folder / CHECKPOINT_INDEX, json.dumps(
            {"task": t, "folder": folder.name, "config": self.config}, indent=1))
        for old in self.folder.glob("task*"):
            if old != folder:
                shutil.rmtree(old)


def _read_index(folder: str | Path) -> dict[str, Any] | None:
    """A checkpoint folder's :data:`CHECKPOINT_INDEX` (``None``: no checkpoint yet)."""
    index = Path(folder) / CHECKPOINT_INDEX
    return json.loads(index.read_text()) if index.exists() else None


def checkpointed_tasks(folder: str | Path) -> int:
    """How many tasks the stream checkpoint in ``folder`` holds (0: none)."""
    saved = _read_index(folder)
    return 0 if saved is None else int(saved["task"]) + 1


def _train_task(agent: _Agent, envs_: _StreamEnvs, task_id: int, steps: int, *,
                task_masks: bool, reset_optimizer: bool, keep_buffer: bool,
                curve: list, curve_evals: int, eval_episodes: int, metric: str,
                packnet: bool) -> float:
    """Train one task; returns its wall time in seconds (evaluations excluded). PackNet:
    train in every free weight, prune to the task's budget after ``1 - PACKNET_RETRAIN``
    of the steps, retrain the kept weights for the rest."""
    model = agent.model
    start = time.perf_counter()
    if task_masks:
        start_mask_task(model, task_id, keep_buffer=keep_buffer,
                        reset_optimizer=reset_optimizer,
                        claim="free" if packnet else "budget")
    else:
        if reset_optimizer:
            for _, opt in policy_optimizers(model.policy):
                opt.state.clear()
        clear_replay_buffer(model, keep_buffer)
    model.set_env(envs_.train(task_id))
    callback = None
    if curve_evals:
        rows: list = []
        callback = evaluation_callback(
            envs_.evaluate(task_id), max(1, steps // curve_evals), eval_episodes, rows,
            evaluate=lambda m, env: _evaluate(m, env, eval_episodes, metric == "success"))
    if packnet:
        retrain = max(1, int(steps * PACKNET_RETRAIN))
        model.learn(steps - retrain, reset_num_timesteps=True, callback=callback)
        model.policy.prune_task()
        model.learn(retrain, reset_num_timesteps=False, callback=callback)
    else:
        model.learn(steps, reset_num_timesteps=True, callback=callback)
    if callback is not None:
        curve.extend((int(step), float(value)) for step, value, _ in rows)
    if task_masks:
        model.policy.end_task()
    if agent.penalty is not None:
        agent.penalty.consolidate()
    seconds = time.perf_counter() - start
    return seconds - (callback.seconds if callback is not None else 0.0)


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
    keep_buffer: bool = False,
    reset_per_task: bool = False,
    packnet: bool = False,
    regularizer: str | None = None,
    reg_coef: float = 1.0,
    curve_evals: int = 0,
    algo_kwargs: Mapping[str, Any] | None = None,
    policy_kwargs: Mapping[str, Any] | None = None,
    verbose: int = 0,
    on_task_end: Callable[[int, StreamResult], None] | None = None,
    checkpoint: str | Path | None = None,
) -> StreamResult:
    """Train one SB3 agent through ``stream``'s tasks; evaluate after each task.

    Args:
        stream: a task stream name (``envs.list_streams()``).
        algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or ``"sac"``.
        updater: ``"dense"`` (SB3's ``MlpPolicy``, fine-tuned through the stream) or a
            registered sparse updater (``sparse_agents.updaters.updater_names()``).
        sparsity: sparsity in [0, 1); with task masks, per task.
        distribution: ``"erk"``, ``"er"`` or ``"uniform"``.
        task_masks: per-task masks (default: on for sparse updaters unless
            ``reset_per_task`` or ``regularizer``; must be off for ``"dense"``); off with
            a sparse updater fine-tunes one sparse network.
        steps_per_task: environment steps per task.
        seed: seeds the algorithm, the topology and the environments.
        n_tasks: train only the first ``n_tasks`` tasks (default: all).
        eval_episodes: deterministic evaluation episodes per task.
        one_hot: append the one-hot task id to observations (Continual World does).
        transfer, per_task_heads: see :class:`TaskMaskActorCriticPolicy`.
        dense_input: keep the first layer of each MLP dense (with task masks: per task).
        reset_optimizer: clear the optimizers' state when a task starts (every method).
        keep_buffer: keep an off-policy agent's replay buffer across tasks (default:
            emptied at each task, as Continual World does).
        reset_per_task: a new agent (weights, optimizer, buffer) for every task: training
            from scratch, the reference of forward transfer and plasticity.
        packnet: PackNet-style per-task masks (needs ``task_masks``): each task trains
            every free weight, is pruned to its budget (``1 - sparsity`` per task) by
            magnitude and retrains the kept weights for the last ``PACKNET_RETRAIN`` of
            its steps; use ``updater="static"`` (no DST inside a task).
        regularizer: ``"l2"`` or ``"ewc"``: fine-tuning with that penalty towards the
            weights at the end of the last task (:class:`~sparse_agents.regularize.
            Consolidation`), of weight ``reg_coef``.
        curve_evals: evaluations of the training task during its training (its curve:
            the area under it is Continual World's forward transfer); 0: none.
        algo_kwargs: override :func:`default_hyperparameters` (``n_envs`` included).
        policy_kwargs: more policy options (``net_arch``, ``delta_t``, ...).
        verbose: SB3 verbosity.
        on_task_end: called after every task's evaluation with the partial result (for
            the tasks this call trains).
        checkpoint: a folder: the run is saved there after every task, and a run given
            a folder that holds a checkpoint of the same settings resumes after its last
            finished task (a ``ValueError`` for other settings). The result is the one
            an uninterrupted run gets: the global random states, the replay buffer
            (``keep_buffer``), the penalty and the dormant tracker are saved with the
            model.
    """
    spec = envs.get_stream(stream)
    task_masks = _check_args(algo, updater, sparsity, task_masks, steps_per_task,
                             eval_episodes, reset_per_task, regularizer, curve_evals)
    if packnet not in (True, False) or (packnet and not task_masks):
        raise ValueError(f"packnet must be True or False, and True needs per-task masks "
                         f"(a sparse updater, task_masks=True), got packnet={packnet!r}, "
                         f"task_masks={task_masks}")
    if algo in ACTION_SPACES:
        probe = spec.make(0)
        space = probe.action_space
        probe.close()
        if not isinstance(space, ACTION_SPACES[algo]):
            raise ValueError(f"algo={algo!r} needs a {ACTION_SPACES[algo].__name__} action "
                             f"space; stream {stream!r} has {space}")
    total = spec.n_tasks if n_tasks is None else n_tasks
    if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= spec.n_tasks:
        raise ValueError(f"n_tasks must be an integer in [1, {spec.n_tasks}] for stream "
                         f"{stream!r}, got {n_tasks!r}")
    hyper = default_hyperparameters(algo, stream)
    hyper.update(algo_kwargs or {})
    if "exploration_steps" in hyper:  # the anneal restarts with every task's learn()
        hyper["exploration_fraction"] = min(1.0, hyper.pop("exploration_steps")
                                            / steps_per_task)
    table_policy = {k: hyper.pop(k) for k in list(hyper) if k in POLICY_KEYS}
    envs_ = _StreamEnvs(spec, int(hyper.pop("n_envs", 4)), seed, one_hot)
    policy, pkw = _policy(algo, updater, task_masks,
                          {**table_policy, **dict(policy_kwargs or {})}, sparsity=sparsity,
                          distribution=distribution, seed=seed, dense_input=dense_input,
                          transfer=transfer, n_tasks=total, per_task_heads=per_task_heads)

    def build() -> BaseAlgorithm:
        return ALGOS[algo](policy, envs_.train(0), seed=seed, verbose=verbose,
                           policy_kwargs=dict(pkw) or None, **hyper)

    metric = spec.metric
    config = {"stream": stream, "algo": algo, "updater": updater, "sparsity": sparsity,
              "distribution": distribution, "task_masks": task_masks,
              "steps_per_task": steps_per_task, "seed": seed, "n_tasks": total,
              "eval_episodes": eval_episodes, "one_hot": one_hot, "transfer": transfer,
              "per_task_heads": per_task_heads, "dense_input": dense_input,
              "reset_optimizer": reset_optimizer, "keep_buffer": keep_buffer,
              "reset_per_task": reset_per_task, "packnet": packnet,
              "regularizer": regularizer,
              "reg_coef": reg_coef, "curve_evals": curve_evals, "metric": metric,
              "n_envs": envs_.n_envs,
              "algo_kwargs": {k: v for k, v in hyper.items() if _jsonable(v)},
              "policy_kwargs": {k: v for k, v in pkw.items() if _jsonable(v)}}
    saver = _Checkpoint(checkpoint, config, keep_buffer) if checkpoint is not None else None
    done = saver.last_task() if saver is not None else -1
    if done >= 0:  # the last task's agent (with reset_per_task, the next task builds anew)
        agent = _Agent(lambda: saver.load_model(ALGOS[algo]), regularizer, reg_coef)
    else:
        agent = _Agent(build, regularizer, reg_coef)
    result = StreamResult(config, [spec.describe(t) for t in range(total)],
                          np.full((total, total), np.nan), np.full((total, total), np.nan),
                          [], model=agent.model)
    if saver is not None and done >= 0:
        saver.restore(agent, result)
    for t in range(done + 1, total):
        if reset_per_task and t > 0:
            env = agent.model.get_env()
            if env is not None:
                env.close()
            agent = _Agent(build, None, reg_coef)
            result.model = agent.model
        curve: list = []
        result.train_seconds.append(_train_task(
            agent, envs_, t, steps_per_task, task_masks=task_masks,
            reset_optimizer=reset_optimizer, keep_buffer=keep_buffer,
            curve=curve, curve_evals=curve_evals, eval_episodes=eval_episodes,
            metric=metric, packnet=packnet))
        result.curves.append(curve)
        result.dormant.append(agent.dormant.metrics()["dormant_fraction"])
        if reset_per_task:  # task j is held by the agent that trained it, which is gone
            seen = [t]
        else:
            seen = list(range(t + 1))
        for j, (mean, std) in evaluate_tasks(agent.model, envs_.evaluate, seen,
                                             eval_episodes, metric).items():
            result.returns[t, j], result.return_stds[t, j] = mean, std
        if reset_per_task:  # the from-scratch agents' own tasks: carried down the column
            for j in range(t):
                result.returns[t, j] = result.returns[j, j]
                result.return_stds[t, j] = result.return_stds[j, j]
        if on_task_end is not None:
            on_task_end(t, result)
        if saver is not None:
            saver.save(t, agent, result)
    result.density = _density(agent.model.policy, task_masks)
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
        m = policy.task_mask_metrics()
        return {k: float(v) for k, v in m.items()
                if k.rsplit("/", 1)[-1] in ("used", "free") or "task_density/" in k}
    if hasattr(policy, "sparse_metrics"):
        return {"density": float(policy.sparse_metrics()["density"])}
    return {"density": 1.0}

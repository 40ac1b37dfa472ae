"""Train and evaluate (sparse) SB3 agents: the agent factory with rl-baselines3-zoo
hyperparameters, an evaluation-curve callback, and :func:`train_and_evaluate`, the
one-call experiment the study harness and the benchmarks run."""

from __future__ import annotations

import csv
import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3 as sb3
import torch
from gymnasium.wrappers import TransformReward
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import (
    VecFrameStack,
    VecNormalize,
    sync_envs_normalization,
)

from sparse_agents.distributions import check_sparsity
from sparse_agents.experiments.hyperparams import (
    HYPERPARAMS,
    POLICY_KEYS,
    SPARSE_SETTINGS,
    hyperparameters,
    resolve_schedules,
)
from sparse_agents.sb3 import (
    FUSED_BY_DEFAULT,
    SPARSE_DEFAULTS,
    SparseActorCriticCnnPolicy,
    SparseActorCriticPolicy,
    SparseDQNCnnPolicy,
    SparseDQNPolicy,
    SparseSACPolicy,
    SparseTD3Policy,
)
from sparse_agents.updaters import DENSE, get_updater

__all__ = ["ALGOS", "DEFAULT_ENV", "HYPERPARAMS", "MIN_EVALS", "SPARSE_POLICIES", "WINDOW",
           "env_slug", "evaluation_callback", "last_fraction_score", "make_agent",
           "optimizer_label", "register_env", "train_and_evaluate", "window_score",
           "window_steps", "write_curve_csv"]

ALGOS = ("ppo", "a2c", "dqn", "sac", "td3")
DEFAULT_ENV = {"ppo": "CartPole-v1", "a2c": "CartPole-v1", "dqn": "CartPole-v1",
               "sac": "Pendulum-v1", "td3": "Pendulum-v1"}
#: the sparse policy class of each algorithm
SPARSE_POLICIES = {"ppo": SparseActorCriticPolicy, "a2c": SparseActorCriticPolicy,
                   "dqn": SparseDQNPolicy, "sac": SparseSACPolicy, "td3": SparseTD3Policy}
#: the sparse ``CnnPolicy`` of each algorithm that Atari runs use (zoo: PPO, A2C, DQN)
SPARSE_CNN_POLICIES = {"ppo": SparseActorCriticCnnPolicy, "a2c": SparseActorCriticCnnPolicy,
                       "dqn": SparseDQNCnnPolicy}
#: environment id prefix -> (package, function registering its gymnasium ids)
ENV_FAMILIES = {"MinAtar/": ("minatar", "minatar.gym:register_envs"),
                "ALE/": ("ale-py", "ale_py:")}


def register_env(env_id: str) -> None:
    """Register the gymnasium ids of MinAtar (``MinAtar/...``) or the ALE (``ALE/...``)
    when ``env_id`` names one of them; ``ImportError`` naming the package and the extra
    when it is missing."""
    import importlib

    import gymnasium as gym

    for prefix, (package, target) in ENV_FAMILIES.items():
        if not env_id.startswith(prefix) or env_id in gym.registry:
            continue
        module_name, _, function = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"env {env_id!r} needs the {package} package: pip install "
                              f"'sparse-agents[envs]'") from err
        if function:
            getattr(module, function)()
        else:
            gym.register_envs(module)


def env_slug(env_id: str) -> str:
    """``env_id`` as one folder-name component (``MinAtar/Breakout-v1`` ->
    ``MinAtar-Breakout-v1``)."""
    return env_id.replace("/", "-")


def is_atari(env_id: str) -> bool:
    """An ALE game, trained as the zoo does (SB3's Atari wrappers, 4 stacked frames)."""
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def _exploration_fraction(steps: Any, timesteps: int | None) -> float:
    """SB3's ``exploration_fraction`` annealing epsilon over ``steps`` of ``timesteps``."""
    if timesteps is None:
        raise ValueError(f"exploration_steps={steps} needs the run's budget: pass "
                         "make_agent(..., timesteps=N)")
    if int(steps) < 1 or int(timesteps) < 1:
        raise ValueError(f"exploration_steps and timesteps must be >= 1, got {steps}, "
                         f"{timesteps}")
    return min(1.0, int(steps) / int(timesteps))


def _split_hyperparameters(algo: str, env_id: str, overrides: dict | None, updater: str,
                           fused_adam: bool, source: str = "zoo", timesteps: int | None = None,
                           sparse_settings: str = "table",
                           ) -> tuple[dict, dict, dict, bool, int | None]:
    """``source``'s values plus ``overrides``, split into algorithm keywords, policy
    keywords and sparse options; also ``normalize`` and the table's ``n_envs``. A table's
    sparse schedule is dropped for a dense agent, and for a sparse one when
    ``sparse_settings="defaults"``; one given in ``overrides`` is an error for a dense
    agent."""
    if sparse_settings not in SPARSE_SETTINGS:
        raise ValueError(f"sparse_settings must be one of {SPARSE_SETTINGS}, got "
                         f"{sparse_settings!r}")
    hp = hyperparameters(algo, env_id, source,
                         sparse=updater != DENSE and sparse_settings == "table")
    hp.update(overrides or {})
    if "exploration_steps" in hp:
        hp["exploration_fraction"] = _exploration_fraction(hp.pop("exploration_steps"),
                                                           timesteps)
    normalize = bool(hp.pop("normalize", False))
    n_envs = hp.pop("n_envs", None)
    policy_kwargs = dict(hp.pop("policy_kwargs", {}) or {})
    for key in POLICY_KEYS:
        if key in hp:
            policy_kwargs[key] = hp.pop(key)
    sparse_hp = {k: hp.pop(k) for k in list(hp) if k in SPARSE_DEFAULTS}
    if sparse_hp and updater == DENSE:
        raise ValueError(f"sparse options {sorted(sparse_hp)} given with --updater dense")
    adam = policy_kwargs.get("optimizer_class", torch.optim.Adam) in FUSED_BY_DEFAULT
    if fused_adam and algo != "a2c" and adam:  # A2C and MinAtar's DQN: RMSprop
        opt_kwargs = {"eps": 1e-5} if algo == "ppo" else {}
        opt_kwargs.update(policy_kwargs.get("optimizer_kwargs") or {})
        opt_kwargs["fused"] = True
        policy_kwargs["optimizer_kwargs"] = opt_kwargs
    return resolve_schedules(hp), policy_kwargs, sparse_hp, normalize, n_envs


def _envs(env_id: str, n_envs: int, seed: int, normalize: bool, gamma: float,
          reward_scale: float | None = None):
    """Training and evaluation environments (``VecNormalize`` when ``normalize``; the
    training rewards times ``reward_scale`` when given, the evaluation's unscaled)."""
    register_env(env_id)
    if is_atari(env_id):
        if reward_scale is not None:
            raise ValueError("reward_scale is not supported on Atari (the wrappers clip "
                             "rewards)")
        env = VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), n_stack=4)
        eval_env = VecFrameStack(make_atari_env(env_id, n_envs=1, seed=seed + 10_000),
                                 n_stack=4)
        return env, eval_env
    wrapper = None
    if reward_scale is not None:
        scale = float(reward_scale)
        wrapper = functools.partial(TransformReward, func=lambda r: scale * r)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, wrapper_class=wrapper)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if normalize:
        env = VecNormalize(env, gamma=gamma)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    return env, eval_env


def _action_noise(noise: Any, env) -> NormalActionNoise | None:
    """The table's ``("normal", std)`` as SB3 action noise."""
    if noise is None:
        return None
    kind, std = noise
    if kind != "normal":
        raise ValueError(f"action_noise kind must be 'normal', got {kind!r}")
    dim = env.action_space.shape[-1]
    return NormalActionNoise(mean=[0.0] * dim, sigma=[float(std)] * dim)


def make_agent(algo: str, env_id: str, updater: str = "srigl", sparsity: float = 0.9,
               distribution: str = "erk", seed: int = 0, overrides: dict | None = None,
               sparse_options: dict | None = None, n_envs: int | None = None,
               device: str = "cpu", verbose: int = 0, fused_adam: bool = False,
               hyperparams: str = "zoo", timesteps: int | None = None,
               sparse_settings: str = "table"):
    """Build ``(model, eval_env)``: the agent with the hyperparameters of table
    ``hyperparams`` (``"zoo"`` or a paper's, e.g. ``"graesser"``, ``"minatar"``;
    ``overrides`` win), sparse unless ``updater == "dense"``. ``sparse_settings``:
    ``"table"`` gives a sparse agent the table's sparse schedule and sparse-only values
    (a paper's sparse config), ``"defaults"`` the table's dense configuration and the
    sparse policy's shipped defaults (what a user who changes only the policy class
    gets). ``fused_adam``:
    Adam(fused=True) for the Adam-trained algorithms (PPO keeps SB3's eps=1e-5; A2C's
    RMSprop is kept). ``timesteps``: the run's budget, needed by a table that anneals
    exploration over a number of steps. MinAtar and ALE ids are registered; Atari games
    get SB3's Atari wrappers, 4 stacked frames and the ``CnnPolicy``."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    get_updater(updater, dense=True)
    hp, policy_kwargs, sparse_hp, normalize, table_envs = _split_hyperparameters(
        algo, env_id, overrides, updater, fused_adam, hyperparams, timesteps, sparse_settings)
    env, eval_env = _envs(env_id, n_envs or int(table_envs or 1), seed, normalize,
                          hp.get("gamma", 0.99), hp.pop("reward_scale", None))
    noise = _action_noise(hp.pop("action_noise", None), env)
    if noise is not None:
        hp["action_noise"] = noise
    atari = is_atari(env_id)
    if atari and algo not in SPARSE_CNN_POLICIES:
        raise ValueError(f"algo on Atari must be one of {tuple(SPARSE_CNN_POLICIES)}, "
                         f"got {algo!r}")
    if updater == DENSE:
        policy: Any = "CnnPolicy" if atari else "MlpPolicy"
    else:
        policy = (SPARSE_CNN_POLICIES if atari else SPARSE_POLICIES)[algo]
        policy_kwargs.update(sparsity=sparsity, updater=updater, distribution=distribution,
                             seed=seed)
        policy_kwargs.update(sparse_hp)  # the table's schedule and --hp ...
        policy_kwargs.update(sparse_options or {})  # ... lose to explicit options
    model = getattr(sb3, algo.upper())(policy, env, policy_kwargs=policy_kwargs, seed=seed,
                                       device=device, verbose=verbose, **hp)
    return model, eval_env


#: the protocol's score window: the last 10% of training (docs/protocol.md)
WINDOW = 0.1
#: evaluations the window must hold
MIN_EVALS = 5


def window_score(timesteps: Sequence[float], returns: Sequence[float], total: float,
                 window: float = WINDOW, min_evals: int = MIN_EVALS) -> float:
    """Mean of the evaluation ``returns`` at ``timesteps`` in the last ``window`` of
    ``total`` training steps; a ``ValueError`` when fewer than ``min_evals`` lie there
    (evaluate more often near the end)."""
    if not 0 < window <= 1:
        raise ValueError(f"window must be in (0, 1], got {window!r}")
    t = np.asarray(timesteps, dtype=float)
    r = np.asarray(returns, dtype=float)
    inside = r[t >= (1.0 - window) * float(total)]
    if len(inside) < min_evals:
        raise ValueError(f"the last {window:.0%} of {total:g} steps holds {len(inside)} "
                         f"evaluations, min_evals is {min_evals}: evaluate more often")
    return float(inside.mean())


def window_steps(timesteps: int, evals: int, window: float = WINDOW) -> list[int]:
    """``evals`` evaluation points spread evenly over the last ``window`` of ``timesteps``
    (the last one at the end): where the protocol's score needs its evaluations
    (docs/protocol.md). ``evals`` 0: none."""
    if evals < 0:
        raise ValueError(f"window_evals must be >= 0, got {evals}")
    if not 0.0 < window <= 1.0:
        raise ValueError(f"window must be in (0, 1], got {window}")
    start = (1.0 - window) * timesteps
    return sorted({int(math.ceil(start + window * timesteps * i / evals))
                   for i in range(1, evals + 1)})


def evaluation_callback(eval_env, every: int, episodes: int, rows: list, csv_path=None,
                        echo=None, extra_steps: Sequence[int] = (), evaluate=None):
    """An SB3 callback evaluating the deterministic policy every ``every`` timesteps,
    at each of ``extra_steps`` (:func:`window_steps`: the end of training more densely)
    and at the start and the end (``evaluate(model, eval_env) -> (mean, std)`` instead of
    the deterministic return when given); rows ``(timesteps, mean, std)``, ``std`` the spread of
    that one evaluation's episode returns: population std (÷ n), as SB3's
    ``evaluate_policy`` reports it, describing the episodes rather than estimating a spread
    over seeds (no table shows it as ``± std``)."""
    extra = sorted(extra_steps)

    class EvalCurve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = 0
            self.seconds = 0.0  # time spent evaluating (excluded from training time)

        def _evaluate(self) -> None:
            start = time.perf_counter()
            try:
                self._evaluate_now()
            finally:
                self.seconds += time.perf_counter() - start

        def _evaluate_now(self) -> None:
            sync_envs_normalization(self.training_env, eval_env)
            if evaluate is not None:
                mean, std = evaluate(self.model, eval_env)
                row = (int(self.num_timesteps), float(mean), float(std))
            else:
                returns, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=episodes,
                                             deterministic=True, return_episode_rewards=True)
                row = (int(self.num_timesteps), float(np.mean(returns)),
                       float(np.std(returns)))
            if rows and rows[-1][0] == row[0]:
                return
            rows.append(row)
            self.logger.record("eval/mean_reward", row[1])
            if csv_path is not None:
                write_curve_csv(csv_path, rows)
            if echo is not None:
                echo(row)

        def _on_training_start(self) -> None:
            self.next_eval = self.num_timesteps
            self._evaluate()
            self.next_eval += every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval or (
                    extra and self.num_timesteps >= extra[0]):
                self._evaluate()
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += every
                while extra and extra[0] <= self.num_timesteps:
                    extra.pop(0)
            return True

        def _on_training_end(self) -> None:
            self._evaluate()

    return EvalCurve()


def write_curve_csv(path: Path, rows: list) -> None:
    """Write evaluation rows ``(timesteps, mean, std)`` as CSV."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timesteps", "mean", "std"])
        writer.writerows(rows)


def last_fraction_score(rows: list, fraction: float = 0.1) -> float:
    """Graesser et al.'s score: the mean of the last ``fraction`` of the evaluations
    ``(timesteps, mean, std)`` (the one at the start included; at least one)."""
    if not rows:
        return math.nan
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, int(fraction * len(rows)))
    return float(np.mean([r[1] for r in rows[-k:]]))


def optimizer_label(policy: torch.nn.Module) -> str:
    """The optimizers training ``policy``, e.g. ``"Adam(fused)"`` or ``"RMSprop"``
    (SAC/TD3's actor and critic optimizers once each)."""
    optimizers = [m.optimizer for m in policy.modules()
                  if isinstance(getattr(m, "optimizer", None), torch.optim.Optimizer)]
    return ", ".join(sorted({type(o).__name__ + ("(fused)" if o.defaults.get("fused") else "")
                             for o in optimizers}))


def nonzero_params(policy: torch.nn.Module) -> int:
    """Nonzero parameters of ``policy`` (weights, biases, ``log_std``), target networks
    (``*_target``) left out: what a sparse agent stores, Graesser et al.'s parameter count."""
    return sum(int(p.count_nonzero()) for name, p in policy.named_parameters()
               if not any(part.endswith("_target") for part in name.split(".")))


def train_and_evaluate(algo: str = "ppo", env_id: str = "CartPole-v1", updater: str = "srigl",
                       sparsity: float = 0.9, distribution: str = "erk",
                       timesteps: int = 50_000, seed: int = 0, eval_episodes: int = 10,
                       n_evals: int = 5, overrides: dict | None = None,
                       sparse_options: dict | None = None,
                       hyperparams: str = "zoo") -> dict[str, Any]:
    """Train one agent and evaluate it: ``n_evals`` deterministic evaluations spread
    over training (plus one at the start) and a final one of ``eval_episodes`` episodes.

    Returns ``mean_return``/``std_return`` (final evaluation), ``auc_return`` (mean of
    the curve after the start, a sample-efficiency measure), ``last10_return``
    (:func:`last_fraction_score`), ``best_return``, the curve
    itself, wall/training seconds, and ``masks`` (the topology's metrics; ``{}`` dense).
    """
    check_sparsity(sparsity)
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if eval_episodes < 1 or n_evals < 1:
        raise ValueError(f"eval_episodes and n_evals must be >= 1, got {eval_episodes}, "
                         f"{n_evals}")
    # the algorithm seeds torch, numpy and random itself (SB3's ``seed=``)
    model, eval_env = make_agent(algo, env_id, updater, sparsity, distribution, seed,
                                 overrides, sparse_options, hyperparams=hyperparams,
                                 timesteps=timesteps)
    rows: list = []
    callback = evaluation_callback(eval_env, max(1, timesteps // n_evals), eval_episodes, rows)
    start = time.perf_counter()
    model.learn(timesteps, callback=callback)
    wall = time.perf_counter() - start
    metrics = model.policy.sparse_metrics() if hasattr(model.policy, "sparse_metrics") else {}
    curve = [r[1] for r in rows[1:]] or [math.nan]
    return {
        "mean_return": rows[-1][1], "std_return": rows[-1][2],
        "auc_return": float(np.mean(curve)), "best_return": float(max(curve)),
        "last10_return": last_fraction_score(rows),
        "curve": [list(r) for r in rows], "wall_s": wall,
        "train_s": wall - callback.seconds, "timesteps": int(model.num_timesteps),
        "masks": {k: float(v) for k, v in metrics.items()},
    }

"""Train and evaluate (sparse) SB3 agents: the agent factory with rl-baselines3-zoo
hyperparameters, an evaluation-curve callback, and :func:`train_and_evaluate`, the
one-call experiment the study harness and the benchmarks run."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

ALGOS = ("ppo", "a2c", "dqn", "sac", "td3")
UPDATERS = ("dense", "static", "set", "rigl", "srigl")
DEFAULT_ENV = {"ppo": "CartPole-v1", "a2c": "CartPole-v1", "dqn": "CartPole-v1",
               "sac": "Pendulum-v1", "td3": "Pendulum-v1"}

#: rl-baselines3-zoo hyperparameters (hyperparams/<algo>.yml) for the classic tasks;
#: "lin_X" is a linear schedule from X to 0; "normalize" wraps the env in VecNormalize
HYPERPARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "CartPole-v1"): dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8,
                                 gamma=0.98, n_epochs=20, ent_coef=0.0,
                                 learning_rate="lin_0.001", clip_range="lin_0.2"),
    ("ppo", "Acrobot-v1"): dict(normalize=True, n_envs=16, n_steps=256, gae_lambda=0.94,
                                gamma=0.99, n_epochs=4, ent_coef=0.0),
    ("a2c", "CartPole-v1"): dict(n_envs=8, ent_coef=0.0),
    ("a2c", "Acrobot-v1"): dict(normalize=True, n_envs=16, ent_coef=0.0),
    ("dqn", "CartPole-v1"): dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                                 learning_starts=1000, gamma=0.99, target_update_interval=10,
                                 train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                                 exploration_final_eps=0.04, net_arch=[256, 256]),
    ("dqn", "Acrobot-v1"): dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
                                learning_starts=0, gamma=0.99, target_update_interval=250,
                                train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                                exploration_final_eps=0.1, net_arch=[256, 256]),
    ("sac", "Pendulum-v1"): dict(learning_rate=1e-3),
    ("td3", "Pendulum-v1"): dict(learning_rate=1e-3, gamma=0.98, buffer_size=200_000,
                                 learning_starts=10_000, action_noise=("normal", 0.1),
                                 gradient_steps=1, train_freq=1, net_arch=[400, 300]),
}
POLICY_KEYS = ("net_arch", "activation_fn", "ortho_init", "log_std_init", "n_critics",
               "share_features_extractor", "optimizer_kwargs")



def _schedule(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])

        def linear(progress_remaining: float) -> float:
            return progress_remaining * start

        return linear
    return value


def make_agent(algo: str, env_id: str, updater: str = "srigl", sparsity: float = 0.9,
               distribution: str = "erk", seed: int = 0, overrides: dict | None = None,
               sparse_options: dict | None = None, n_envs: int | None = None,
               device: str = "cpu", verbose: int = 0, fused_adam: bool = False):
    """Build ``(model, eval_env)``: the agent with zoo hyperparameters (``overrides``
    win), sparse unless ``updater == "dense"``. ``fused_adam``: Adam(fused=True) for
    the Adam-trained algorithms (PPO keeps SB3's eps=1e-5; A2C's RMSprop is kept)."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import VecNormalize

    import sparse_agents.sb3 as ssb3

    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if updater not in UPDATERS:
        raise ValueError(f"updater must be one of {UPDATERS}, got {updater!r}")
    hp = dict(HYPERPARAMS.get((algo, env_id), {}))
    hp.update(overrides or {})
    normalize = bool(hp.pop("normalize", False))
    n_envs = n_envs or int(hp.pop("n_envs", 1))
    hp.pop("n_envs", None)
    policy_kwargs = dict(hp.pop("policy_kwargs", {}) or {})
    for key in POLICY_KEYS:
        if key in hp:
            policy_kwargs[key] = hp.pop(key)
    sparse_hp = {k: hp.pop(k) for k in list(hp) if k in ssb3.SPARSE_DEFAULTS}
    if sparse_hp and updater == "dense":
        raise ValueError(f"sparse options {sorted(sparse_hp)} given with --updater dense")
    if fused_adam and algo != "a2c":
        opt_kwargs = {"eps": 1e-5} if algo == "ppo" else {}
        opt_kwargs.update(policy_kwargs.get("optimizer_kwargs") or {})
        opt_kwargs["fused"] = True
        policy_kwargs["optimizer_kwargs"] = opt_kwargs
    for key in ("learning_rate", "clip_range"):
        if key in hp:
            hp[key] = _schedule(hp[key])
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if normalize:
        env = VecNormalize(env, gamma=hp.get("gamma", 0.99))
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    noise = hp.pop("action_noise", None)
    if noise is not None:
        kind, std = noise
        if kind != "normal":
            raise ValueError(f"action_noise kind must be 'normal', got {kind!r}")
        dim = env.action_space.shape[-1]
        hp["action_noise"] = NormalActionNoise(mean=[0.0] * dim, sigma=[float(std)] * dim)
    cls = getattr(sb3, algo.upper())
    if updater == "dense":
        policy: Any = "MlpPolicy"
    else:
        policy = {"ppo": ssb3.SparseActorCriticPolicy, "a2c": ssb3.SparseActorCriticPolicy,
                  "dqn": ssb3.SparseDQNPolicy, "sac": ssb3.SparseSACPolicy,
                  "td3": ssb3.SparseTD3Policy}[algo]
        policy_kwargs.update(sparsity=sparsity, updater=updater, distribution=distribution,
                             seed=seed)
        policy_kwargs.update(sparse_options or {})
        policy_kwargs.update(sparse_hp)
    model = cls(policy, env, policy_kwargs=policy_kwargs, seed=seed, device=device,
                verbose=verbose, **hp)
    return model, eval_env


def evaluation_callback(eval_env, every: int, episodes: int, rows: list, csv_path=None,
                        echo=None):
    """An SB3 callback evaluating the deterministic policy every ``every`` timesteps
    (and at the start and the end); rows ``(timesteps, mean, std)``."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

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
            returns, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=episodes,
                                         deterministic=True, return_episode_rewards=True)
            import numpy as np

            row = (int(self.num_timesteps), float(np.mean(returns)), float(np.std(returns)))
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
            if self.num_timesteps >= self.next_eval:
                self._evaluate()
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += every
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


def train_and_evaluate(algo: str = "ppo", env_id: str = "CartPole-v1", updater: str = "srigl",
                       sparsity: float = 0.9, distribution: str = "erk",
                       timesteps: int = 50_000, seed: int = 0, eval_episodes: int = 10,
                       n_evals: int = 5, overrides: dict | None = None,
                       sparse_options: dict | None = None) -> dict[str, Any]:
    """Train one agent and evaluate it: ``n_evals`` deterministic evaluations spread
    over training (plus one at the start) and a final one of ``eval_episodes`` episodes.

    Returns ``mean_return``/``std_return`` (final evaluation), ``auc_return`` (mean of
    the curve after the start, a sample-efficiency measure), ``best_return``, the curve
    itself, wall/training seconds, and ``masks`` (the topology's metrics; ``{}`` dense).
    """
    import numpy as np

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if eval_episodes < 1 or n_evals < 1:
        raise ValueError(f"eval_episodes and n_evals must be >= 1, got {eval_episodes}, "
                         f"{n_evals}")
    # the algorithm seeds torch, numpy and random itself (SB3's ``seed=``)
    model, eval_env = make_agent(algo, env_id, updater, sparsity, distribution, seed,
                                 overrides, sparse_options)
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
        "curve": [list(r) for r in rows], "wall_s": wall,
        "train_s": wall - callback.seconds, "timesteps": int(model.num_timesteps),
        "masks": {k: float(v) for k, v in metrics.items()},
    }

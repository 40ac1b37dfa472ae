"""Train a (sparse) SB3 agent from the command line, rl-zoo style.

    sparse-train --timesteps 20000 --out runs/quickstart          # sparse PPO, CartPole
    python scripts/train_agent.py --algo dqn --updater rigl --sparsity 0.9 --out runs/dqn

Writes to ``--out``: ``model.zip`` (load with ``PPO.load``), ``evaluations.csv``
(timesteps, mean, std of the deterministic evaluation return), ``learning_curve.png``,
``progress.csv`` (SB3's logger, ``sparse/`` metrics included), ``config.json`` and
``summary.json`` (final return, wall time, sparse metrics); ``vecnormalize.pkl`` when
observations are normalised.

Hyperparameters: the rl-baselines3-zoo values for the classic tasks below (``HYPERPARAMS``),
SB3's defaults elsewhere; ``--hp key=value`` overrides any (values are Python literals;
policy keywords such as ``net_arch`` and sparse options such as ``gamma_sal`` or
``dense_layers`` go to ``policy_kwargs``).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import sys
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, default="ppo")
    p.add_argument("--env", default=None, help="Gymnasium id (default: CartPole-v1, "
                   "Pendulum-v1 for sac/td3)")
    p.add_argument("--updater", choices=UPDATERS, default="srigl",
                   help="topology updater; 'dense' trains SB3's plain policy")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distribution", choices=("erk", "er", "uniform"), default="erk")
    p.add_argument("--delta-t", type=int, default=None,
                   help="optimizer steps between topology updates (default 100)")
    p.add_argument("--drop-fraction", type=float, default=0.3)
    p.add_argument("--t-end-fraction", type=float, default=0.75,
                   help="updates stop after this fraction of the optimizer steps")
    p.add_argument("--condensed-rollout", action="store_true",
                   help="roll out with a condensed copy of the policy")
    p.add_argument("--fused-adam", action="store_true",
                   help="Adam(fused=True) (keeps SB3's other Adam defaults); on CPU it "
                   "avoids the slow sqrt of the exact-zero moments of masked weights")
    p.add_argument("--timesteps", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory "
                   "(default runs/<algo>-<env>-<updater>-s<seed>)")
    p.add_argument("--eval-freq", type=int, default=None,
                   help="timesteps between evaluations (default timesteps/10)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter, e.g. --hp n_steps=64 --hp "
                   "net_arch=[64,64]")
    p.add_argument("--n-envs", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tb")
    p.add_argument("--verbose", type=int, default=0, help="1: SB3's log tables on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip learning_curve.png")
    return p


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _literal(value.strip())
    return out


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
                _write_csv(csv_path, rows)
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


def _write_csv(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timesteps", "mean", "std"])
        writer.writerows(rows)


def plot_curve(rows: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t, mean, std = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(t, mean, marker="o", ms=3)
    ax.fill_between(t, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("timesteps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate, save; returns the summary."""
    import torch
    from stable_baselines3.common.logger import configure

    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if args.timesteps < 1:
        raise ValueError(f"--timesteps must be >= 1, got {args.timesteps}")
    torch.set_num_threads(max(1, args.threads))
    env_id = args.env or DEFAULT_ENV[args.algo]
    out = Path(args.out or f"runs/{args.algo}-{env_id}-{args.updater}-s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.hp)
    sparse_options: dict[str, Any] = {"t_end_fraction": args.t_end_fraction,
                                      "drop_fraction": args.drop_fraction,
                                      "condensed_rollout": args.condensed_rollout}
    if args.delta_t is not None:
        sparse_options["delta_t"] = args.delta_t
    model, eval_env = make_agent(args.algo, env_id, args.updater, args.sparsity,
                                 args.distribution, args.seed, overrides, sparse_options,
                                 args.n_envs, args.device, args.verbose, args.fused_adam)
    formats = ["csv"] + (["stdout"] if args.verbose else []) + \
        (["tensorboard"] if args.tensorboard else [])
    model.set_logger(configure(str(out), formats))
    label = (f"{args.algo.upper()} {env_id} "
             + ("dense" if args.updater == "dense"
                else f"{args.updater} {args.sparsity:.0%} {args.distribution}"))
    rows: list = []
    show = not args.no_progress

    def echo(row):
        if show:
            print(f"  eval @ {row[0]:>8d} steps: return {row[1]:8.1f} +- {row[2]:.1f}",
                  flush=True)

    every = args.eval_freq or max(1, args.timesteps // 10)
    callback = evaluation_callback(eval_env, every, args.eval_episodes, rows,
                                   out / "evaluations.csv", echo)
    config = dict(vars(args), env=env_id, out=str(out), hyperparams={
        k: repr(v) for k, v in {**HYPERPARAMS.get((args.algo, env_id), {}),
                                **overrides}.items()})
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    print(f"training {label} for {args.timesteps} timesteps -> {out}", flush=True)
    start = time.perf_counter()
    model.learn(args.timesteps, callback=callback, progress_bar=show)
    wall = time.perf_counter() - start
    model.save(out / "model.zip")
    env = model.get_env()
    if hasattr(env, "obs_rms"):
        env.save(str(out / "vecnormalize.pkl"))
    if rows and not args.no_plot:
        plot_curve(rows, out / "learning_curve.png", label)
    metrics = model.policy.sparse_metrics() if hasattr(model.policy, "sparse_metrics") else {}
    summary = {
        "algo": args.algo, "env": env_id, "updater": args.updater,
        "sparsity": 0.0 if args.updater == "dense" else args.sparsity,
        "distribution": args.distribution, "seed": args.seed, "timesteps": args.timesteps,
        "final_mean": rows[-1][1] if rows else math.nan,
        "final_std": rows[-1][2] if rows else math.nan,
        "best_mean": max(r[1] for r in rows) if rows else math.nan,
        "wall_s": wall, "eval_s": callback.seconds, "train_s": wall - callback.seconds,
        "density": metrics.get("density", 1.0), "updates": metrics.get("updates", 0),
        "itop": metrics.get("itop", math.nan),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done in {wall:.1f}s ({wall - callback.seconds:.1f}s training): final return "
          f"{summary['final_mean']:.1f} +- "
          f"{summary['final_std']:.1f}, density {summary['density']:.3f}, "
          f"{summary['updates']} topology updates; saved {out / 'model.zip'}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, args.threads)))
    try:
        run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())

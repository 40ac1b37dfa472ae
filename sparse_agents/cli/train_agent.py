"""Train a (sparse) SB3 agent from the command line, rl-zoo style.

    sparse-train --timesteps 100000 --out runs/quickstart          # the README quickstart
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
import os
import sys
from typing import Any

from sparse_agents.distributions import METHODS
from sparse_agents.experiments.hyperparams import SOURCES, SPARSE_SETTINGS
from sparse_agents.experiments.rl import ALGOS, env_slug
from sparse_agents.experiments.rl_run import FLAG_OPTIONS, RLRun, parse_overrides
from sparse_agents.updaters import updater_names

__all__ = ["build_agent", "build_parser", "main", "parse_overrides", "run", "run_of"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-train", description=__doc__.split("\n\n")[0],
        epilog="Each run trains from scratch and overwrites the files in --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, default="ppo")
    p.add_argument("--env", default=None, help="Gymnasium id (default: CartPole-v1, "
                   "Pendulum-v1 for sac/td3)")
    p.add_argument("--updater", choices=updater_names(dense=True), default="srigl",
                   help="topology updater; 'dense' trains SB3's plain policy")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distribution", choices=METHODS, default="erk")
    p.add_argument("--delta-t", type=int, default=None,
                   help="optimizer steps between topology updates (default: the sparse "
                   "policy's, see docs/rl.md)")
    p.add_argument("--drop-fraction", type=float, default=None,
                   help="fraction of active weights replaced per update (default: the "
                   "policy's)")
    p.add_argument("--t-end-fraction", type=float, default=None,
                   help="updates stop after this fraction of the optimizer steps "
                   "(default: the policy's)")
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
    p.add_argument("--window-evals", type=int, default=0, metavar="K",
                   help="K more evaluations spread over the last 10%% of training (the "
                        "protocol's score window, summary window_score; docs/protocol.md)")
    p.add_argument("--hyperparams", choices=tuple(SOURCES), default="zoo",
                   help="hyperparameter table: rl-baselines3-zoo's, or a paper's own "
                        "configuration with its sparse schedule (graesser: Graesser et al. "
                        "2022; dqn CartPole-v1, ppo and sac HalfCheetah-v5; minatar: Young "
                        "& Tian 2019's DQN on MinAtar/<Game>-v1)")
    p.add_argument("--sparse-settings", choices=SPARSE_SETTINGS, default="table",
                   help="a sparse run's schedule, init and sparse-only values: the table's "
                        "(table: a paper's sparse config) or the sparse policy's shipped "
                        "defaults over the table's dense configuration (defaults: what a "
                        "user who changes only the policy class gets)")
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


def run_of(args: argparse.Namespace) -> RLRun:
    """The typed run ``args`` describe (every setting checked)."""
    options = {k: getattr(args, k) for k in FLAG_OPTIONS if getattr(args, k) is not None}
    return RLRun(algo=args.algo, env=args.env, updater=args.updater, sparsity=args.sparsity,
                 distribution=args.distribution, seed=args.seed, timesteps=args.timesteps,
                 hyperparams=args.hyperparams, sparse_settings=args.sparse_settings,
                 overrides=parse_overrides(args.hp), options=options,
                 eval_freq=args.eval_freq, eval_episodes=args.eval_episodes,
                 window_evals=args.window_evals, fused_adam=args.fused_adam,
                 condensed_rollout=args.condensed_rollout,
                 n_envs=args.n_envs, device=args.device)


def build_agent(args: argparse.Namespace):
    """``(model, eval_env)`` of the run ``args`` describe (nothing trained or written)."""
    return run_of(args).build(args.verbose)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate, save; returns the summary."""
    spec = run_of(args)
    out = args.out or f"runs/{spec.algo}-{env_slug(spec.env)}-{spec.updater}-s{spec.seed}"
    return spec.train(out, threads=args.threads, progress=not args.no_progress,
                      plot=not args.no_plot, verbose=args.verbose,
                      tensorboard=args.tensorboard)


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

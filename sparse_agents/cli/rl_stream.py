"""Train one SB3 agent through a continual-RL task stream and write its return matrix.

    sparse-rl-stream --stream cartpole-physics --algo ppo --updater srigl --sparsity 0.9 \
        --task-masks --steps-per-task 50000 --seed 0 --out runs/cartpole_srigl
    sparse-rl-stream --stream metaworld-cw10 --algo sac --one-hot --steps-per-task 1000000 \
        --out runs/cw10_sac_srigl                   # Continual World with per-task masks

Writes ``return_matrix.csv``, ``summary.json`` and ``return_matrix.png`` (see
:func:`sparse_agents.experiments.rl_stream.train_stream` and docs/continual_rl.md).
"""

from __future__ import annotations

import argparse
import json

import torch

import envs
from sparse_agents.distributions import METHODS
from sparse_agents.experiments.rl_stream import ALGOS, checkpointed_tasks, train_stream
from sparse_agents.regularize import REGULARIZERS
from sparse_agents.updaters import updater_names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-rl-stream", description=__doc__.split("\n\n")[0],
        epilog="Each run starts from scratch (or from --checkpoint) and overwrites the "
               "files in --out.")
    p.add_argument("--stream", required=True, choices=envs.list_streams())
    p.add_argument("--algo", default="ppo", choices=sorted(ALGOS))
    p.add_argument("--updater", default="srigl", choices=updater_names(dense=True))
    p.add_argument("--sparsity", type=float, default=0.9,
                   help="sparsity in [0, 1); per task with task masks")
    p.add_argument("--distribution", default="erk", choices=METHODS)
    p.add_argument("--task-masks", action=argparse.BooleanOptionalAction, default=None,
                   help="per-task masks (default: on for sparse updaters, off for dense)")
    p.add_argument("--steps-per-task", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-tasks", type=int, default=None, help="first n tasks only")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--one-hot", action="store_true", help="append a one-hot task id")
    p.add_argument("--no-transfer", action="store_true",
                   help="task t's forward uses only its own weights")
    p.add_argument("--per-task-heads", action="store_true",
                   help="dense action/value heads, one per task")
    p.add_argument("--dense-input", action="store_true",
                   help="keep the first layer of the policy and value MLPs dense")
    p.add_argument("--keep-buffer", action="store_true",
                   help="off-policy: keep the replay buffer across tasks (default: emptied)")
    p.add_argument("--reset-per-task", action="store_true",
                   help="a new agent for every task (training from scratch: the reference "
                        "of forward transfer and plasticity)")
    p.add_argument("--packnet", action="store_true",
                   help="PackNet-style masks: train every free weight, prune to the task's "
                        "budget, retrain (use --updater static)")
    p.add_argument("--regularizer", choices=REGULARIZERS, default=None,
                   help="fine-tune with an L2 or EWC penalty towards the last task's weights")
    p.add_argument("--reg-coef", type=float, default=1.0, help="the penalty's weight")
    p.add_argument("--curve-evals", type=int, default=0,
                   help="evaluations of each task while it trains (forward transfer)")
    p.add_argument("--algo-kwargs", type=json.loads, default=None,
                   help='JSON dict overriding the hyperparameters, e.g. \'{"n_envs": 4}\'')
    p.add_argument("--checkpoint", default=None,
                   help="folder for a checkpoint after every task; a run given a folder "
                        "that holds one (same settings) goes on after its last task")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--verbose", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the stream, print the summary and write the files; returns 0."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    def progress(task: int, result) -> None:
        row = ", ".join(f"{x:.2f}" for x in result.returns[task, : task + 1])
        print(f"after task {task} ({result.train_seconds[task]:.0f} s): {result.metric} "
              f"[{row}], dormant {result.dormant[task]:.3f}",
              flush=True)

    if args.checkpoint and (held := checkpointed_tasks(args.checkpoint)):
        print(f"{args.checkpoint}: {held} task(s) checkpointed; going on from there",
              flush=True)
    result = train_stream(
        args.stream, algo=args.algo, updater=args.updater, sparsity=args.sparsity,
        distribution=args.distribution, task_masks=args.task_masks,
        steps_per_task=args.steps_per_task, seed=args.seed, n_tasks=args.n_tasks,
        eval_episodes=args.eval_episodes, one_hot=args.one_hot,
        transfer=not args.no_transfer, per_task_heads=args.per_task_heads,
        dense_input=args.dense_input, keep_buffer=args.keep_buffer,
        reset_per_task=args.reset_per_task, packnet=args.packnet,
        regularizer=args.regularizer,
        reg_coef=args.reg_coef, curve_evals=args.curve_evals,
        algo_kwargs=args.algo_kwargs, verbose=args.verbose, on_task_end=progress,
        checkpoint=args.checkpoint)
    paths = result.save(args.out)
    summary = result.summary()
    print(f"final {summary['metric']}: {[round(x, 2) for x in summary['final_returns']]}")
    print(f"forgetting: {summary['forgetting']:.2f}   BWT: {summary['bwt']:.2f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

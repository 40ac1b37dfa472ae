"""``run_stream``: train a continual-learning stream and write its metrics.

Example::

    python scripts/run_stream.py --stream split-digits --strategy naive --updater srigl \\
        --sparsity 0.9 --task-masks --epochs 2 --seed 0 --out runs/split-digits

Writes ``accuracy_matrix.csv`` (after training task i, accuracy on task j),
``summary.json`` (average accuracy, forgetting, BWT, mask metrics, configuration) and
``heatmap.png`` into ``--out``. The default engine is Avalanche (its strategies and
``EvaluationPlugin``); ``--engine torch`` runs naive runs without Avalanche.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from continual.backbones import BACKBONES
from continual.experiment import ENGINES, OPTIMIZERS, STRATEGIES, run_experiment
from continual.streams import STREAMS
from sparse_agents.config import SparseConfig
from sparse_agents.distributions import METHODS
from sparse_agents.schedules import SCHEDULES
from sparse_agents.updaters import updater_names

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-cl-stream",
        description="Train a continual-learning stream with (sparse) DST and report "
                    "accuracy matrix, average accuracy, forgetting and BWT.",
        epilog="Each run trains from scratch and overwrites the files in --out.")
    p.add_argument("--stream", required=True,
                   help=f"stream name: {', '.join(STREAMS)} (aliases like mnist-split work)")
    p.add_argument("--strategy", default="naive", choices=STRATEGIES)
    p.add_argument("--updater", default="srigl", choices=updater_names(dense=True),
                   help="DST updater, or 'dense' for no sparsity")
    p.add_argument("--sparsity", type=float, default=0.9,
                   help="in [0, 1); with task masks, the share each task does not claim")
    p.add_argument("--distribution", default="erk", choices=METHODS)
    p.add_argument("--task-masks", action=argparse.BooleanOptionalAction, default=True,
                   help="per-task masks (default) or DST over the whole stream")
    p.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=True,
                   help="task masks: forward of task t also uses earlier tasks' weights")
    p.add_argument("--overflow", default="raise", choices=("raise", "shrink"),
                   help="task masks: error when a task's budget does not fit, or shrink it")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-tasks", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (CSV, JSON, PNG)")
    p.add_argument("--engine", default="avalanche", choices=ENGINES)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256, help="mlp/cnn hidden width")
    p.add_argument("--backbone", default=None, choices=tuple(BACKBONES),
                   help="feature extractor (default: mlp for flat inputs, cnn for images)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel multiplier of mobilenetv2 / slimresnet18")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--delta-t", type=int, default=None, help="steps between DST updates")
    p.add_argument("--drop-fraction", type=float, default=None,
                   help="DST prune fraction at the first update (default 0.3)")
    p.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="decay of the prune fraction over updates")
    p.add_argument("--ewc-lambda", type=float, default=100.0)
    p.add_argument("--mem-size", type=int, default=200, help="replay buffer size")
    p.add_argument("--data-root", default=None,
                   help="folder with MNIST/CIFAR files (default $SPARSE_AGENTS_DATA or ./data)")
    p.add_argument("--max-train-per-task", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table


    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    kw = dict(engine=args.engine, device=args.device, lr=args.lr, batch_size=args.batch_size,
              hidden=args.hidden, optimizer=args.optimizer, weight_decay=args.weight_decay,
              transfer=args.transfer, overflow=args.overflow,
              ewc_lambda=args.ewc_lambda, mem_size=args.mem_size, data_root=args.data_root,
              max_train_per_task=args.max_train_per_task)
    if args.backbone is not None:
        kw.update(backbone=args.backbone, width=args.width)
    run_args = dict(stream=args.stream, strategy=args.strategy, updater=args.updater,
                    sparsity=args.sparsity, distribution=args.distribution,
                    task_masks=args.task_masks, epochs=args.epochs, seed=args.seed,
                    n_tasks=args.n_tasks, out=args.out)
    # the other topology options given (a flag left out keeps the runner's default)
    kw.update({k: v for k, v in SparseConfig.pick(vars(args)).items()
               if k not in run_args and v is not None})
    if args.no_progress:
        result = run_experiment(**run_args, **kw)
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            job = bar.add_task(f"{args.stream} {args.strategy}", total=None)

            def progress(done: int, total: int, text: str) -> None:
                bar.update(job, completed=done, total=total,
                           description=f"{args.stream} {args.strategy} {text}")

            result = run_experiment(**run_args, **kw, progress=progress)
    table = Table(title=f"{result['stream']} | {result['strategy']} | {result['updater']} | "
                        f"sparsity {result['sparsity']} | task masks {result['task_masks']}")
    n = len(result["accuracy_matrix"][0])
    table.add_column("after task")
    for j in range(n):
        table.add_column(f"T{j}", justify="right")
    for i, row in enumerate(result["accuracy_matrix"]):
        table.add_row(str(i), *["" if v is None else f"{v:.3f}" for v in row])
    console.print(table)
    console.print(json.dumps({k: None if result.get(k) is None else round(result[k], 4)
                              for k in ("avg_accuracy", "forgetting", "bwt", "fwt",
                                        "wall_time")}))
    if args.out:
        console.print(f"wrote accuracy_matrix.csv, summary.json, heatmap.png to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

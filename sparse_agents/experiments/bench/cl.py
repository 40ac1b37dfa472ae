"""Continual-learning benchmark: per-task masks vs dense and sparse baselines.

Behind ``scripts/bench_cl.py``: every method on Avalanche strategies through
:func:`continual.experiment.run_experiment`, mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sparse_agents.intervals import mean_std

METHODS = {
    "TaskMask+SRigL": dict(strategy="naive", updater="srigl", task_masks=True, sparse=True),
    "Naive+SRigL": dict(strategy="naive", updater="srigl", task_masks=False, sparse=True),
    "PackNet": dict(strategy="packnet", updater="dense", task_masks=False, sparse=True),
    "Naive dense": dict(strategy="naive", updater="dense", task_masks=False, sparse=False),
    "EWC dense": dict(strategy="ewc", updater="dense", task_masks=False, sparse=False),
}

DESCRIPTION = """\
Continual-learning benchmark: per-task masks vs dense and sparse baselines.

Streams split-digits (task-incremental) and permuted-digits, 5 tasks, 2 epochs per task,
3 seeds; methods, all on Avalanche strategies (engine="avalanche"):
  TaskMask+SRigL  Naive + TaskMaskPlugin (SRigL, ERK), at each sparsity
  Naive+SRigL     Naive + DSTPlugin (DST over the whole stream)
  PackNet         Naive + Avalanche's PackNetPlugin (each task keeps 1 - sparsity)
  Naive dense, EWC dense (lambda 100): no sparsity
Prints mean +- std over seeds of average accuracy, forgetting and BWT, the forward
FLOPs per sample of the trained model on the last task (sparse_agents.flops) and their
ratio to the dense model's, and the largest |forgetting| of the task-mask runs (which
must be exactly 0). With --out, writes results.json and table.md there; re-running
reruns every run and overwrites them."""

EPILOG = """\
--step-cost times one optimizer step (forward, backward, Adam, task-mask hooks) of each
--backbones model on a CIFAR-sized batch (--input-shape, --batch-size) on --device, and
prints the hours one run of the CIFAR-100 study takes at that rate (the study's cost in
docs/study.md comes from it).

examples:
  python scripts/bench_cl.py                       # the full table (~3 min, 2 cores)
  python scripts/bench_cl.py --step-cost --backbones mobilenetv2 resnet18 --device cuda
  python scripts/bench_cl.py --seeds 0 --sparsities 0.9 --out runs/bench_cl"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_cl.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", nargs="+", default=["split-digits", "permuted-digits"])
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.95])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--engine", default="avalanche", choices=("avalanche", "auto"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None,
                   help="folder for results.json and table.md (overwritten)")
    p.add_argument("--step-cost", action="store_true",
                   help="only time a training step per backbone (see below)")
    p.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet18"])
    p.add_argument("--input-shape", nargs=3, type=int, default=[3, 32, 32])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps-per-run", type=int, default=10 * 20 * math.ceil(5000 / 64),
                   help="optimizer steps of one run (default: CIFAR-100 as 10 tasks of "
                        "5000 images, 20 epochs, batch 64)")
    return p


def step_cost(name: str, shape: tuple[int, int, int], batch: int, device: str,
              steps: int = 5) -> float:
    """Median seconds of one training step of backbone ``name`` with a 10-way head under
    task masks (90% sparsity, RigL) on ``device``."""
    from torch import nn

    from continual.backbones import build_backbone
    from sparse_agents.task_masks import TaskMasks

    body, features = build_backbone(name, shape)
    model = nn.Sequential(body, nn.Linear(features, 10)).to(device)
    tm = TaskMasks(model, 0.9, "rigl", n_tasks=10, dense_layers=["1"], delta_t=2)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    tm.start_task(0, opt)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))  # the first step warms up


def main_step_cost(args) -> int:
    """``--step-cost``: seconds per step and hours per run, per backbone."""
    shape = tuple(args.input_shape)
    print(f"| backbone | s/step ({args.device}, batch {args.batch_size}, {args.threads} "
          f"threads) | h per run ({args.steps_per_run} steps) |\n|---|---|---|")
    for name in args.backbones:
        sec = step_cost(name, shape, args.batch_size, args.device)
        print(f"| {name} | {sec:.3f} | {sec * args.steps_per_run / 3600:.1f} |", flush=True)
    return 0


class ModelProbe:
    """A ``progress`` callback for :func:`run_experiment` that keeps a reference to the
    model it trains, to count the trained model's FLOPs afterwards.

    ``run_experiment`` returns no model; its progress callback is called once per
    training step from the Avalanche plugin callback (whose ``strategy`` argument holds
    the model) or from the torch engine's loop (local ``model``). The probe looks there
    once, at the first call, and reads the training task's label whenever the progress
    text (``task i/T``) changes; :meth:`flops` is NaN when it found nothing.
    """

    def __init__(self) -> None:
        self.strategy = None
        self.model = None
        self.input_shape: tuple[int, ...] | None = None
        self.label = 0  # task label of the last task trained (Avalanche engine)
        self.seen = False
        self.text = None

    def __call__(self, done: int, total: int, text: str) -> None:
        if self.seen:
            if self.strategy is not None and text != self.text:
                self.text = text
                self.label = int(self.strategy.mb_task_id[-1])
            return
        self.seen = True
        from torch import Tensor, nn

        caller = sys._getframe(1).f_locals
        strategy = caller.get("strategy")
        if isinstance(getattr(strategy, "model", None), nn.Module) and \
                isinstance(getattr(strategy, "mb_x", None), Tensor):
            self.strategy, self.input_shape = strategy, tuple(strategy.mb_x.shape[1:])
            self.text, self.label = text, int(strategy.mb_task_id[-1])
        elif isinstance(caller.get("model"), nn.Module) and \
                isinstance(caller.get("x"), Tensor):
            self.model, self.input_shape = caller["model"], tuple(caller["x"].shape[1:])

    def flops(self) -> tuple[float, float]:
        """(sparse forward FLOPs per sample, ratio to dense) of the trained model on
        the stream's last task (NaN, NaN when no model was found)."""
        import torch

        from sparse_agents.flops import flops

        if self.strategy is not None:
            from avalanche.models.utils import avalanche_forward

            label = self.label
            model = self.strategy.model

            def forward(m, x):
                task = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
                return avalanche_forward(m, x, task)
        elif self.model is not None:
            model = self.model
            heads = getattr(model, "heads", None)
            last = None if heads is None else int(list(heads)[-1])

            def forward(m, x):
                return m(x) if last is None else m(x, last)
        else:
            return math.nan, math.nan
        report = flops(model, self.input_shape, forward=forward)
        return float(report.sparse), report.ratio


def run_cell(stream: str, name: str, sparsity: float | None, args) -> dict:
    """One (stream, method, sparsity) cell over every seed: its summary row."""
    from continual.experiment import run_experiment

    spec = dict(METHODS[name])
    sparse = spec.pop("sparse")
    runs, counts = [], []
    for seed in args.seeds:
        probe = ModelProbe()
        runs.append(run_experiment(stream, sparsity=sparsity if sparse else 0.0,
                                   epochs=args.epochs, seed=seed, engine=args.engine,
                                   progress=probe, **spec))
        counts.append(probe.flops())
    acc = np.array([r["avg_accuracy"] for r in runs])
    fgt = np.array([r["forgetting"] for r in runs])
    bwt = np.array([r["bwt"] for r in runs])
    row = {"stream": stream, "method": name, "sparsity": sparsity if sparse else None,
           "avg_accuracy": float(acc.mean()), "avg_accuracy_std": mean_std(acc)[1],
           "forgetting": float(fgt.mean()), "forgetting_std": mean_std(fgt)[1],
           "max_abs_forgetting": float(np.abs(fgt).max()), "bwt": float(bwt.mean()),
           "seconds_per_run": float(np.mean([r["wall_time"] for r in runs])),
           "seeds": list(args.seeds),
           "flops_forward": float(np.mean([c[0] for c in counts])),
           "flops_ratio": float(np.mean([c[1] for c in counts]))}
    print(f"{stream:16s} {name:15s} s={'-' if not sparse else sparsity:<5} "
          f"acc {row['avg_accuracy']:.3f}+-{row['avg_accuracy_std']:.3f} "
          f"forgetting {row['forgetting']:+.4f} ({row['seconds_per_run']:.1f}s/run) "
          f"FLOPs {row['flops_forward']:,.0f} (x{row['flops_ratio']:.3f})", flush=True)
    return row


def run_all(args) -> list[dict]:
    """Every stream x method x sparsity (dense methods once)."""
    rows = []
    for stream in args.streams:
        for name in args.methods:
            sparse = METHODS[name]["sparse"]
            for sparsity in (args.sparsities if sparse else [0.0]):
                rows.append(run_cell(stream, name, sparsity, args))
    return rows


def render(rows: list[dict]) -> str:
    """Markdown table of the benchmark rows."""
    lines = ["| stream | method | sparsity | avg accuracy | forgetting | BWT | s/run | "
             "FLOPs/sample (× dense) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = "dense" if r["sparsity"] is None else f"{r['sparsity']:.2f}"
        lines.append(
            f"| {r['stream']} | {r['method']} | {s} | {r['avg_accuracy']:.3f} ± "
            f"{r['avg_accuracy_std']:.3f} | {r['forgetting']:.4f} ± {r['forgetting_std']:.4f} "
            f"| {r['bwt']:+.4f} | {r['seconds_per_run']:.1f} | {_flops_cell(r)} |")
    lines.append("")
    lines.append("`FLOPs/sample`: forward FLOPs of the trained model on the last task "
                 "(sparse_agents.flops: active weights only, ablated neurons folded), mean "
                 "over seeds, and its ratio to the same model dense.")
    return "\n".join(lines)


def _flops_cell(row: dict) -> str:
    value, ratio = row.get("flops_forward", math.nan), row.get("flops_ratio", math.nan)
    if not math.isfinite(value):
        return "–"
    return f"{value:,.0f} ({ratio:.3f})"


def report(rows: list[dict], start: float, out: str | None) -> None:
    """The table, the task-mask forgetting check, and the files under ``out``."""
    table = render(rows)
    print()
    print(table)
    masks = [r for r in rows if r["method"] == "TaskMask+SRigL"]
    if masks:
        worst = max(r["max_abs_forgetting"] for r in masks)
        print(f"\nTaskMask+SRigL: largest |forgetting| over all runs = {worst!r} "
              f"({'exactly 0' if worst == 0.0 else 'NOT 0'})")
    print(f"total {time.perf_counter() - start:.0f} s")
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "results.json").write_text(json.dumps(rows, indent=2))
        (path / "table.md").write_text(table + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.step_cost:
        return main_step_cost(args)
    start = time.perf_counter()
    rows = run_all(args)
    report(rows, start, args.out)
    return 0

"""Workloads a study can run (``digits``, ``cl:<stream>``, ``rl:<env id>``,
``rlstream:<stream>``): each maps a :class:`Job` to ``{"metric": primary value,
"metric_name": ..., ...}`` plus a summary of the final masks under ``"masks"``. The
second argument is the job's own folder for what it keeps between attempts
(:meth:`Job.scratch`): a stream run's per-task checkpoint, so a job killed mid-stream
resumes after its last finished task; the other workloads finish in one go and keep
nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from continual.experiment import run_experiment
from continual.streams import DEFAULT_TASKS, canonical_stream
from sparse_agents.experiments.rl import train_and_evaluate
from sparse_agents.experiments.rl_stream import train_stream
from sparse_agents.sb3 import SPARSE_DEFAULTS
from sparse_agents.study.job import Job
from sparse_agents.topology import SparseTopology
from sparse_agents.updaters import DENSE

Workload = Callable[[Job, Path | None], dict]


def mask_summary(topo: SparseTopology | None) -> dict:
    """Global/per-layer density, alive neurons and ITOP of a topology (``{}``: dense)."""
    if topo is None:
        return {}
    return {k: float(v) for k, v in topo.metrics().items()}


def digits_split(seed: int, test_fraction: float = 0.25):
    """scikit-learn digits as float tensors, split train/test by a seeded permutation."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def run_digits(job: Job, folder: Path | None = None) -> dict:
    """A sparse MLP (64-hidden-hidden-10) on scikit-learn's digits (one task; fast,
    offline); metric: test accuracy."""
    s = job.settings
    epochs = int(s.get("epochs", 10))
    batch = int(s.get("batch_size", 64))
    hidden = int(s.get("hidden", 256))
    torch.manual_seed(job.seed)
    xtr, ytr, xte, yte = digits_split(job.seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr=float(s.get("lr", 1e-3)))
    steps_per_epoch = (len(ytr) + batch - 1) // batch
    total = epochs * steps_per_epoch
    topo = None
    config = job.sparse_config(delta_t=10, t_end=max(2, int(0.75 * total)))
    if config is not None:
        topo = SparseTopology.from_config(model, opt, config)
    g = torch.Generator().manual_seed(job.seed)
    for _ in range(epochs):
        order = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return {"metric": acc, "metric_name": "test_accuracy", "test_accuracy": acc,
            "masks": mask_summary(topo)}


#: with task masks, what a job's sparsity means: "task" (each task owns
#: ``1 - sparsity``) or "network" (the whole network after the last task: each of the
#: ``n`` tasks owns ``(1 - sparsity) / n``, so 0.5 is feasible for 5 tasks)
SPARSITY_SCOPES = ("task", "network")
#: settings only RL workloads read (a study mixing CL and RL workloads shares settings)
RL_SETTINGS = ("algo", "timesteps", "eval_episodes", "n_evals", "steps_per_task",
               "dense_input", "net_arch")


def cl_stream(workload: str) -> tuple[str, int | None]:
    """``(stream, n_tasks)`` of ``cl:<stream>`` or ``cl:<stream>:<n_tasks>`` (``None``: the
    stream's default task count)."""
    stream, _, count = workload.split(":", 1)[1].partition(":")
    if not count:
        return stream, None
    if not count.isdigit() or int(count) < 2:
        raise ValueError(f"workload {workload!r}: the task count after the stream must be an "
                         f"integer >= 2, got {count!r}")
    return stream, int(count)


def run_cl(job: Job, folder: Path | None = None) -> dict:
    """A continual-learning stream of :mod:`continual` (e.g. ``cl:split-digits``, or
    ``cl:permuted-digits:10`` for 10 tasks); metric: average accuracy after the last task.

    Setting ``task_masks`` (default true) uses per-task masks, otherwise DST on a naive
    strategy; ``sparsity_scope`` (one of ``SPARSITY_SCOPES``) says what the sparsity is of.
    """
    s = {k: v for k, v in job.settings.items() if k not in RL_SETTINGS}
    stream, count = cl_stream(job.workload)
    task_masks = bool(s.pop("task_masks", True)) and job.updater != DENSE
    setting = s.pop("n_tasks", None)
    n_tasks = count if count is not None else setting  # the workload's count wins
    scope = s.pop("sparsity_scope", "task")
    if scope not in SPARSITY_SCOPES:
        raise ValueError(f"sparsity_scope must be one of {SPARSITY_SCOPES}, got {scope!r}")
    sparsity = job.sparsity
    if task_masks and scope == "network":
        n = int(n_tasks) if n_tasks is not None else DEFAULT_TASKS[canonical_stream(stream)[1]]
        sparsity = 1.0 - (1.0 - job.sparsity) / n
    result = run_experiment(
        stream=stream,
        strategy=s.pop("strategy", "naive"),
        updater=job.updater,
        sparsity=sparsity,
        distribution=job.distribution if job.updater != DENSE else "erk",
        task_masks=task_masks,
        epochs=int(s.pop("epochs", 2)),
        seed=job.seed,
        n_tasks=n_tasks,
        **s,  # any other setting (lr, hidden, overflow, ...) goes to the experiment
    )
    metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    metrics["task_sparsity"] = metrics.pop("sparsity", sparsity)  # what each task got
    metrics.update({"metric": float(result["avg_accuracy"]), "metric_name": "avg_accuracy",
                    "masks": result.get("masks", {})})
    return metrics


def run_rl(job: Job, folder: Path | None = None) -> dict:
    """An SB3 agent (setting ``algo``, default PPO) with a sparse policy on a gymnasium
    env (``rl:<env id>``); metric: mean evaluation return at the end."""
    s = dict(job.settings)
    env_id = job.workload.split(":", 1)[1]
    result = train_and_evaluate(
        algo=s.pop("algo", "ppo"), env_id=env_id, updater=job.updater,
        sparsity=job.sparsity, distribution=job.distribution if job.updater != DENSE
        else "erk", timesteps=int(s.pop("timesteps", 50_000)), seed=job.seed,
        eval_episodes=int(s.pop("eval_episodes", 10)), n_evals=int(s.pop("n_evals", 5)),
        # sparse options among the settings (delta_t, drop_fraction, gamma_sal, ...)
        sparse_options={k: v for k, v in s.items() if k in SPARSE_DEFAULTS} or None,
    )
    metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    metrics.update({"metric": float(result["mean_return"]), "metric_name": "mean_return",
                    "masks": result.get("masks", {})})
    return metrics


def run_rl_stream(job: Job, folder: Path | None = None) -> dict:
    """One SB3 agent through a gymnasium task stream from :mod:`envs` (e.g.
    ``rlstream:cartpole-physics``; per-task masks unless ``task_masks=false``; settings:
    ``algo``, ``steps_per_task``, ``dense_input``, ``n_tasks``, ``net_arch`` (the hidden
    sizes of every network), ``one_hot``, ``per_task_heads``, ``keep_buffer``,
    ``reset_per_task``, ``packnet``, ``regularizer``, ``reg_coef``, ``curve_evals``,
    ``algo_kwargs``);
    metric: the mean final value of the stream's metric over its tasks (return, or
    success rate). The record also keeps the matrix, each earlier task's forgetting, the
    training curves' areas and the dormant-neuron fraction after each task. With
    ``folder``, the run checkpoints there after every task and resumes from it."""
    s = dict(job.settings)
    sparse = job.updater != DENSE
    result = train_stream(
        job.workload.split(":", 1)[1], algo=s.get("algo", "ppo"), updater=job.updater,
        sparsity=job.sparsity if sparse else 0.0,
        distribution=job.distribution if sparse else "erk",
        task_masks=bool(s.get("task_masks", True)) and sparse,
        steps_per_task=int(s.get("steps_per_task", 50_000)), seed=job.seed,
        n_tasks=s.get("n_tasks"), eval_episodes=int(s.get("eval_episodes", 10)),
        dense_input=bool(s.get("dense_input", False)),
        one_hot=bool(s.get("one_hot", False)),
        per_task_heads=bool(s.get("per_task_heads", False)),
        keep_buffer=bool(s.get("keep_buffer", False)),
        reset_per_task=bool(s.get("reset_per_task", False)),
        packnet=bool(s.get("packnet", False)),
        regularizer=s.get("regularizer"), reg_coef=float(s.get("reg_coef", 1.0)),
        curve_evals=int(s.get("curve_evals", 0)),
        algo_kwargs=s.get("algo_kwargs"),
        policy_kwargs={"net_arch": list(s["net_arch"])} if s.get("net_arch") else None,
        checkpoint=folder,
    )
    summary = result.summary()
    metrics = {k: float(summary[k]) for k in ("average_final_return", "forgetting", "bwt")}
    metrics.update({f"final_return_task{j}": v for j, v in enumerate(result.final_returns)})
    metrics.update(max_task_forgetting=max(summary["task_forgetting"] or [0.0]),
                   task_forgetting=summary["task_forgetting"],
                   return_matrix=summary["return_matrix"],
                   curve_auc=summary["curve_auc"], dormant_fraction=summary["dormant_fraction"],
                   stream_metric=summary["metric"],
                   train_seconds=float(sum(summary["train_seconds"])))
    metrics.update({"metric": metrics["average_final_return"],
                    "metric_name": "average_final_return",
                    "masks": {k: float(v) for k, v in result.density.items()}})
    return metrics


PREFIXES: dict[str, Workload] = {"cl": run_cl, "rl": run_rl, "rlstream": run_rl_stream}
NAMED: dict[str, Workload] = {"digits": run_digits}


def resolve(name: str) -> Workload:
    """The function that runs workload ``name``."""
    if name in NAMED:
        return NAMED[name]
    prefix = name.split(":", 1)[0]
    if ":" in name and prefix in PREFIXES and name.split(":", 1)[1]:
        if prefix == "cl":
            cl_stream(name)
        return PREFIXES[prefix]
    raise ValueError(
        f"workload must be one of {sorted(NAMED)} or 'cl:<stream>[:<tasks>]' / 'rl:<env id>' / "
        f"'rlstream:<stream>', got {name!r}"
    )


def check_workload(name: str) -> None:
    """Raise ``ValueError`` for an unknown workload name."""
    resolve(name)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy, single-threaded torch (same results in any worker)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.set_num_threads(1)

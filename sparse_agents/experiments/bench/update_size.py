"""How far each PPO update moves the policy, per method: each run's mean of SB3's
``train/approx_kl`` and ``train/clip_fraction`` over its ``train()`` calls (the run's
``progress.csv``), mean +- std over seeds, and the ratio to the reference (dense) row.
A sparse policy that moves less per update than dense learns slower at the same
learning rate (docs/rl_benchmarks.md, "Why sparse PPO lags on HalfCheetah")."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparse_agents.intervals import mean_std

KEYS = {"train/approx_kl": "approx KL", "train/clip_fraction": "clip fraction"}


def run_means(progress: Path) -> dict[str, float] | None:
    """The mean of each of :data:`KEYS` over the logged ``train()`` calls of one run;
    ``None`` when the run logged none of them (DQN, SAC, A2C) or has no ``progress.csv``."""
    if not progress.exists():
        return None
    with open(progress) as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for key in KEYS:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if not values:
            return None
        out[key] = sum(values) / len(values)
    return out


def update_size_rows(runs: Mapping[tuple[str, str], Sequence[Path]],
                     reference: str) -> list[dict]:
    """``runs``: (task, method) -> the runs' ``progress.csv`` files. One row per (task,
    method) whose every run logged :data:`KEYS`: ``<key>``, ``<key>_std`` (over seeds) and
    ``<key>_ratio`` (to the ``reference`` method of the task, ``nan`` without one)."""
    means = {}
    for (task, method), paths in runs.items():
        per_run = [run_means(p) for p in paths]
        if per_run and all(m is not None for m in per_run):
            means[task, method] = {key: mean_std([m[key] for m in per_run]) for key in KEYS}
    rows = []
    for (task, method), stats in means.items():
        ref = means.get((task, reference))
        row = {"task": task, "method": method, "seeds": len(runs[task, method])}
        for key, (mean, std) in stats.items():
            row[key], row[f"{key}_std"] = mean, std
            row[f"{key}_ratio"] = mean / ref[key][0] if ref and ref[key][0] else math.nan
        rows.append(row)
    return rows


def update_size_markdown(rows: list[dict]) -> str:
    """The rows of :func:`update_size_rows` as a markdown table with its legend ("" when
    empty)."""
    if not rows:
        return ""
    head = "| task | method | seeds | " + " | ".join(
        f"{label} | × dense" for label in KEYS.values()) + " |\n"
    lines = "".join(
        f"| {r['task']} | {r['method']} | {r['seeds']} | " + " | ".join(
            f"{r[k]:.4f} ± {r[k + '_std']:.4f} | {r[k + '_ratio']:.2f}" for k in KEYS) + " |\n"
        for r in rows)
    return ("\nPolicy change per PPO update: each run's mean of SB3's `train/approx_kl` and "
            "`train/clip_fraction` over its updates (`progress.csv`), mean ± sample std "
            "over seeds (÷ n − 1), and its ratio to dense:\n\n" + head
            + "|---|---|---|" + "---|---|" * len(KEYS) + "\n" + lines)

"""One RL training run with its files: :class:`RLRun`, the typed spec behind ``sparse-train``
and every benchmark sweep's run (``sparse_agents.study.rl_runs``).

A run trains in this process and writes to its folder: ``config.json`` (the settings, what a
resumed sweep compares: :meth:`RLRun.differences`), ``evaluations.csv``, ``progress.csv``,
``model.zip`` and last, atomically, ``summary.json`` (it marks the run done).
"""

from __future__ import annotations

import ast
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse_agents.config import SparseConfig, check_choice
from sparse_agents.experiments.hyperparams import SOURCES, SPARSE_SETTINGS, hyperparameters
from sparse_agents.experiments.results import write_atomic
from sparse_agents.experiments.rl import (
    ALGOS,
    DEFAULT_ENV,
    evaluation_callback,
    last_fraction_score,
    make_agent,
    nonzero_params,
    optimizer_label,
    window_score,
    window_steps,
)
from sparse_agents.sb3 import SPARSE_DEFAULTS
from sparse_agents.updaters import DENSE, get_updater

__all__ = ["FLAG_OPTIONS", "RLRun", "initial_kept", "options_in_effect", "parse_overrides",
           "policy_flops", "recorded_hyperparams"]

#: sparse options ``sparse-train`` takes as flags; ``config.json`` records them at its top
#: level (``None``: the policy's or the table's)
FLAG_OPTIONS = ("delta_t", "drop_fraction", "t_end_fraction")
#: the settings a finished run must share with a sweep to be resumed (a dense run ignores
#: ``SPARSE_KEYS``); its hyperparameters and sparse options in effect are compared too
RESUME_KEYS = ("algo", "env", "updater", "timesteps", "seed", "eval_freq", "eval_episodes",
               "window_evals", "fused_adam", *FLAG_OPTIONS)
SPARSE_KEYS = ("sparsity", "distribution", "sparse_settings")


def recorded_hyperparams(algo: str, env_id: str, table: str, overrides: Mapping[str, Any],
                         sparse: bool = True) -> dict[str, str]:
    """The hyperparameters a run records in ``config.json``: the table's for the task and
    the run's kind (``sparse``: the table's sparse config; ``False`` for a dense run and for
    ``sparse_settings="defaults"``) with the overrides, as ``repr`` strings."""
    return {k: repr(v) for k, v in {**hyperparameters(algo, env_id, table, sparse),
                                    **overrides}.items()}


def options_in_effect(model) -> dict[str, str] | None:
    """A sparse policy's options in effect, defaults included, as ``repr`` strings (what
    ``config.json`` records as ``sparse_options``); ``None`` for a dense policy."""
    options = getattr(model.policy, "sparse_options", None)
    return None if options is None else {k: repr(v) for k, v in options.items()}


def initial_kept(model) -> dict[str, int] | None:
    """A freshly built sparse policy's kept weights per masked parameter (what
    ``config.json`` records as ``initial_kept``, so that a change in how the library
    allocates them shows when a sweep resumes); ``None`` for a dense policy."""
    topologies = getattr(model.policy, "topologies", None)
    if not topologies:
        return None
    return {f"{key}/{name}": int(mask.sum()) for key, topo in topologies.items()
            for name, mask in topo.masks.items()}


def policy_flops(policy) -> tuple[float, float]:
    """(sparse, dense) forward FLOPs per observation of an SB3 policy: a sparse
    policy's ``sparse/flops_forward`` metrics, or one deterministic forward of a zero
    observation of a dense policy (counted fully)."""
    if hasattr(policy, "sparse_metrics"):
        metrics = policy.sparse_metrics()
        return float(metrics["flops_forward"]), float(metrics["flops_dense_forward"])
    import numpy as np

    from sparse_agents.flops import flops

    def zeros(space):
        sub = getattr(space, "spaces", None)
        if isinstance(sub, dict):
            return {k: zeros(v) for k, v in sub.items()}
        return np.zeros(space.shape, dtype=space.dtype)

    obs, _ = policy.obs_to_tensor(zeros(policy.observation_space))
    report = flops(policy, inputs=obs, forward=lambda p, x: p(x, deterministic=True))
    return float(report.sparse), float(report.dense)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as a mapping (values are Python literals, else strings; a later
    key wins)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _literal(value.strip())
    return out


def _differ(recorded: Mapping, wanted: Mapping) -> list[str]:
    return [f"{k}: {recorded[k]} != {v}" for k, v in wanted.items()
            if k in recorded and recorded[k] != v]


def plot_curve(rows: list, path: Path, title: str) -> None:
    """The evaluation curve (mean +- the episodes' std) as a PNG."""
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


@dataclass(frozen=True)
class RLRun:
    """One (sparse) SB3 training run, every setting checked when it is built.

    ``overrides``: hyperparameters over table ``hyperparams`` (``sparse-train --hp``;
    policy keywords and sparse options included); ``options``: sparse options that beat
    the table's schedule (``--delta-t`` ...). The topology options among both are checked
    by :class:`~sparse_agents.SparseConfig`. ``eval_freq`` ``None``: ``timesteps // 10``;
    ``window_evals``: that many more evaluations spread over the last 10% of training
    (the protocol's score window, docs/protocol.md; the summary's ``window_score``).
    """

    algo: str = "ppo"
    env: str | None = None
    updater: str = "srigl"
    sparsity: float = 0.9
    distribution: str = "erk"
    seed: int = 0
    timesteps: int = 20_000
    hyperparams: str = "zoo"
    sparse_settings: str = "table"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    eval_freq: int | None = None
    eval_episodes: int = 10
    window_evals: int = 0
    fused_adam: bool = False
    condensed_rollout: bool = False
    n_envs: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the frozen dataclass's own way to normalise a field
        check_choice(self.algo, ALGOS, "algo")
        set_(self, "env", self.env or DEFAULT_ENV[self.algo])
        get_updater(self.updater, dense=True)
        # the topology options' checks are SparseConfig's (the dense run's too)
        SparseConfig(sparsity=self.sparsity, distribution=self.distribution)
        check_choice(self.hyperparams, SOURCES, "hyperparams")
        check_choice(self.sparse_settings, SPARSE_SETTINGS, "sparse_settings")
        if self.timesteps < 1:
            raise ValueError(f"--timesteps must be >= 1, got {self.timesteps}")
        if self.eval_episodes < 1 or (self.eval_freq is not None and self.eval_freq < 1):
            raise ValueError(f"eval_episodes and eval_freq must be >= 1, got "
                             f"{self.eval_episodes}, {self.eval_freq}")
        window_steps(self.timesteps, self.window_evals)  # checks window_evals
        set_(self, "overrides", dict(self.overrides))
        set_(self, "options", dict(self.options))
        unknown = set(self.options) - set(SPARSE_DEFAULTS)
        if unknown:
            raise ValueError(f"options must be sparse options, got {sorted(unknown)}")
        if self.sparse:
            SparseConfig.from_dict({
                **SparseConfig.pick(self.overrides), **SparseConfig.pick(self.options),
                "sparsity": self.sparsity, "updater": self.updater,
                "distribution": self.distribution, "seed": self.seed})
        elif set(self.overrides) & set(SPARSE_DEFAULTS):
            raise ValueError(f"sparse options {sorted(set(self.overrides) & set(SPARSE_DEFAULTS))}"
                             " given with --updater dense")

    @property
    def sparse(self) -> bool:
        """Whether the run trains a sparse policy."""
        return self.updater != DENSE

    @property
    def table_sparse(self) -> bool:
        """Whether the run takes its table's sparse config (sparse, ``sparse_settings``
        ``"table"``)."""
        return self.sparse and self.sparse_settings == "table"

    @property
    def every(self) -> int:
        """Timesteps between evaluations."""
        return self.eval_freq or max(1, self.timesteps // 10)

    def build(self, verbose: int = 0):
        """``(model, eval_env)`` of this run (nothing trained or written)."""
        return make_agent(self.algo, self.env, self.updater, self.sparsity, self.distribution,
                          self.seed, dict(self.overrides),
                          {"condensed_rollout": self.condensed_rollout, **self.options},
                          self.n_envs, self.device, verbose, self.fused_adam, self.hyperparams,
                          self.timesteps, self.sparse_settings)

    def recorded_hyperparams(self) -> dict[str, str]:
        """The hyperparameters ``config.json`` records (table and overrides)."""
        return recorded_hyperparams(self.algo, self.env, self.hyperparams, self.overrides,
                                    self.table_sparse)

    def settings(self) -> dict[str, Any]:
        """The settings ``config.json`` records at its top level (as ``sparse-train``'s
        arguments), without the hyperparameters and the folder."""
        return {"algo": self.algo, "env": self.env, "updater": self.updater,
                "sparsity": self.sparsity, "distribution": self.distribution,
                **{k: None for k in FLAG_OPTIONS}, **self.options,
                "condensed_rollout": self.condensed_rollout, "fused_adam": self.fused_adam,
                "timesteps": self.timesteps, "seed": self.seed, "eval_freq": self.eval_freq,
                "eval_episodes": self.eval_episodes, "window_evals": self.window_evals,
                "sparse_settings": self.sparse_settings,
                "hp": [f"{k}={v!r}" for k, v in self.overrides.items()],
                "n_envs": self.n_envs, "device": self.device}

    def identity(self) -> dict[str, Any]:
        """Canonical JSON-able description (a sweep's ``study.json``)."""
        return {**self.settings(), "hyperparams": self.hyperparams,
                "overrides": dict(self.overrides), "options": dict(self.options)}

    def differences(self, folder: str | Path) -> list[str]:
        """The settings (``key: stored != wanted``) in which the finished run in ``folder``
        differs from this one: the settings ``RESUME_KEYS`` (and ``SPARSE_KEYS`` for a
        sparse run), the table's name, every hyperparameter both record and, for a sparse
        run, the sparse options in effect (defaults included: a changed library default
        shows) and its initial kept weights per layer (a change in how the library
        allocates them shows). A setting the run did not record is not checked. Empty when
        ``folder`` holds no finished run or it matches."""
        folder = Path(folder)
        if not (folder / "summary.json").exists() or not (folder / "config.json").exists():
            return []
        stored = json.loads((folder / "config.json").read_text())
        wanted = self.settings()
        keys = RESUME_KEYS + (SPARSE_KEYS if self.sparse else ())
        diffs = [f"{k}: {stored[k]!r} != {wanted[k]!r}"
                 for k in keys if k in stored and stored[k] != wanted[k]]
        name = json.loads((folder / "summary.json").read_text()).get("hyperparams")
        if name is not None and name != self.hyperparams:
            diffs.append(f"hyperparams: {name!r} != {self.hyperparams!r}")
        diffs += _differ(stored.get("hyperparams") or {}, self.recorded_hyperparams())
        if self.sparse and stored.get("sparse_options"):
            model, eval_env = self.build()
            diffs += _differ(stored["sparse_options"], options_in_effect(model) or {})
            diffs += [f"initial kept weights of {d}" for d in _differ(
                stored.get("initial_kept") or {}, initial_kept(model) or {})]
            model.get_env().close()
            eval_env.close()
        return diffs

    def train(self, folder: str | Path, *, threads: int = 1, progress: bool = False,
              plot: bool = True, verbose: int = 0, tensorboard: bool = False,
              flops: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Train, evaluate, save into ``folder``; returns the summary (``summary.json``,
        written last). ``flops``: add the trained policy's forward FLOPs per observation
        and their ratio to dense; ``extra``: more entries for the summary."""
        import torch
        from stable_baselines3.common.logger import configure

        torch.set_num_threads(max(1, threads))
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        model, eval_env = self.build(verbose)
        formats = ["csv"] + (["stdout"] if verbose else []) + \
            (["tensorboard"] if tensorboard else [])
        model.set_logger(configure(str(out), formats))
        label = (f"{self.algo.upper()} {self.env} "
                 + ("dense" if not self.sparse
                    else f"{self.updater} {self.sparsity:.0%} {self.distribution}"))
        rows: list = []

        def echo(row):
            if progress:
                print(f"  eval @ {row[0]:>8d} steps: return {row[1]:8.1f} +- {row[2]:.1f}",
                      flush=True)

        callback = evaluation_callback(eval_env, self.every, self.eval_episodes, rows,
                                       out / "evaluations.csv", echo,
                                       window_steps(self.timesteps, self.window_evals))
        config = {**self.settings(), "out": str(out), "threads": threads,
                  "tensorboard": tensorboard, "verbose": verbose, "no_progress": not progress,
                  "no_plot": not plot, "hyperparams": self.recorded_hyperparams()}
        options = options_in_effect(model)
        if options is not None:
            config["sparse_options"] = options
            config["initial_kept"] = initial_kept(model)
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
        print(f"training {label} for {self.timesteps} timesteps -> {out}", flush=True)
        start, cpu = time.perf_counter(), time.process_time()
        model.learn(self.timesteps, callback=callback, progress_bar=progress)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        model.save(out / "model.zip")
        env = model.get_env()
        if hasattr(env, "obs_rms"):
            env.save(str(out / "vecnormalize.pkl"))
        if rows and plot:
            plot_curve(rows, out / "learning_curve.png", label)
        metrics = model.policy.sparse_metrics() if hasattr(model.policy, "sparse_metrics") \
            else {}
        summary = {
            "algo": self.algo, "env": self.env, "updater": self.updater,
            "sparsity": self.sparsity if self.sparse else 0.0,
            "distribution": self.distribution, "seed": self.seed, "timesteps": self.timesteps,
            "final_mean": rows[-1][1] if rows else math.nan,
            "final_std": rows[-1][2] if rows else math.nan,
            "best_mean": max(r[1] for r in rows) if rows else math.nan,
            "last10_mean": last_fraction_score(rows),
            "window_score": window_score(*zip(*[r[:2] for r in rows], strict=True),
                                         self.timesteps, min_evals=1) if rows else math.nan,
            "hyperparams": self.hyperparams,
            "wall_s": wall, "eval_s": callback.seconds, "train_s": wall - callback.seconds,
            "cpu_s": cpu,  # the process's CPU time (all threads), evaluations included
            "density": metrics.get("density", 1.0), "updates": metrics.get("updates", 0),
            "itop": metrics.get("itop", math.nan), "optimizer": optimizer_label(model.policy),
            "nonzero_params": nonzero_params(model.policy), **(extra or {}),
        }
        if flops:
            sparse, dense = policy_flops(model.policy)
            summary.update(flops_forward=sparse,
                           flops_ratio=sparse / dense if dense else math.nan)
        write_atomic(out / "summary.json", json.dumps(summary, indent=2))  # marks it done
        print(f"done in {wall:.1f}s ({wall - callback.seconds:.1f}s training): final return "
              f"{summary['final_mean']:.1f} +- {summary['final_std']:.1f}, density "
              f"{summary['density']:.3f}, {summary['updates']} topology updates; saved "
              f"{out / 'model.zip'}", flush=True)
        return summary

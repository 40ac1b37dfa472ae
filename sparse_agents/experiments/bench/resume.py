"""Resuming a benchmark sweep: is a finished ``sparse-train`` run the run its arguments
would make now? Used by ``scripts/bench_rl.py`` and ``scripts/bench_rl_defaults.py``
before anything trains, so a table never mixes two configurations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sparse_agents.cli.train_agent import (
    build_agent,
    build_parser,
    env_of,
    initial_kept,
    options_in_effect,
    parse_overrides,
    recorded_hyperparams,
    table_sparse,
)
from sparse_agents.updaters import DENSE


def _differ(recorded: dict, wanted: dict) -> list[str]:
    return [f"{k}: {recorded[k]} != {v}" for k, v in wanted.items()
            if k in recorded and recorded[k] != v]


def settings_differ(out: Path, argv: list[str], keys: Sequence[str]) -> list[str]:
    """The settings (``key: stored != wanted``) in which the finished run in ``out`` differs
    from ``sparse-train argv``: the arguments ``keys``, the hyperparameter table's name,
    every hyperparameter both record and, for a sparse run, the sparse options in effect
    (defaults included: a changed library default shows) and its initial kept weights per
    layer (a change in how the library allocates them shows). A setting the run did not
    record is not checked. Empty when ``out`` holds no finished run or it matches."""
    if not (out / "summary.json").exists() or not (out / "config.json").exists():
        return []
    stored = json.loads((out / "config.json").read_text())
    args = build_parser().parse_args(argv)
    args.env = env_of(args)  # config.json records the id in use
    wanted = vars(args)
    diffs = [f"{k}: {stored[k]!r} != {wanted[k]!r}"
             for k in keys if k in stored and stored[k] != wanted[k]]
    name = json.loads((out / "summary.json").read_text()).get("hyperparams")
    if name is not None and name != args.hyperparams:
        diffs.append(f"hyperparams: {name!r} != {args.hyperparams!r}")
    sparse = args.updater != DENSE
    diffs += _differ(stored.get("hyperparams") or {}, recorded_hyperparams(
        args.algo, args.env, args.hyperparams, parse_overrides(args.hp), table_sparse(args)))
    if sparse and stored.get("sparse_options"):
        model, eval_env = build_agent(args)
        diffs += _differ(stored["sparse_options"], options_in_effect(model) or {})
        kept = initial_kept(model) or {}
        diffs += [f"initial kept weights of {d}" for d in _differ(
            stored.get("initial_kept") or {}, kept)]
        model.get_env().close()
        eval_env.close()
    return diffs


def refuse_stale(runs: dict[str, list[str]], hint: str) -> None:
    """Raise naming every finished run (``out -> differences``) made with other settings."""
    stale = {out: d for out, d in runs.items() if d}
    if stale:
        lines = "\n".join(f"  {out}: {'; '.join(d)}" for out, d in stale.items())
        raise ValueError(f"--resume: {len(stale)} finished run(s) were made with other "
                         f"settings (stored != this sweep):\n{lines}\n{hint}")

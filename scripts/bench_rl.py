#!/usr/bin/env python
"""Benchmark sparse SB3 agents: dense vs static vs SET vs RigL vs SRigL at 90% sparsity.

    python scripts/bench_rl.py --out results/rl                       # full budget
    python scripts/bench_rl.py --quick --out /tmp/rl                  # smoke run
    python scripts/bench_rl.py --resume --out results/rl              # skip finished runs
    python scripts/bench_rl.py --dry-run --out results/rl             # what --resume skips
    python scripts/bench_rl.py --overhead --out results/rl            # train() per step
    python scripts/bench_rl.py --rollout --out results/rl             # condensed predict

Per-run results go to ``--out/runs/<task>-<updater>-s<seed>/``; with ``--resume``,
re-running resumes: finished runs are skipped. The runs are study jobs
(:mod:`sparse_agents.study`); the logic lives in :mod:`sparse_agents.experiments.bench.rl`
(one module per mode); ``--help`` for every option.
"""

from sparse_agents.experiments.bench.rl import main

if __name__ == "__main__":
    raise SystemExit(main())

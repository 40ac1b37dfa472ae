#!/usr/bin/env python
"""Continual-learning benchmark: per-task masks vs dense and sparse baselines.

    python scripts/bench_cl.py                       # the full table (~3 min, 2 cores)
    python scripts/bench_cl.py --seeds 0 --sparsities 0.9 --out runs/bench_cl

With ``--out``, writes results.json and table.md there (re-running overwrites them). The
logic lives in :mod:`sparse_agents.experiments.bench.cl`.
"""

from sparse_agents.experiments.bench.cl import main

if __name__ == "__main__":
    raise SystemExit(main())

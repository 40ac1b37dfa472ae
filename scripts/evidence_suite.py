#!/usr/bin/env python
"""The evidence suite: every sweep behind a claim, resumable, one command each.

    python scripts/evidence_suite.py --list                # claims and finished runs
    python scripts/evidence_suite.py ppo-hc-300k           # train what is left
    python scripts/evidence_suite.py --command width-sac-hc   # the bench_rl.py command

The sweeps are :data:`sparse_agents.experiments.bench.suite.SWEEPS`.
"""

from sparse_agents.experiments.bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Generate hyperparams/<algo>.yml from the installed rl_zoo3's own hyperparameter files:
every entry of every algorithm with sparse aliases, with the sparse policy alias and
``sparsity=0.9, updater='srigl'`` added to ``policy_kwargs``.

    python scripts/make_zoo_hyperparams.py            # (re)write hyperparams/
    python scripts/make_zoo_hyperparams.py --check    # exit 1 if a file differs

The logic lives in :mod:`sparse_agents.experiments.zoo_hyperparams`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse_agents.experiments.zoo_hyperparams import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

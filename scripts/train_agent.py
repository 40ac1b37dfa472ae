#!/usr/bin/env python
"""Train a (sparse) SB3 agent: ``python scripts/train_agent.py --help``.

The logic lives in :mod:`sparse_agents.cli.train_agent` (also the ``sparse-train``
console script).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse_agents.cli.train_agent import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

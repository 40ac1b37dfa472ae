#!/usr/bin/env python
"""Train one SB3 agent through a continual-RL task stream: ``--help``; the logic is
:mod:`sparse_agents.cli.rl_stream` (also the ``sparse-rl-stream`` console script)."""

import sys

from sparse_agents.cli.rl_stream import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

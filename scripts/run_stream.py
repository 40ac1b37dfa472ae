#!/usr/bin/env python
"""Train a continual-learning stream; see ``continual/cli.py`` and ``docs/continual.md``."""

from continual.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
